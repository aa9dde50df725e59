"""Real filesystems for tests: a small tmpfs, a full one, one out of inodes, a read-only bind mount,
and chattr's immutable and append-only flags.

Each is a context manager that undoes what it did on exit (unmount, ``umount -l`` as the last
resort; ``chattr -i``/``-a``; the ballast removed), so nesting them reads as the setup::

    with tmpfs(tree.data / "logs", size_kb=4096), fill(tree.data / "logs"):
        ...

or, through the ``filesystems`` fixture, undone at the test's teardown (last first), which then also
fails the test if anything is still mounted under its tmp_path::

    def test_x(tree: BotTree, filesystems: Filesystems) -> None:
        logs = filesystems.tmpfs(tree.data / "logs", size_kb=4096)
        filesystems.fill(logs)

They need root (CAP_SYS_ADMIN for mounts, CAP_LINUX_IMMUTABLE for chattr): without it, or when the
kernel refuses, the test is skipped with the reason. Paths are resolved first (mount(8) does), so a
path through the bot's ``trading-bot-current`` link works.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import pytest

__all__ = [
    "Filesystems",
    "append_only",
    "exhaust_inodes",
    "filesystems",
    "fill",
    "immutable",
    "mount_points_under",
    "ramfs",
    "readonly_bind",
    "tmpfs",
]

# fill() and exhaust_inodes() refuse a filesystem with more room than this: they are for the small
# tmpfs mounted here, never the host's disk, which other work shares.
MAX_FILL_BYTES = 256 << 20
MAX_FILL_INODES = 100_000
_CHUNK = 1 << 20
_OCTAL = re.compile(r"\\([0-7]{3})")


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (running as uid {os.geteuid()})")


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def _setup(args: list[str], what: str) -> None:
    """Run a setup command; the host refusing it (no CAP_SYS_ADMIN, a filesystem without the
    feature) skips the test rather than failing it."""
    r = _run(args)
    if r.returncode != 0:
        pytest.skip(f"{what}: `{' '.join(args)}` failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")


def _unmount(path: Path) -> None:
    if _run(["umount", str(path)]).returncode == 0:
        return
    # Busy (a process still has a file open there): detach it now, the kernel frees it later.
    r = _run(["umount", "-l", str(path)])
    if r.returncode != 0:
        raise RuntimeError(f"cannot unmount {path}: {r.stderr.strip()}")


def mount_points_under(root: Path) -> list[Path]:
    """Every mount point at or below ``root``, in mount order (from /proc/self/mountinfo)."""
    top = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            point = _OCTAL.sub(lambda m: chr(int(m[1], 8)), line.split(" ")[4])
            if point == top or point.startswith(top.rstrip("/") + "/"):
                found.append(Path(point))
    return found


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy the contents of ``src`` into the existing directory ``dst``, keeping owners, modes and
    times (heartbeats and temp files are judged by their mtimes)."""
    for entry in os.scandir(src):
        s, d = Path(entry.path), dst / entry.name
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISDIR(st.st_mode):
            d.mkdir()
            _copy_tree(s, d)
        else:
            shutil.copy2(s, d, follow_symlinks=False)
        os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            shutil.copystat(s, d, follow_symlinks=False)  # again: creating children moved a directory's mtime
    shutil.copystat(src, dst)


@contextmanager
def tmpfs(path: Path, *, size_kb: int, nr_inodes: int | None = None) -> Iterator[Path]:
    """Mount a new tmpfs of ``size_kb`` KiB (and ``nr_inodes`` inodes, the root counting as one) on
    the directory ``path``, with a copy of its contents, owner, mode and times: the tree is intact
    on the new filesystem. The original contents stay hidden under the mount, untouched, and are
    what ``path`` holds again once it is unmounted; what the test wrote to the tmpfs is gone.

    Yield the resolved path. Raise OSError if the contents do not fit.
    """
    options = f"size={size_kb}k" + (f",nr_inodes={nr_inodes}" if nr_inodes is not None else "")
    with _fresh_mount(path, "tmpfs", options) as mounted:
        yield mounted


@contextmanager
def ramfs(path: Path) -> Iterator[Path]:
    """As :func:`tmpfs`, on a ramfs: no size limit, statvfs reports 0 of 0 blocks and inodes, and no
    chattr flags (FS_IOC_GETFLAGS is not supported), as some filesystems do."""
    with _fresh_mount(path, "ramfs", None) as mounted:
        yield mounted


@contextmanager
def _fresh_mount(path: Path, fstype: str, options: str | None) -> Iterator[Path]:
    _need_root(f"mounting a {fstype}")
    path = path.resolve()
    # The directory as it is before the mount: through this descriptor its contents stay readable
    # (as /proc/self/fd/N) once the new filesystem covers them.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        opts = ["-o", options] if options else []
        _setup(["mount", "-t", fstype, *opts, "guardian-test", str(path)], f"{fstype} on {path}")
        try:
            st = os.fstat(fd)
            os.chown(path, st.st_uid, st.st_gid)
            _copy_tree(Path(f"/proc/self/fd/{fd}"), path)
            yield path
        finally:
            _unmount(path)
    finally:
        os.close(fd)


