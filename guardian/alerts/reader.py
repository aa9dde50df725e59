"""Reading the operator's alert log: rotated files included, filtered, followed, shown as a table.

Files are read oldest first (``<file>.N`` ... ``<file>.1``, then the live file) under a shared lock
of the writers' sidecar, so a rotation cannot move lines between files while they are read. A line
that is not an alert (torn by a full disk, edited by hand) is skipped and counted, never fatal.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from guardian.alerts.jsonl import flock_wait, rotate_lock_path
from guardian.model import Level

AlertDoc = dict[str, Any]  # one alert as logged: ts, level, code, subject, message, action_required, event, context

LEVEL_RANK: dict[str, int] = {"INFO": 0, **{lv.name: int(lv) for lv in Level}}
LEVELS: tuple[str, ...] = tuple(LEVEL_RANK)  # lowest first
POLL = 0.2
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LOCK_TIMEOUT = 2.0  # then read without the lock: a stuck writer must not stop an operator reading


def level_rank(level: object) -> int:
    """INFO 0 < LOW < MEDIUM < HIGH < CRITICAL; an unknown level ranks as INFO."""
    return LEVEL_RANK.get(str(level).upper(), 0)


def parse_ts(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def parse_line(line: bytes | str) -> AlertDoc | None:
    """The alert on one line, or None when it is not one (bad JSON, not an object, no ts/level/code)."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or parse_ts(doc.get("ts")) is None:
        return None
    if not isinstance(doc.get("level"), str) or not isinstance(doc.get("code"), str):
        return None
    return doc


@dataclass(frozen=True)
class AlertFilter:
    """``since`` is relative to ``now``; ``level`` keeps that level and worse; ``code`` is a name or a glob."""

    since: timedelta | None = None
    level: str | None = None
    code: str | None = None
    now: datetime | None = None

    def __post_init__(self) -> None:
        if self.level is not None and self.level.upper() not in LEVEL_RANK:
            raise ValueError(f"unknown level {self.level!r} (one of {', '.join(LEVELS)})")

    def matches(self, doc: AlertDoc) -> bool:
        if self.code is not None and not fnmatch.fnmatchcase(str(doc.get("code")).upper(), self.code.upper()):
            return False
        if self.level is not None and level_rank(doc.get("level")) < LEVEL_RANK[self.level.upper()]:
            return False
        if self.since is not None:
            ts = parse_ts(doc.get("ts"))
            if ts is None or ts < (self.now or datetime.now(UTC)) - self.since:
                return False
        return True


@dataclass
class ReadStats:
    lines: int = 0  # lines read
    skipped: int = 0  # lines that were not an alert


@dataclass
class ReadResult:
    alerts: list[AlertDoc]
    skipped: int
    files: list[Path] = field(default_factory=list)


def log_files(path: Path) -> list[Path]:
    """The rotated files, oldest first (``.N`` ... ``.1``), then the live file; only those that exist."""
    prefix = path.name + "."
    rotated: list[tuple[int, Path]] = []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return []
    for e in entries:
        suffix = e.name[len(prefix) :]
        if e.name.startswith(prefix) and suffix.isdigit() and suffix.isascii():
            rotated.append((int(suffix), Path(e.path)))
    out = [p for _, p in sorted(rotated, reverse=True)]
    if os.path.lexists(path):
        out.append(path)
    return out


class _Lines:
    """Complete lines from a growing file: a partial last line waits for the rest."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.ino = os.fstat(fd).st_ino
        self.buf = b""

    def read(self) -> list[bytes]:
        chunks = []
        while True:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return []
        data = self.buf + b"".join(chunks)
        *lines, self.buf = data.split(b"\n")
        return lines

    def rest(self) -> list[bytes]:
        """At the end of the file for good (rotated away, or a one-shot read): the unterminated tail."""
        lines, self.buf = ([self.buf] if self.buf.strip() else []), b""
        return lines

    def close(self) -> None:
        os.close(self.fd)


def _parse(lines: Iterable[bytes], flt: AlertFilter, stats: ReadStats) -> Iterator[AlertDoc]:
    for raw in lines:
        if not raw.strip():
            continue
        stats.lines += 1
        doc = parse_line(raw)
        if doc is None:
            stats.skipped += 1
        elif flt.matches(doc):
            yield doc


class _SharedLock:
    """The writers' sidecar taken shared: no rotation meanwhile. Best effort: absent or stuck, go on."""

    def __init__(self, path: Path) -> None:
        self.path = rotate_lock_path(path)
        self.fd: int | None = None

    def __enter__(self) -> _SharedLock:
        try:
            self.fd = os.open(self.path, _READ_FLAGS)
        except OSError:
            return self
        if not flock_wait(self.fd, fcntl.LOCK_SH, _LOCK_TIMEOUT):
            os.close(self.fd)
            self.fd = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_history(
    path: Path, flt: AlertFilter, stats: ReadStats, last: int | None
) -> tuple[list[AlertDoc], list[Path], _Lines | None]:
    """Every matching alert now in the log, and the live file left open at its end (for follow)."""
    found: deque[AlertDoc] = deque(maxlen=last)
    files = log_files(path)
    live: _Lines | None = None
    with _SharedLock(path):
        for p in files:
            try:
                reader = _Lines(os.open(p, _READ_FLAGS))
            except FileNotFoundError:  # rotated away by a writer that does not lock
                continue
            found.extend(_parse(reader.read(), flt, stats))
            if p == path:
                live = reader
            else:
                found.extend(_parse(reader.rest(), flt, stats))
                reader.close()
    return list(found), files, live


