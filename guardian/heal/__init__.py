"""Self-heal: one remedy per recoverable finding code, then the checks again to verify.

To add a remedy: write ``heal/<name>.py`` with ``(HealContext, Finding) -> HealAction`` and list it
in REMEDIES (the order is the order remedies run in). Dangerous findings have no remedy, by design.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from guardian.backups import BackupStore
from guardian.checks import run_checks
from guardian.config import Config
from guardian.context import Context
from guardian.fsutil import LockBusy
from guardian.heal.base import HealContext, Remedy, failed, refused
from guardian.model import Finding, HealAction, Outcome, Report

# code -> "module:function". Orphans first (an orphan bot may be writing the files), then the tree's
# shape, then its files. Remedies are imported when a finding needs one, so a healthy gate loads none.
REMEDIES: dict[str, str] = {
    "ORPHAN_PROCESS": "guardian.heal.orphans:heal_orphan",
    "DIRECTORY_MISSING": "guardian.heal.directories:heal_directory",
    "TEMP_FILE_LEFTOVER": "guardian.heal.temp_files:heal_temp_file",
    "LOCK_STALE": "guardian.heal.locks:heal_lock",
    "STATE_FILE_MISSING": "guardian.heal.state_files:heal_state_file",
    "STATE_FILE_EMPTY": "guardian.heal.state_files:heal_state_file",
    "STATE_FILE_MALFORMED": "guardian.heal.state_files:heal_state_file",
    "STATE_FILE_CORRUPT": "guardian.heal.state_files:heal_state_file",
    "HEARTBEAT_STALE": "guardian.heal.heartbeats:heal_heartbeat",
}
_ORDER = {code: i for i, code in enumerate(REMEDIES)}
STATS = (
    "files_created",
    "files_repaired",
    "directories_created",
    "heartbeats_reset",
    "locks_cleared",
    "orphans_killed",
)


@dataclass(frozen=True)
class HealResult:
    before: Report
    after: Report  # the checks re-run after healing (a dry run: `before`), plus refusals' findings
    actions: tuple[HealAction, ...]
    dry_run: bool

    @property
    def critical(self) -> list[Finding]:
        return self.after.critical()

    @property
    def failed(self) -> list[HealAction]:
        return [a for a in self.actions if a.outcome is Outcome.FAILED]

    @property
    def success(self) -> bool:
        return not self.failed and not self.critical

    def to_json(self) -> dict[str, Any]:
        """The seeds' result object, plus the detail an operator needs."""
        counts = Counter(a.stat for a in self.actions if a.outcome is Outcome.HEALED and a.stat)
        return {
            "success": self.success,
            "dry_run": self.dry_run,
            "healed": [
                f"{a.finding.code} {a.finding.subject}: {a.detail}" for a in self.actions if a.outcome is Outcome.HEALED
            ],
            "failed": [f"{a.finding.code} {a.finding.subject}: {a.detail}" for a in self.failed],
            "refused": [
                f"{a.finding.code} {a.finding.subject}: {a.detail}"
                for a in self.actions
                if a.outcome is Outcome.REFUSED
            ],
            "planned": [
                f"{a.finding.code} {a.finding.subject}: {a.detail}"
                for a in self.actions
                if a.outcome is Outcome.PLANNED
            ],
            "critical": [f"{f.code} {f.subject}: {f.message}" for f in self.critical],
            "stats": {k: counts.get(k, 0) for k in STATS},
            "score_before": self.before.score,
            "score_after": self.after.score,
            "actions": [a.to_json() for a in self.actions],
            "findings": [f.to_json() for f in self.after.findings],
        }


def remedy_for(code: str) -> Remedy:
    module, func = REMEDIES[code].split(":")
    remedy: Remedy = getattr(importlib.import_module(module), func)
    return remedy


def _slot_guard(ctx: Context, report: Report) -> str | None:
    """Why nothing may be healed inside the data root: it is on another filesystem than the bot ran
    on (an unmounted volume: a layout made there would pass for a new bot), or the slot holding it
    is not the deployed one."""
    if any(f.code == "DATA_ROOT_CHANGED" for f in report.findings):
        return "DATA_ROOT_CHANGED: nothing is written in a data root on another filesystem than the bot's"
    if not ctx.data_in_slot:
        return None
    bad = [f for f in report.findings if f.code in ("SLOT_INVALID", "SLOT_MISMATCH")]
    return f"{bad[0].code}: nothing is healed inside a slot that is not the deployed bot's" if bad else None


def _escapes(ctx: Context, f: Finding) -> str | None:
    """Why a remedy for ``f`` would write outside the bot's tree, if it would: the directory it writes
    in, or the backups directory, is reached through a symlink out of the home and the data root."""
    rel = f.context.get("file") if f.code == "HEARTBEAT_STALE" else f.subject
    if f.code == "ORPHAN_PROCESS" or not isinstance(rel, str):
        return None
    dirs = [(ctx.data / rel).parent, ctx.backups_dir]
    if f.code.startswith("STATE_FILE_"):
        dirs.append(ctx.stop_path.parent)  # a salvage that may lose closed positions sets the stop
    return next((why for d in dirs if (why := ctx.leads_outside(d))), None)


