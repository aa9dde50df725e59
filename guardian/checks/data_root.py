"""The data root is the one the bot was allowed to start on: an unmounted volume leaves its mount
point behind, an empty directory on another filesystem, where a fresh layout must never pass for a
new bot. Proves DATA_ROOT."""

from __future__ import annotations

from collections.abc import Iterator

from guardian.checks.base import unknown
from guardian.context import Context
from guardian.history import HistoryUnreadable, data_root_identity, read_history, state_dir
from guardian.model import Fact, Finding, Level, Proof

_ACCEPT = "mount the bot's data volume; if the data root really moved, `guardian accept-data-root --by NAME`"


def check(ctx: Context) -> Iterator[Finding | Proof]:
    subject = ctx.rel(ctx.data)
    try:
        now = data_root_identity(ctx.data)
    except OSError as e:
        yield unknown(subject, f"cannot stat the data root {ctx.data}: {e.strerror or e}", concern=Fact.DATA_ROOT)
        return
    directory = state_dir(ctx.cfg)
    try:
        history = read_history(directory)
    except HistoryUnreadable as e:
        yield unknown(
            "gate history",
            f"guardian's gate history cannot be read ({e}): whether {ctx.data} is the data root the bot ran on is unknown",
            Level.HIGH,
            concern=Fact.DATA_ROOT,
            action=_ACCEPT,
        )
        return
    if history.lost:
        yield unknown(
            "gate history",
            f"guardian's gate history was lost ({history.lost}): whether {ctx.data} is the data root the bot ran on "
            "is unknown until an operator accepts it",
            Level.HIGH,
            concern=Fact.DATA_ROOT,
            action=_ACCEPT,
        )
        return
    before = history.data_root
    if before is None:
        yield Proof(Fact.DATA_ROOT, f"{ctx.data}: no earlier start recorded (recorded at the first allowed start)")
    elif not before.same_filesystem(now):
        moved = f" (it was {before.path})" if before.path != now.path else ""
        yield Finding(
            "DATA_ROOT_CHANGED",
            Level.CRITICAL,
            subject,
            f"the data root {ctx.data}{moved} is on another filesystem than at the last allowed start "
            f"(device {before.dev:#x}, fsid {before.fsid:#x}; now {now.dev:#x}, {now.fsid:#x}): "
            "an unmounted volume, never a new bot",
            action=_ACCEPT,
            context={"was_dev": before.dev, "was_fsid": before.fsid, "dev": now.dev, "fsid": now.fsid},
            concern=Fact.DATA_ROOT,
        )
    else:
        yield Proof(Fact.DATA_ROOT, f"{ctx.data} is on the filesystem of the last allowed start")
