"""TEMP_FILE_LEFTOVER: move it into the backups (kept, never deleted)."""

from __future__ import annotations

from guardian.heal.base import HealContext, planned
from guardian.model import Finding, HealAction, Outcome


def heal_temp_file(h: HealContext, f: Finding) -> HealAction:
    path = h.ctx.data / f.subject
    if h.dry_run:
        return planned(f, f"move {f.subject} into {h.ctx.rel(h.store.dir)}")
    b = h.store.keep(path, "temp-leftover", now=h.ctx.now, move=True)
    return HealAction(f, Outcome.HEALED, f"moved {f.subject} to backups/{b.id}", stat="files_repaired", backups=(b.id,))
