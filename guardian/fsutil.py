"""Careful file I/O: reads that never follow a symlink or block on a FIFO, atomic durable writes,
and the bot's own locks.

Every write guardian makes to the bot's tree goes through :func:`atomic_write` while holding
:func:`bot_lock` for that file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path


class NotRegularFile(OSError):
    """The path exists but is a symlink, directory, FIFO, socket or device."""


class TooLarge(OSError):
    """The file is larger than guardian is willing to read into memory."""


class LockBusy(OSError):
    """The bot holds the lock guarding a file: guardian does not write. ``holders`` are the pids
    seen holding it when guardian gave up (empty when they could not be seen)."""

    holders: tuple[int, ...] = ()


def lock_holders(lock_file: Path, *, soft: bool = False) -> tuple[int, ...]:
    """The pids holding ``lock_file``: its flock holders from /proc/locks, or with ``soft`` the pid a
    SoftFileLock marker names. Empty when none can be seen."""
    from guardian.probes import read_lock_holders, soft_lock_owner

    try:
        if soft:
            owner = soft_lock_owner(read_regular(lock_file, max_bytes=4096))
            return (owner[0],) if owner else ()
        st = os.stat(lock_file, follow_symlinks=False)
    except OSError:
        return ()
    me = os.getpid()
    return tuple(sorted(p for p in read_lock_holders().get((st.st_dev, st.st_ino), []) if p != me))


def describe_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: Path, *, max_bytes: int | None = None) -> bytes:
    """Return the bytes of the regular file at ``path``.

    Never follows a symlink (O_NOFOLLOW) and never blocks on a FIFO (O_NONBLOCK + fstat). If the
    file changes while it is read (an in-place writer), it is read again, so a caller never gets a
    mix of two versions from a writer that renames. Raise FileNotFoundError, PermissionError,
    NotRegularFile or TooLarge.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for _attempt in range(3):
        try:
            fd = os.open(path, flags)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise NotRegularFile(errno.ELOOP, "is a symlink", str(path)) from None
            if e.errno == errno.ENXIO:  # a FIFO or socket with no writer
                raise NotRegularFile(errno.ENXIO, "is a FIFO or socket", str(path)) from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFile(errno.EINVAL, f"is {describe_kind(st.st_mode)}", str(path))
            if max_bytes is not None and st.st_size > max_bytes:
                raise TooLarge(errno.EFBIG, f"is {st.st_size} bytes, over the limit of {max_bytes}", str(path))
            chunks = []
            # The whole file in one read, then small reads to find its end: a second buffer of the
            # file's size for that costs ~2 ms at 4 MB.
            want = st.st_size + 1
            while chunk := os.read(fd, want):
                chunks.append(chunk)
                want = 1 << 16
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns) and len(data) == st.st_size:
            return data
    return data  # still changing after three reads: hand back the last one; its parse will judge it


def lstat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, like: os.stat_result | None = None, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Temp file in the same directory, fsync, rename over the target, fsync of the directory: a crash
    at any point leaves either the old file or the new one, never a mix. Refuses to write through a
    symlink. The new file takes the mode and owner of ``like`` (by default the file it replaces;
    0644 for a new one). ``durable=False`` skips the fsyncs, for files guardian rewrites every few
    seconds (status, metrics) where a flush stalled behind the bot's writes would only add lag.
    """
    old = lstat_or_none(path)
    if old is not None and not stat.S_ISREG(old.st_mode):
        raise NotRegularFile(errno.EINVAL, f"is {describe_kind(old.st_mode)}; not writing through it", str(path))
    like = like or old
    tmp = path.with_name(f".{path.name}.guardian-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if like is not None:
                os.fchmod(fd, stat.S_IMODE(like.st_mode))
                if os.geteuid() == 0 and (like.st_uid, like.st_gid) != (0, 0):
                    os.fchown(fd, like.st_uid, like.st_gid)
            else:
                os.fchmod(fd, 0o644)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def lock_path(path: Path) -> Path:
    """The bot's lock for ``path``: ``<file>.lock``, filelock's convention."""
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def bot_lock(path: Path, *, timeout: float, soft: bool = False) -> Iterator[None]:
    """Hold the bot's own lock for ``path``, the way the bot takes it: flock (FileLock), or with ``soft``
    the marker file itself (SoftFileLock, removed on release). Raise LockBusy if the bot holds it past
    ``timeout``."""
    import filelock  # costs ~40 ms to import; only the writing paths need it

    cls = filelock.SoftFileLock if soft else filelock.FileLock
    lock = cls(str(lock_path(path)), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        holders = lock_holders(lock_path(path), soft=soft)
        who = f"pid {', '.join(map(str, holders))}" if holders else "another process"
        busy = LockBusy(errno.EAGAIN, f"held by {who} for over {timeout:g}s", str(lock_path(path)))
        busy.holders = holders
        raise busy from None
    try:
        yield
    finally:
        lock.release()


def read_small_text(path: Path, *, max_bytes: int) -> str:
    """The UTF-8 text of the small regular file at ``path`` (a name file, a lock of pins).

    As :func:`read_regular`, so a FIFO, a symlink (to ``/dev/zero`` or anywhere) or a huge file
    planted there by whoever can write the directory is refused, never followed or read whole.
    Raise what it raises, or UnicodeDecodeError.
    """
    return read_regular(path, max_bytes=max_bytes).decode("utf-8")


def unreadable_reason(e: OSError | UnicodeDecodeError) -> str:
    """Why a read failed, as an operator reads it: ``is a FIFO``, ``is a symlink``, ``permission denied``."""
    if isinstance(e, UnicodeDecodeError):
        return "is not UTF-8 text"
    if isinstance(e, NotRegularFile | TooLarge) and e.strerror:
        return e.strerror
    if isinstance(e, PermissionError):
        return "permission denied"
    return e.strerror.lower() if e.strerror else str(e)


@contextlib.contextmanager
def pinned_dir(path: Path) -> Iterator[tuple[Path, Path]]:
    """Open the directory at ``path`` once; yield a path that reaches it through that open fd, and
    where it really is.

    Every name under the first path is looked up in the directory that was opened, whatever is
    renamed or symlinked into its place meanwhile: checking where a directory lies and then writing
    in it by name would let whoever can write a parent swap a symlink in between. Raise OSError
    (NotADirectoryError, FileNotFoundError, PermissionError) if it cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield Path(f"/proc/self/fd/{fd}"), Path(os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)


def stat_regular(path: Path) -> os.stat_result:
    """The stat of the regular file at ``path``, opened as :func:`read_regular` opens it (a symlink is
    refused, a FIFO does not block), for a reader that must open it by name itself (SQLite). Raise
    FileNotFoundError, PermissionError or NotRegularFile."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, "is a symlink", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(errno.EINVAL, f"is {describe_kind(st.st_mode)}", str(path))
    return st