def read_alerts(
    path: Path, flt: AlertFilter | None = None, *, last: int | None = None, stats: ReadStats | None = None
) -> ReadResult:
    """The alerts in the log (rotated files included) that match ``flt``, oldest first; ``last``: only the last N."""
    stats = stats if stats is not None else ReadStats()
    flt = flt or AlertFilter()
    alerts, files, live = _read_history(path, flt, stats, last)
    if live is not None:
        alerts.extend(_parse(live.rest(), flt, stats))
        live.close()
        if last is not None:
            alerts = alerts[-last:] if last > 0 else []
    return ReadResult(alerts, stats.skipped, files)


def follow(
    path: Path,
    flt: AlertFilter | None = None,
    *,
    history: bool = False,
    last: int | None = None,
    poll: float = POLL,
    stop: Callable[[], bool] | None = None,
    stats: ReadStats | None = None,
) -> Iterator[AlertDoc]:
    """Yield alerts as they are appended to the live file (after the history first if ``history``).

    Polls every ``poll`` seconds until ``stop()`` is true (or forever). When the file is rotated
    away (its inode changes, or it disappears), the rest of the old file is read, then the new one
    from its start. ``stats`` counts the lines skipped.
    """
    stats = stats if stats is not None else ReadStats()
    flt = flt or AlertFilter()
    if history:
        past, _, live = _read_history(path, flt, stats, last)
        yield from past
    else:
        try:
            live = _Lines(os.open(path, _READ_FLAGS))
            os.lseek(live.fd, 0, os.SEEK_END)
        except FileNotFoundError:
            live = None
    try:
        while True:
            if live is not None:
                yield from _parse(live.read(), flt, stats)
            if stop is not None and stop():
                return
            try:
                ino: int | None = os.lstat(path).st_ino
            except FileNotFoundError:
                ino = None
            if live is not None and ino != live.ino:  # rotated: drain the old file, then switch
                yield from _parse([*live.read(), *live.rest()], flt, stats)
                live.close()
                live = None
            if live is None and ino is not None:
                try:
                    live = _Lines(os.open(path, _READ_FLAGS))
                except FileNotFoundError:
                    continue
                continue  # read the new file at once
            if live is not None and os.fstat(live.fd).st_size < os.lseek(live.fd, 0, os.SEEK_CUR):
                os.lseek(live.fd, 0, os.SEEK_SET)  # truncated in place (by hand): start over
                live.buf = b""
            time.sleep(poll)
    finally:
        if live is not None:
            live.close()


# -- the terminal table --------------------------------------------------------------------------

_FIXED = {"event": 8, "code": 24, "subject": 28}  # widths when rows come one by one (follow)
_MESSAGE_MIN = 32


def _clean(value: object) -> str:
    """One line, no control characters: a field cannot break the table or drive the terminal."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _time(value: object) -> str:
    ts = parse_ts(value)
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else _clean(value)[:19]


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def format_table(
    alerts: Iterable[AlertDoc], *, width: int | None = None, header: bool = True, fixed: bool = False
) -> str:
    """Rows of time (UTC), level, event, code, subject, message, cut to the terminal's width.

    ``fixed``: column widths that do not depend on the rows (for rows printed as they come).
    """
    docs = list(alerts)
    width = width or shutil.get_terminal_size().columns
    if fixed:
        w = dict(_FIXED)
    else:
        w = {
            "event": max([5, *(len(_clean(d.get("event"))) for d in docs)]),
            "code": min(32, max([4, *(len(_clean(d.get("code"))) for d in docs)])),
            "subject": min(36, max([7, *(len(_clean(d.get("subject"))) for d in docs)])),
        }
    # A narrow terminal: the message keeps _MESSAGE_MIN columns, taken from the subject, then the code.
    room = width - (19 + 8 + w["event"] + 5 * 2) - _MESSAGE_MIN
    w["subject"] = max(8, min(w["subject"], room - w["code"]))
    w["code"] = max(12, min(w["code"], room - w["subject"]))

    def row(ts: str, level: str, cells: tuple[str, str, str], message: str) -> str:
        event, code, subject = (
            _fit(c, w[k]).ljust(w[k]) for c, k in zip(cells, ("event", "code", "subject"), strict=True)
        )
        return _fit(f"{ts:<19}  {level:<8}  {event}  {code}  {subject}  {message}".rstrip(), width)

    lines = [row("TIME (UTC)", "LEVEL", ("EVENT", "CODE", "SUBJECT"), "MESSAGE")] if header else []
    for d in docs:
        message = _clean(d.get("message"))
        if d.get("action_required") is True:
            message = "ACTION REQUIRED: " + message
        cells = (_clean(d.get("event")), _clean(d.get("code")), _clean(d.get("subject")))
        lines.append(row(_time(d.get("ts")), _clean(d.get("level")), cells, message))
    return "\n".join(lines)
