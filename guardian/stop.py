"""The bot's kill switch, ``state/emergency_stop.json``: set and cleared under the bot's lock, the
file it replaces kept first. The operator sets it (`guardian emergency-stop`); guardian sets it
itself when a repair had to leave something unknown that only an operator can confirm."""

from __future__ import annotations

import errno
from datetime import datetime
from typing import Any

from guardian.alerts import iso
from guardian.backups import Backup, BackupStore
from guardian.context import Context
from guardian.fsutil import atomic_write, bot_lock
from guardian.state import encode


def write_stop(ctx: Context, doc: dict[str, Any], *, reason: str, now: datetime) -> Backup | None:
    """Replace the kill switch with ``doc``; return the backup of what it replaced. Raise OSError
    (LockBusy when the bot holds its lock past heal.lock_timeout; EPERM when its directory leads out
    of the bot's tree) with nothing changed."""
    if why := ctx.leads_outside(ctx.stop_path.parent):
        raise PermissionError(errno.EPERM, why, str(ctx.stop_path))
    ctx.stop_path.parent.mkdir(parents=True, exist_ok=True)
    with bot_lock(ctx.stop_path, timeout=ctx.cfg.heal.lock_timeout, soft=ctx.cfg.bot.lock_style == "soft"):
        kept = (
            BackupStore(ctx.data, ctx.backups_dir).keep(ctx.stop_path, reason, now=now)
            if ctx.stop_path.exists()
            else None
        )
        atomic_write(ctx.stop_path, encode(doc))
    return kept


def set_stop(ctx: Context, reason: str, *, by: str, now: datetime) -> Backup | None:
    return write_stop(ctx, {"active": True, "reason": reason, "since": iso(now), "set_by": by}, reason="stop", now=now)


def clear_stop(ctx: Context, approver: str, *, now: datetime) -> Backup | None:
    doc = {"active": False, "cleared_by": approver, "cleared_at": iso(now)}
    return write_stop(ctx, doc, reason="clear-stop", now=now)
