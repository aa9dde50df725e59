"""The bot's ``<file>.lock`` files: stale ones (no live holder) and ones held too long."""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from guardian.checks.base import ago
from guardian.context import Context
from guardian.fsutil import read_regular
from guardian.model import Finding, Level
from guardian.probes import pid_alive, read_lock_holders, soft_lock_owner

MARKER_MAX = 4096  # a soft lock's marker is a pid and a host name; a larger lock file is not judged
SETTLING = 2.0  # seconds a new, still empty lock file is looked at again


@dataclass(frozen=True)
class LockState:
    path: Path
    age: float
    holders: tuple[int, ...]  # live pids holding it (kernel lock, or a live soft-lock owner)
    soft_owner: int | None  # pid named inside a soft lock marker


def lock_files(ctx: Context) -> list[Path]:
    dirs = {
        ctx.data,
        ctx.positions_path.parent,
        ctx.portfolio_path.parent,
        ctx.wal_path.parent,
        ctx.stop_path.parent,
        ctx.heartbeats_dir,
    }
    found: list[Path] = []
    for d in sorted(dirs):
        try:
            found += [
                Path(e.path) for e in os.scandir(d) if e.name.endswith(".lock") and e.is_file(follow_symlinks=False)
            ]
        except OSError:
            continue
    return found


def probe(ctx: Context, path: Path, holders_map: dict[tuple[int, int], list[int]]) -> LockState | None:
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            return None
        # The hardened reader: the file may have been swapped for a FIFO since the lstat, or grown huge.
        content = read_regular(path, max_bytes=MARKER_MAX)[:256] if st.st_size else b""
    except OSError:
        return None
    holders = [p for p in holders_map.get((st.st_dev, st.st_ino), []) if pid_alive(p)]
    owner = soft_lock_owner(content)
    soft_pid = None
    if owner is not None:
        soft_pid, host = owner
        if host == socket.gethostname() and pid_alive(soft_pid):
            holders.append(soft_pid)
    return LockState(path, ctx.now.timestamp() - st.st_mtime, tuple(sorted(set(holders))), soft_pid)


def is_stale(ctx: Context, lock: LockState) -> bool:
    """Stale: older than its threshold, no live holder, and it would block the bot (a soft lock)."""
    if lock.holders or lock.age <= ctx.cfg.thresholds.lock_stale:
        return False
    return lock.soft_owner is not None or ctx.cfg.bot.lock_style == "soft"


def check(ctx: Context) -> Iterator[Finding]:
    th = ctx.cfg.thresholds
    for path in lock_files(ctx):
        lock = probe(ctx, path, ctx.lock_holders)
        if lock is None:
            continue
        subject = ctx.rel(path)
        # The daemon watches the live holders: a holder's death can make a lock stale with no file event.
        ctx.memo.setdefault("lock_pids", set()).update(lock.holders)
        if not lock.holders and lock.soft_owner is None and lock.age < SETTLING:
            # Just created and not yet holding its owner's pid (a soft lock writes it after creating the
            # file and may keep it open, so no close event follows): the daemon looks again shortly.
            ctx.memo["locks_settling"] = True
        if is_stale(ctx, lock):
            owner = f" (owner pid {lock.soft_owner} is dead)" if lock.soft_owner else ""
            yield Finding(
                "LOCK_STALE",
                Level.MEDIUM,
                subject,
                f"{subject} is {ago(lock.age)} old and no live process holds it{owner}",
                recoverable=True,
                context={"age_s": round(lock.age)},
            )
        elif lock.holders and _held_too_long(ctx, path, lock):
            yield Finding(
                "LOCK_CONTENDED",
                Level.HIGH,
                subject,
                f"{subject} is held by pid {', '.join(map(str, lock.holders))} and its file has not changed for "
                f"over {ago(th.lock_held_max)}: the holder may be stuck",
                action="inspect the holder (py-spy dump --pid PID); do not remove a lock a live process holds",
                context={"pids": ",".join(map(str, lock.holders))},
            )


def _held_too_long(ctx: Context, path: Path, lock: LockState) -> bool:
    """A one-shot check cannot see when a lock was taken; it asks that the lock is held now, still
    held by the same process a moment later, and that neither it nor the file it guards has changed
    for longer than the threshold."""
    limit = ctx.cfg.thresholds.lock_held_max
    guarded = path.with_name(path.name.removesuffix(".lock"))
    try:
        changed = max(path.stat().st_mtime, guarded.stat().st_mtime if guarded.exists() else 0.0)
    except OSError:
        return False
    if ctx.now.timestamp() - changed <= limit:
        return False
    time.sleep(0.2)
    again = probe(ctx, path, read_lock_holders())
    return again is not None and bool(set(again.holders) & set(lock.holders))
