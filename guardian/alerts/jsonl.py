"""The operator's alert log: one JSON object per line, appended durably, rotated by size.

Each line is made by python-json-logger (a logger of this sink's own, not propagating, whose
formatter outputs exactly :meth:`Alert.to_json`). Writing is safe with several processes at once
(the gate and the daemon):

- every emit opens the file afresh (``O_APPEND | O_NOFOLLOW``) under a *shared* ``flock`` of the
  sidecar ``<file>.rotate.lock``, writes the whole line in one ``write()`` and fsyncs it;
- rotation takes the sidecar *exclusively*, so it happens only while no writer has the file open:
  no line is ever written to a file after it was renamed, none is torn, none is lost;
- a line a full disk cut short is ended by the next writer (it reads the file's last byte and
  starts with a newline when that is not one), so the torn line is the only one lost;
- rotated files are ``<file>.1`` (newest) ... ``<file>.<keep>``; the oldest beyond ``keep`` is deleted.

JSON escapes newlines and quotes (and, as the line is ASCII, every other line separator), so no
field can forge a second line. A symlink in place of the log or of its sidecar is refused (ELOOP).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import stat
import time
from pathlib import Path

from pythonjsonlogger.json import JsonFormatter

from guardian.alerts import Alert
from guardian.fsutil import fsync_dir

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 5
LOCK_SUFFIX = ".rotate.lock"
SHARED_TIMEOUT = 10.0  # a writer waits this long for a rotation in progress, then fails (a warning)
ROTATE_TIMEOUT = 2.0  # a rotator waits this long for writers to finish, then writes without rotating

# NONBLOCK: a FIFO fails. Read as well as append: the last byte tells whether a line was left torn.
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def rotated_path(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def rotate_lock_path(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


def flock_wait(fd: int, op: int, timeout: float) -> bool:
    """``flock(fd, op)``, waiting at most ``timeout`` seconds; False when it was not granted."""
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.01)


class _AppendHandler(logging.Handler):
    """Appends each formatted record as one line: locked, fresh fd, one write, fsync."""

    def __init__(self, path: Path, max_bytes: int, keep: int, *, create_dir: bool = True) -> None:
        super().__init__()
        self.path = path
        self.lock_file = rotate_lock_path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.create_dir = create_dir

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if "\n" in text or "\r" in text:  # cannot happen with JSON; refuse rather than forge a line
            raise ValueError("alert line contains a line break")
        data = (text + "\n").encode("ascii")
        lock_fd = self._open_lock()
        try:
            if not flock_wait(lock_fd, fcntl.LOCK_SH, SHARED_TIMEOUT):
                raise TimeoutError(f"{self.lock_file}: held exclusively for more than {SHARED_TIMEOUT:g} s")
            fd = self._open_log()
            try:
                if not self._needs_rotation(fd, len(data)) and not _torn(fd):
                    self._write(fd, data)
                    return
            finally:
                os.close(fd)
            # Full: rotate under the exclusive lock, re-checking there (another writer may have rotated).
            # Waiting too long for it (a stuck writer) only lets the file grow: the line is still written.
            # Or the last line looks torn, which is also how another writer's line looks while it is
            # being written: look again where no writer is mid-line.
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            exclusive = flock_wait(lock_fd, fcntl.LOCK_EX, ROTATE_TIMEOUT)
            if not exclusive and not flock_wait(lock_fd, fcntl.LOCK_SH, SHARED_TIMEOUT):
                raise TimeoutError(f"{self.lock_file}: held exclusively for more than {SHARED_TIMEOUT:g} s")
            fd = self._open_log()
            if exclusive and self._needs_rotation(fd, len(data)):
                os.close(fd)
                self._rotate()
                fd = self._open_log()
            try:
                # A line a full disk cut short: end it, so this one is not glued to it and lost with it.
                self._write(fd, b"\n" + data if _torn(fd) else data)
            finally:
                os.close(fd)
        finally:
            os.close(lock_fd)  # releases the flock

    def _open_lock(self) -> int:
        # Read-only is enough for flock: whoever may read the sidecar takes part in the protocol.
        flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            return os.open(self.lock_file, flags, 0o644)
        except FileNotFoundError:  # the log's directory does not exist yet
            if not self.create_dir:
                raise
            self.path.parent.mkdir(exist_ok=True)
            return os.open(self.lock_file, flags, 0o644)

    def _open_log(self) -> int:
        try:
            fd = os.open(self.path, _OPEN_FLAGS)
        except FileNotFoundError:
            fd = os.open(self.path, _OPEN_FLAGS | os.O_CREAT, 0o644)
            fsync_dir(self.path.parent)  # the new file's name is durable, not just its bytes
        except PermissionError:  # may append but not read (a write-only mode): still write, unchecked
            fd = os.open(self.path, _OPEN_FLAGS & ~os.O_RDWR | os.O_WRONLY)
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device planted there: refuse
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", str(self.path))
        return fd

    def _needs_rotation(self, fd: int, incoming: int) -> bool:
        size = os.fstat(fd).st_size
        return size > 0 and size + incoming > self.max_bytes

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        written = os.write(fd, data)
        if written != len(data):  # a full disk: say so; a partial line is skipped by readers
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        os.fsync(fd)

    def _rotate(self) -> None:
        """``file.<keep>`` is dropped, ``.i`` becomes ``.i+1``, the live file becomes ``.1``."""
        if self.keep <= 0:
            self.path.unlink(missing_ok=True)
        else:
            rotated_path(self.path, self.keep).unlink(missing_ok=True)
            for i in range(self.keep - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):  # a gap in the chain (keep was raised)
                    os.rename(rotated_path(self.path, i), rotated_path(self.path, i + 1))
            os.rename(self.path, rotated_path(self.path, 1))
        fsync_dir(self.path.parent)


def _torn(fd: int) -> bool:
    """Whether the file does not end with a newline: its last line was cut short (or is being written)."""
    size = os.fstat(fd).st_size
    if not size:
        return False
    try:
        return os.pread(fd, 1, size - 1) != b"\n"
    except OSError as e:
        if e.errno == errno.EBADF:  # opened write-only: cannot tell, and a line's own newline still ends it
            return False
        raise


class JsonlSink:
    name = "jsonl"

    def __init__(
        self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP, create_dir: bool = True
    ) -> None:
        """``create_dir``: make the log's directory when it is missing (False for a log in the bot's
        data root, whose directories are the heal's to create, after its checks: in the bare mount
        point of an unmounted volume, one would start a fresh layout)."""
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if keep < 0:
            raise ValueError(f"keep must not be negative, got {keep}")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        # A logger of its own, outside logging's registry (no leak per sink), touching nobody else's.
        self.logger = logging.Logger(f"guardian.alerts.jsonl:{path}", logging.INFO)
        self.logger.propagate = False
        handler = _AppendHandler(path, max_bytes, keep, create_dir=create_dir)
        # No format fields: the record's dict message is the whole object. Compact, and ASCII so
        # that no character in a field (U+2028, a lone surrogate) can break or corrupt the line.
        handler.setFormatter(
            JsonFormatter(
                [], json_ensure_ascii=True, json_serializer=functools.partial(json.dumps, separators=(",", ":"))
            )
        )
        self.logger.addHandler(handler)

    def emit(self, alert: Alert) -> None:
        # A plain LogRecord (not logging's record factory, which others may customize) handed to
        # the logger directly: logging.disable() or a level cannot silently drop an alert.
        record = logging.LogRecord(self.logger.name, logging.INFO, __file__, 0, alert.to_json(), None, None)
        self.logger.handle(record)