class Budget(Protocol):
    """Limits how often one remedy may run on one subject (the alert engine keeps the count)."""

    def heal_allowed(self, code: str, subject: str) -> bool: ...

    def note_heal(self, code: str, subject: str) -> None: ...


def heal(
    cfg: Config,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    before: Report | None = None,
    budget: Budget | None = None,
) -> HealResult:
    """Heal every recoverable finding that is safe to heal, then verify by checking again."""
    ctx = Context(cfg, now=now)
    before = before or run_checks(ctx)
    h = HealContext(ctx, BackupStore(ctx.data, ctx.backups_dir), dry_run)
    guard = _slot_guard(ctx, before)
    positions = ctx.rel(ctx.positions_path)

    def rank(f: Finding) -> tuple[int, bool]:
        # The portfolio's repair reads the positions file: heal that one first, whatever ails each.
        if f.code.startswith("STATE_FILE_"):
            return (_ORDER["STATE_FILE_MISSING"], f.subject != positions)
        return (_ORDER[f.code], False)

    def attempt(f: Finding) -> HealAction:
        if guard and f.code != "ORPHAN_PROCESS":
            return refused(f, guard)
        if not cfg.heal.enabled:
            return refused(f, "self-heal is disabled (heal.enabled: false)")
        if escape := _escapes(ctx, f):
            return refused(f, escape)
        if budget is not None and not dry_run and not budget.heal_allowed(f.code, f.subject):
            from guardian.alerts.engine import heal_loop_finding

            h.extra_findings.append(heal_loop_finding(f.code, f.subject, cfg.alerts))
            return refused(f, "heal budget spent: it keeps coming back (HEAL_LOOP)")
        try:
            return remedy_for(f.code)(h, f)
        except LockBusy as e:
            return failed(f, f"the bot's lock {_where(ctx, e)} is {e.strerror}: not written")
        except OSError as e:
            return failed(f, os_error_text(ctx, e))
        except Exception as e:  # a bug in one remedy: the others still run, and the verdict names it
            return failed(f, f"the remedy raised {type(e).__name__}: {e}")

    todo = sorted((f for f in before.findings if f.recoverable and f.code in REMEDIES), key=rank)
    actions = [attempt(f) for f in todo if f.code == "ORPHAN_PROCESS"]
    if any(a.outcome is Outcome.HEALED and a.stat == "orphans_killed" for a in actions):
        # A young bot process hides stale heartbeats (its start-up grace): with the orphans ended
        # they show, and are healed now, not by the next heal.
        from guardian.checks import heartbeats

        seen = {f.key for f in todo}
        todo += [f for f in heartbeats.check(Context(cfg, now=ctx.now)) if f.recoverable and f.key not in seen]
    actions += [attempt(f) for f in todo if f.code != "ORPHAN_PROCESS"]
    if dry_run or not any(a.outcome is Outcome.HEALED for a in actions):
        # Nothing was changed: the first look stands (and a healthy gate reads the state once).
        after = dataclasses.replace(before, findings=before.findings + tuple(h.extra_findings))
        return HealResult(before, after, tuple(actions), dry_run)
    # Verify: a fresh look at the tree (same clock reading), and a remedy whose finding is still
    # there did not work, whatever it reported.
    rechecked = run_checks(Context(cfg, now=ctx.now))
    still = {f.key for f in rechecked.findings}
    verified = [
        HealAction(
            a.finding, Outcome.FAILED, f"{a.detail}; but the finding is still there after healing", a.stat, a.backups
        )
        if a.outcome is Outcome.HEALED and a.finding.key in still
        else a
        for a in actions
    ]
    if budget is not None:
        for a in verified:
            if a.outcome in (Outcome.HEALED, Outcome.FAILED):
                budget.note_heal(a.finding.code, a.finding.subject)
    after = dataclasses.replace(rechecked, findings=rechecked.findings + tuple(h.extra_findings))
    return HealResult(before, after, tuple(verified), dry_run)


def _where(ctx: Context, e: OSError) -> str:
    return ctx.rel(Path(e.filename)) if isinstance(e.filename, str) else "?"


def os_error_text(ctx: Context, e: OSError) -> str:
    """An OS error as the operator needs it: ``no space left on device (ENOSPC): logs/positions_futures.json``."""
    name = errno.errorcode.get(e.errno or 0, "")
    what = (e.strerror or str(e)).lower() if e.strerror else str(e)
    return f"{what}{f' ({name})' if name else ''}{f': {_where(ctx, e)}' if e.filename else ''}"
