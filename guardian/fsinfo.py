"""Probes of the filesystems the bot writes to: where a directory lives (its nearest existing part),
the volume's space, inodes and read-only flag (statvfs), a file's immutable and append-only flags
(FS_IOC_GETFLAGS) and, only when a finding must name it, its mount point (/proc/self/mountinfo).

Probing only: what these mean for the bot is judged in ``guardian.checks.state_files``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

# linux/fs.h: FS_IOC_GETFLAGS is _IOR('f', 1, long) in the asm-generic ioctl layout (x86, arm,
# arm64, riscv), although the kernel reads and writes an int through it.
_LONG = struct.calcsize("l")
FS_IOC_GETFLAGS = (2 << 30) | (_LONG << 16) | (ord("f") << 8) | 1
FS_IMMUTABLE_FL = 0x10
FS_APPEND_FL = 0x20
# The filesystem keeps no such flags (tmpfs before 6.0, FUSE, NFS, procfs): nothing to find.
_NO_FLAGS = frozenset({errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS})
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Volume:
    """What statvfs says of the filesystem (as mounted) that holds a path."""

    readonly: bool
    size: int  # f_blocks in bytes; 0 where the filesystem keeps no count of its space (ramfs)
    free: int  # bytes an unprivileged writer may still use (f_bavail)
    inodes: int  # f_files; 0 where the filesystem does not count inodes (btrfs, ramfs)
    free_inodes: int  # f_favail

    @property
    def counts_space(self) -> bool:
        """False for a filesystem that reports 0 of 0 bytes free (ramfs): it has no limit to report."""
        return self.size > 0

    @property
    def out_of_inodes(self) -> bool:
        return self.inodes > 0 and self.free_inodes == 0


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    source: str


def nearest_existing(path: Path) -> tuple[Path, os.stat_result]:
    """``path`` or, when it does not exist yet, its nearest existing parent (where it will be
    created), with its stat (symlinks followed: the bot writes where they lead).

    Raise OSError for any error but "not found" (and "a parent is not a directory", which a
    missing directory also meets when a file stands in its place).
    """
    probe = path
    while True:
        try:
            return probe, os.stat(probe)
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                raise
            probe = probe.parent


def volume(path: Path) -> Volume:
    """Raise OSError if statvfs fails."""
    v = os.statvfs(path)
    return Volume(
        readonly=bool(v.f_flag & os.ST_RDONLY),
        size=v.f_blocks * v.f_frsize,
        free=v.f_bavail * v.f_frsize,
        inodes=v.f_files,
        free_inodes=v.f_favail,
    )


def inode_flags(path: Path, *, follow: bool) -> int | None:
    """The file's FS_*_FL flags (chattr), or None where the filesystem keeps none, where ``path``
    does not exist, or where it is neither a regular file nor a directory (``follow=False``: a
    symlink, which a save replaces rather than writes through).

    Raise OSError if ``path`` cannot be opened or the flags cannot be read for another reason.
    """
    # O_NONBLOCK: a FIFO put in a state file's place must not block the check; opening a device
    # could have side effects, so anything but a file or directory is never ioctl'ed.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            return None
        if e.errno == errno.ENXIO:  # a socket or a FIFO with no writer
            return None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return None
        buf = bytearray(_LONG)
        try:
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        except OSError as e:
            if e.errno in _NO_FLAGS:
                return None
            raise
        flag_value: int = struct.unpack_from("=i", buf)[0]
        return flag_value
    finally:
        os.close(fd)


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes (\040 ...).
    return _OCTAL.sub(lambda m: chr(int(m[1], 8)), field)


def mount_of(path: Path) -> Mount | None:
    """The mount that holds ``path`` (the deepest mount point above its real path; of mounts stacked
    on one point, the last, which is on top), or None when /proc/self/mountinfo cannot be read."""
    try:
        real = os.path.realpath(path)
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best: Mount | None = None
    for line in lines:
        # id parent major:minor root mount-point options [optional fields...] - fstype source super-options
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            point, fstype, source = _unescape(fields[4]), fields[sep + 1], _unescape(fields[sep + 2])
        except (ValueError, IndexError):
            continue
        inside = real == point or real.startswith(point if point.endswith("/") else point + "/")
        if inside and (best is None or len(point) >= len(best.point)):
            best = Mount(point, fstype, source)
    return best