@contextmanager
def readonly_bind(path: Path) -> Iterator[Path]:
    """Bind-mount the directory ``path`` onto itself read-only: same files, same device number, a
    read-only mount (as an operator's ``ro`` bind of a volume would be). Yield the resolved path."""
    _need_root("a bind mount")
    path = path.resolve()
    _setup(["mount", "--bind", str(path), str(path)], f"bind mount of {path}")
    try:
        r = _run(["mount", "-o", "remount,bind,ro", str(path)])
        if r.returncode != 0:
            pytest.skip(f"remounting {path} read-only failed: {r.stderr.strip()}")
        yield path
    finally:
        _unmount(path)


def _check_small(path: Path, room: int, limit: int, what: str) -> None:
    if room > limit:
        raise ValueError(f"{path} has {room} {what} free: fill only a small test filesystem (mount a tmpfs first)")


@contextmanager
def fill(path: Path, *, leave_kb: int = 0) -> Iterator[Path]:
    """Fill the filesystem of the directory ``path`` with a ballast file in it, written until the
    kernel says ENOSPC, then shortened by ``leave_kb`` KiB so that about that much stays free.
    Yield the ballast; it is removed on exit. Raise ValueError on a filesystem of more than
    MAX_FILL_BYTES free (the host's disk)."""
    path = path.resolve()
    v = os.statvfs(path)
    _check_small(path, v.f_bavail * v.f_frsize, MAX_FILL_BYTES, "bytes")
    fd, name = tempfile.mkstemp(prefix="ballast.", suffix=".fill", dir=path)
    ballast = Path(name)
    try:
        try:
            # Smaller and smaller writes: the last page or block is filled to its last byte.
            for size in (_CHUNK, 4096, 1):
                chunk = b"\0" * size
                while True:
                    try:
                        os.write(fd, chunk)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
            if leave_kb:
                os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave_kb * 1024))
        finally:
            os.close(fd)
        yield ballast
    finally:
        ballast.unlink(missing_ok=True)


@contextmanager
def exhaust_inodes(path: Path) -> Iterator[int]:
    """Create empty files in the directory ``path`` until its filesystem has no free inode. Yield
    how many were made; they are removed on exit. Raise ValueError on a filesystem of more than
    MAX_FILL_INODES free inodes or one that does not count them."""
    path = path.resolve()
    v = os.statvfs(path)
    if v.f_files == 0:
        raise ValueError(f"the filesystem of {path} does not count inodes")
    _check_small(path, v.f_favail, MAX_FILL_INODES, "inodes")
    made: list[Path] = []
    try:
        while True:
            p = path / f"inode.{len(made)}.fill"
            try:
                p.touch(exist_ok=False)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
            made.append(p)
        yield len(made)
    finally:
        for p in made:
            p.unlink(missing_ok=True)


@contextmanager
def _chattr(path: Path, flag: str, what: str) -> Iterator[Path]:
    _need_root(f"chattr +{flag}")
    path = path.resolve()
    _setup(["chattr", f"+{flag}", str(path)], f"{what} {path}")
    try:
        yield path
    finally:
        # Before anything else is undone: pytest cannot delete an immutable file from tmp_path,
        # and a tmpfs holding one still unmounts, but a directory with one cannot be cleaned.
        r = _run(["chattr", f"-{flag}", str(path)])
        if r.returncode != 0 and path.exists():
            raise RuntimeError(f"cannot clear chattr +{flag} on {path}: {r.stderr.strip()}")


def immutable(path: Path) -> AbstractContextManager[Path]:
    """``chattr +i path`` (nothing may write, rename or remove it; in a directory, no entry may be
    added or removed) until exit, then ``chattr -i``."""
    return _chattr(path, "i", "making immutable")


def append_only(path: Path) -> AbstractContextManager[Path]:
    """``chattr +a path`` (a file may only be appended to; in a directory, entries may be added but
    not renamed or removed) until exit, then ``chattr -a``."""
    return _chattr(path, "a", "making append-only")


class Filesystems:
    """The context managers of this module, each entered now and undone at the test's teardown, last
    first. Every method returns what its context manager yields."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack

    def tmpfs(self, path: Path, *, size_kb: int, nr_inodes: int | None = None) -> Path:
        return self._stack.enter_context(tmpfs(path, size_kb=size_kb, nr_inodes=nr_inodes))

    def ramfs(self, path: Path) -> Path:
        return self._stack.enter_context(ramfs(path))

    def readonly_bind(self, path: Path) -> Path:
        return self._stack.enter_context(readonly_bind(path))

    def fill(self, path: Path, *, leave_kb: int = 0) -> Path:
        return self._stack.enter_context(fill(path, leave_kb=leave_kb))

    def exhaust_inodes(self, path: Path) -> int:
        return self._stack.enter_context(exhaust_inodes(path))

    def immutable(self, path: Path) -> Path:
        return self._stack.enter_context(immutable(path))

    def append_only(self, path: Path) -> Path:
        return self._stack.enter_context(append_only(path))


@pytest.fixture
def filesystems(tmp_path: Path) -> Iterator[Filesystems]:
    """Mounts and chattr flags for one test, all undone at its teardown; a mount still left under
    tmp_path after that (one a test made by hand) is detached and fails the test."""
    with ExitStack() as stack:
        yield Filesystems(stack)
    leaked = mount_points_under(tmp_path)
    for point in reversed(leaked):
        _run(["umount", "-l", str(point)])
    assert not leaked, f"left mounted: {leaked}"
