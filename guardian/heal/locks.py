"""LOCK_STALE: remove a lock no live process holds, holding it ourselves while we do."""

from __future__ import annotations

import fcntl
import os
import stat

from guardian.checks.locks import is_stale, probe
from guardian.heal.base import HealContext, failed, planned
from guardian.model import Finding, HealAction, Outcome
from guardian.probes import read_lock_holders


def heal_lock(h: HealContext, f: Finding) -> HealAction:
    path = h.ctx.data / f.subject
    if h.dry_run:
        return planned(f, f"remove stale lock {f.subject}")
    # Non-blocking, and a regular file only: a FIFO swapped in since the check must not hang the gate.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return failed(f, f"{f.subject} is no longer a regular file: not removed")
        try:
            # While we hold it, no flock user can take it; filelock re-checks the inode after its
            # own flock, so a contender that opened the old file starts over on the new one.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return failed(f, f"{f.subject} is held by a live process now: not removed")
        # Our own flock shows in /proc/locks too: only another process's hold makes it live.
        me = os.getpid()
        others = {k: [p for p in pids if p != me] for k, pids in read_lock_holders().items()}
        lock = probe(h.ctx, path, others)
        if lock is None or not is_stale(h.ctx, lock):
            return failed(f, f"{f.subject} is no longer stale: not removed")
        b = h.store.keep(path, "stale-lock", now=h.ctx.now)
        path.unlink()
    finally:
        os.close(fd)
    return HealAction(f, Outcome.HEALED, f"removed stale lock {f.subject}", stat="locks_cleared", backups=(b.id,))
