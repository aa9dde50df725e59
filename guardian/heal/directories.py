"""DIRECTORY_MISSING: create it like the data root (mode, and owner when guardian is root)."""

from __future__ import annotations

import os
import stat

from guardian.heal.base import HealContext, planned
from guardian.model import Finding, HealAction, Outcome


def heal_directory(h: HealContext, f: Finding) -> HealAction:
    path = h.ctx.data / f.subject
    if h.dry_run:
        return planned(f, f"create directory {f.subject}")
    root = h.ctx.data.stat()
    missing = [p for p in (path, *path.parents) if not p.exists() and p.is_relative_to(h.ctx.data)]
    path.mkdir(mode=stat.S_IMODE(root.st_mode), parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for p in missing:
            os.chown(p, root.st_uid, root.st_gid)
    return HealAction(f, Outcome.HEALED, f"created directory {f.subject}", stat="directories_created")
