"""Alerts to the systemd journal, spoken natively, with fields an operator can query.

One datagram per alert on journald's socket (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/), so
``journalctl -u guardian GUARDIAN_LEVEL=CRITICAL`` and ``journalctl -u guardian -p crit`` both
work. A field is ``NAME=value\\n``, or, when the value holds a newline, ``NAME\\n`` + its length as a
64-bit little-endian integer + the value + ``\\n``. A payload too large for one datagram goes in a
sealed memfd whose descriptor is passed (SCM_RIGHTS) in an empty datagram.

Where there is no journal socket (a shell, a container), :class:`StdoutPrioritySink` prints the
seeds' line with the ``<N>`` priority prefix that journald reads on a stream connected to it.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import re
import socket
import stat
import struct
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from guardian.alerts import Alert, fingerprint

DEFAULT_SOCKET = Path("/run/systemd/journal/socket")

# syslog priorities: 2 crit, 3 err, 4 warning, 5 notice, 6 info.
PRIORITY: Mapping[str, int] = {"CRITICAL": 2, "HIGH": 3, "MEDIUM": 4, "LOW": 5}
PRIORITY_INFO = 6

IDENTIFIER = "guardian"
CONTEXT_PREFIX = "GUARDIAN_CTX_"
_FIELD_NAME_MAX = 64  # journald drops fields with longer names
_NOT_FIELD_CHAR = re.compile(r"[^A-Z0-9_]")
# A datagram too large for the socket: send it through a memfd instead.
_TOO_LARGE = (errno.EMSGSIZE, errno.ENOBUFS)


def priority(level: str) -> int:
    """The syslog priority of an alert level: CRITICAL 2 ... LOW 5, anything else (INFO) 6."""
    return PRIORITY.get(level, PRIORITY_INFO)


def alert_fingerprint(alert: Alert) -> str:
    """The alert's fingerprint: the one it carries in its context, else its code and subject."""
    given = alert.context.get("fingerprint")
    return str(given) if given else fingerprint(alert.code, alert.subject)


def context_field(key: str) -> str:
    """``GUARDIAN_CTX_<KEY>``: upper-cased, anything outside ``[A-Z0-9_]`` made ``_``.

    The prefix makes the whole name valid for journald (a letter first, never ``_``, which marks
    trusted fields), and it is cut to the 64 characters journald accepts.
    """
    return (CONTEXT_PREFIX + _NOT_FIELD_CHAR.sub("_", str(key).upper()))[:_FIELD_NAME_MAX]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    return str(value)


def encode_field(name: str, value: str | bytes) -> bytes:
    """One field in the native form: simple, or length-prefixed when the value holds a newline."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    key = name.encode("ascii")
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


def fields(alert: Alert) -> list[tuple[str, str]]:
    """The journal fields of an alert, in order."""
    out = [
        ("MESSAGE", alert.line()),
        ("PRIORITY", str(priority(alert.level))),
        ("SYSLOG_IDENTIFIER", IDENTIFIER),
        ("GUARDIAN_LEVEL", alert.level),
        ("GUARDIAN_CODE", alert.code),
        ("GUARDIAN_SUBJECT", alert.subject),
        ("GUARDIAN_EVENT", alert.event),
        ("GUARDIAN_FINGERPRINT", alert_fingerprint(alert)),
        ("GUARDIAN_ACTION_REQUIRED", "1" if alert.action_required else "0"),
        ("GUARDIAN_TS", alert.ts),
    ]
    out.extend((context_field(k), _text(v)) for k, v in alert.context.items())
    return out


def encode(alert: Alert) -> bytes:
    """The whole datagram for one alert."""
    return b"".join(encode_field(name, value) for name, value in fields(alert))


def _sealed_fd(payload: bytes) -> int:
    """A descriptor holding ``payload``: a sealed memfd where the system has them."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("guardian-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    else:  # an unlinked file in shared memory, as journald also accepts
        with tempfile.TemporaryFile(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as f:
            fd = os.dup(f.fileno())
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        if hasattr(fcntl, "F_ADD_SEALS"):
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            try:
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            except OSError as e:  # not a memfd (the fallback): journald reads it unsealed
                if e.errno not in (errno.EINVAL, errno.EPERM):
                    raise
    except BaseException:
        os.close(fd)
        raise
    return fd


class JournaldSink:
    """One native-protocol datagram per alert; the socket is connected once and kept."""

    name = "journald"

    def __init__(self, path: Path | str = DEFAULT_SOCKET, *, timeout: float = 2.0) -> None:
        self.path = Path(path)
        self.timeout = timeout  # a journal that stops reading must not hang the cycle
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @classmethod
    def available(cls, path: Path | str = DEFAULT_SOCKET) -> bool:
        """Whether a journal listens on ``path`` (a socket that accepts a connection)."""
        try:
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                return False
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(os.fspath(path))
        except OSError:
            return False
        return True

    def emit(self, alert: Alert) -> None:
        payload = encode(alert)
        with self._lock:
            try:
                self._send(payload)
            except TimeoutError:
                self._close()
                raise  # the journal is not reading: do not wait twice
            except OSError:
                # journald restarted, or its socket was replaced: connect again, once.
                self._close()
                try:
                    self._send(payload)
                except OSError:
                    self._close()
                    raise

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                s.settimeout(self.timeout)
                s.connect(os.fspath(self.path))
            except BaseException:
                s.close()
                raise
            self._sock = s
        return self._sock

    def _send(self, payload: bytes) -> None:
        sock = self._connect()
        try:
            sock.send(payload)
        except OSError as e:
            if e.errno not in _TOO_LARGE:
                raise
            fd = _sealed_fd(payload)
            try:
                sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            finally:
                os.close(fd)


class StdoutPrioritySink:
    """The seeds' line on stdout behind the ``<N>`` prefix journald reads from a stream.

    Every line of a multi-line alert carries the prefix, so none of it lands at the default priority.
    """

    name = "stdout"

    def emit(self, alert: Alert) -> None:
        prefix = f"<{priority(alert.level)}>"
        text = "\n".join(prefix + line for line in alert.line().splitlines() or [""])
        print(text, file=sys.stdout, flush=True)
