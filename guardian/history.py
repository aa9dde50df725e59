"""guardian's memory of this bot: the gate's decisions and the data root it allowed to start on.

``gate.json`` in guardian's state directory counts every decision (for the daemon's metrics) and
records, at each allowed start, the identity of the data root's filesystem. Both are evidence: a
bot that was allowed to start before has had a life, so its state files going missing is never a
cold start; a data root that now lives on another filesystem is an unmounted volume, never a new
bot. The file is decoded typed; one that cannot be read is kept aside and its history counted as
*lost* (which proves nothing) until an operator accepts the data root again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from datetime import datetime
from pathlib import Path

import msgspec

from guardian.config import Config
from guardian.fsutil import LockBusy, atomic_write, read_regular

GATE_FILE = "gate.json"


def state_dir(cfg: Config) -> Path:
    """``$STATE_DIRECTORY`` where systemd sets it (StateDirectory=), else the config's value."""
    env = os.environ.get("STATE_DIRECTORY")
    return Path(env.split(":")[0]) if env else cfg.guardian.state_dir


class DataRootId(msgspec.Struct, frozen=True):
    """Which filesystem a data root lives on. ``fsid`` (statfs's f_fsid: derived from the filesystem's
    UUID on ext4 and btrfs, so stable across reboots) where the kernel gives one, else ``dev``."""

    path: str
    dev: int
    fsid: int

    def same_filesystem(self, other: DataRootId) -> bool:
        if self.fsid and other.fsid:
            return self.fsid == other.fsid
        return self.dev == other.dev


class LastDecision(msgspec.Struct):
    allowed: bool
    mode: str
    reason: str
    ts: str
    t: float


class GateHistory(msgspec.Struct):
    allowed: int = 0
    refused: int = 0
    last: LastDecision | None = None
    last_allowed_t: float | None = None
    last_refused_t: float | None = None
    data_root: DataRootId | None = None  # at the last allowed start
    # The file could not be read once: earlier starts (and the data root they ran on) are unknown.
    lost: str | None = None
    accepted_by: str | None = None  # who last accepted the data root (`guardian accept-data-root`)


class HistoryUnreadable(Exception):
    """gate.json exists but cannot be read as a GateHistory."""


def data_root_identity(path: Path) -> DataRootId:
    """Raise OSError when the data root cannot be stat'ed."""
    st = os.stat(path)
    vfs = os.statvfs(path)
    return DataRootId(str(path), st.st_dev, vfs.f_fsid)


def read_history(directory: Path) -> GateHistory:
    """The gate's history; an empty one when there is none. Raise HistoryUnreadable for a file that
    exists but is not a regular file, cannot be read, or holds something else than a history."""
    try:
        raw = read_regular(directory / GATE_FILE, max_bytes=1 << 20)
    except FileNotFoundError:
        return GateHistory()
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            return GateHistory()
        raise HistoryUnreadable(f"{directory / GATE_FILE}: {e.strerror or e}") from None
    try:
        history = msgspec.json.decode(raw, type=GateHistory)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError) as e:
        raise HistoryUnreadable(f"{directory / GATE_FILE} is not a gate history ({e})") from None
    if history.allowed < 0 or history.refused < 0:
        raise HistoryUnreadable(f"{directory / GATE_FILE} holds a negative count")
    return history


def data_root_moved(cfg: Config, data: Path) -> bool:
    """True when ``data`` is on another filesystem than at the last allowed start (an unmounted
    volume's bare mount point): nothing guardian writes may land there. False when unknown."""
    try:
        before = read_history(state_dir(cfg)).data_root
        return before is not None and not before.same_filesystem(data_root_identity(data))
    except (HistoryUnreadable, OSError):
        return False


def read_decisions(directory: Path) -> GateHistory:
    """The history for the metrics: an empty one where it cannot be read (the counts restart)."""
    try:
        return read_history(directory)
    except HistoryUnreadable:
        return GateHistory()


def _locked(directory: Path) -> int:
    """An fd holding gate.json's flock; bounded: a stuck holder must not hang the bot's ExecStartPre=.
    Raise OSError (LockBusy when it is held for over 5 s)."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / f"{GATE_FILE}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + 5.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise LockBusy(errno.EAGAIN, "held by another process for over 5s", str(lock)) from None
            time.sleep(0.01)


def _load_for_update(directory: Path, now: datetime) -> GateHistory:
    """The history to update, under the lock. An unreadable one is kept aside (never dropped) and its
    loss recorded, so the next gate cannot take its absence for a new bot."""
    try:
        return read_history(directory)
    except HistoryUnreadable as e:
        path = directory / GATE_FILE
        aside = directory / f"{GATE_FILE}.unreadable-{now.strftime('%Y%m%dT%H%M%S%fZ')}"
        # A second name for the same bytes: the atomic rewrite then replaces only the first. Raise
        # OSError (a directory in its place, say) and nothing is changed.
        os.link(path, aside, follow_symlinks=False)
        return GateHistory(lost=f"{e}; kept as {aside.name}")


def record_decision(
    directory: Path, *, allowed: bool, mode: str, reason: str, now: datetime, data_root: DataRootId | None = None
) -> None:
    """Count one decision in ``<directory>/gate.json``, with the last one, when each kind was last
    made, and (allowed, with ``data_root``) the filesystem the bot was allowed to start on.

    Read, bumped and rewritten atomically under an flock that every gate takes: two gates never
    lose a count. Raise OSError (LockBusy when the lock is held for over 5 s): the caller warns,
    the gate's decision stands.
    """
    fd = _locked(directory)
    try:
        h = _load_for_update(directory, now)
        t = now.timestamp()
        if allowed:
            h.allowed += 1
            h.last_allowed_t = t
            if data_root is not None:
                h.data_root = data_root
        else:
            h.refused += 1
            h.last_refused_t = t
        h.last = LastDecision(allowed, mode, reason, now.isoformat(), t)
        atomic_write(directory / GATE_FILE, msgspec.json.format(msgspec.json.encode(h), indent=1) + b"\n")
    finally:
        os.close(fd)  # releases the flock


def accept_data_root(directory: Path, *, identity: DataRootId, by: str, now: datetime) -> GateHistory:
    """Record ``identity`` as this bot's data root, on an operator's word: after a volume really moved,
    or after the history was lost. Return the history as it was before."""
    fd = _locked(directory)
    try:
        before = _load_for_update(directory, now)
        after = msgspec.structs.replace(before, data_root=identity, lost=None, accepted_by=f"{by} at {now.isoformat()}")
        atomic_write(directory / GATE_FILE, msgspec.json.format(msgspec.json.encode(after), indent=1) + b"\n")
        return before
    finally:
        os.close(fd)
