"""Reading the bot's state files (probing only; judging is in ``checks/``).

The positions file only grows (1M closed positions is ~420 MB of JSON), so it is decoded with
msgspec into small typed structs: open positions whole, closed positions as just their P&L and
their closing time, parsed in C. ``bench/run --decode`` shows why (time and peak memory against
``json.loads``). Every closed record is judged: one whose pnl or closed_at is not as the layout
says is counted and named, never skipped, since any of them may be today's loss.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from guardian.fsutil import NotRegularFile, TooLarge, read_regular


class FileState(enum.Enum):
    OK = "ok"
    MISSING = "missing"
    EMPTY = "empty"  # 0 bytes, whitespace or `{}`
    CORRUPT = "corrupt"  # not valid JSON
    MALFORMED = "malformed"  # valid JSON, required keys missing or of the wrong type
    UNREADABLE = "unreadable"  # permission denied, not a regular file, too large


class Closed(msgspec.Struct, gc=False):
    """A closed position as the tally needs it. ``closed_at`` is parsed by msgspec, in C: an RFC 3339
    string (no zone: UTC) or, as the decoders are not strict, Unix seconds. A record it cannot parse
    fails the typed decode, and the file is then judged record by record (``_tally_records``)."""

    pnl: Any = None
    closed_at: datetime | None = None  # absent or null: the day it closed is unknown


class _PositionsDoc(msgspec.Struct):
    open_positions: list[Any] | msgspec.UnsetType = msgspec.UNSET  # a non-object entry is POSITION_INVALID
    closed_positions: list[Closed] | msgspec.UnsetType = msgspec.UNSET


class _ClosedIds(msgspec.Struct, gc=False):
    id: Any = None


class _ClosedIdsDoc(msgspec.Struct):
    closed_positions: list[_ClosedIds] = msgspec.field(default_factory=list)


class _OpenOnlyDoc(msgspec.Struct):
    open_positions: list[Any] = msgspec.field(default_factory=list)


@dataclass
class Loaded:
    """What reading one state file found."""

    path: Path
    state: FileState
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    missing_keys: tuple[str, ...] = ()
    size: int = 0

    @property
    def ok(self) -> bool:
        return self.state is FileState.OK


# (closed_count, today_pnl, closed_unjudged, the first few unjudged records and why)
Tally = tuple[int, float, int, tuple[str, ...]]
EXAMPLES = 3  # unjudged records named in a finding; the count says how many more


@dataclass
class Positions:
    open: list[Any]  # as decoded: an entry that is not an object is POSITION_INVALID
    closed_count: int
    today_pnl: float  # realised P&L of positions closed on the current UTC day
    # Closed positions whose pnl or closed_at is not as the layout says (a number; ISO 8601 or Unix
    # seconds), or that are not objects at all. Any of them may be today's loss: the day is unknown.
    closed_unjudged: int = 0
    unjudged: tuple[str, ...] = ()  # the first few, as "#12: pnl is '12.5', not a number"
    also_closed: tuple[str, ...] = ()  # ids of open positions that a closed position carries too


class _ClosedPlain(msgspec.Struct, gc=False):
    """A closed record msgspec could not type, read as it is for Python's own judging."""

    pnl: Any = None
    closed_at: Any = None


class _SplitPositionsDoc(msgspec.Struct):
    open_positions: list[Any] | msgspec.UnsetType = msgspec.UNSET
    closed_positions: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET  # checked as JSON syntax only


_SPLIT_DECODER = msgspec.json.Decoder(_SplitPositionsDoc)
# Not strict: a closed_at in Unix seconds (a number) is a datetime too.
_DOC_DECODER = msgspec.json.Decoder(_PositionsDoc, strict=False)
_CLOSED_DECODER = msgspec.json.Decoder(list[Closed], strict=False)
_ONE_CLOSED = msgspec.json.Decoder(Closed, strict=False)
_ONE_PLAIN = msgspec.json.Decoder(_ClosedPlain)
_CLOSED_KEY = b'"closed_positions"'


@dataclass
class ClosedMemo:
    """The closed list one reader saw last and its tally, so that re-reading a file whose closed list
    is byte-identical (the bot rewrites the file when a trade opens) skips decoding and judging it."""

    # A larger list is not kept: the daemon's idle RSS target is 40 MB.
    MAX_BYTES: ClassVar[int] = 32 << 20

    # (closed list bytes, the day they were judged against, their Tally). One tuple, replaced whole,
    # so no reader pairs one list's bytes with another's tally.
    last: tuple[bytes, str, Tally] | None = None


class _Day(enum.Enum):
    TODAY = "today"
    OTHER = "another day"
    UNPARSED = "unparsed"


def _utc_day(moment: datetime) -> date:
    offset = moment.utcoffset()
    return (moment - offset).date() if offset else moment.date()  # no zone: UTC, as the layout's times are


def _judge_plain(obj: Any, today: date) -> _Day:
    """A ``closed_at`` msgspec would not parse: still a time as the layout writes one if Python's
    ISO 8601 parser reads it (``2026-11-21``, ``2026-11-21T07:00Z``), or a number of Unix seconds.
    Epoch milliseconds fall past year 9999: unparsed, never read as another day."""
    try:
        if type(obj) is str:
            moment = datetime.fromisoformat(obj)
        elif type(obj) is int or type(obj) is float:  # not bool: true is no time
            moment = datetime.fromtimestamp(obj, UTC)
        else:
            return _Day.UNPARSED
    except (ValueError, OverflowError, OSError):
        return _Day.UNPARSED
    return _Day.TODAY if _utc_day(moment) == today else _Day.OTHER


def _read(path: Path, max_bytes: int) -> bytes | Loaded:
    try:
        return read_regular(path, max_bytes=max_bytes)
    except FileNotFoundError:
        return Loaded(path, FileState.MISSING, "does not exist")
    except (NotRegularFile, TooLarge) as e:
        return Loaded(path, FileState.UNREADABLE, e.strerror or str(e))
    except PermissionError:
        return Loaded(path, FileState.UNREADABLE, "permission denied")
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            return Loaded(path, FileState.MISSING, "its directory does not exist")
        return Loaded(path, FileState.UNREADABLE, e.strerror or str(e))


def _is_empty(raw: bytes) -> bool:
    if len(raw) > 64:  # never copy a large buffer just to learn it is not empty
        return False
    stripped = raw.strip()
    return not stripped or stripped.replace(b" ", b"") == b"{}"


def _sane_pnl(pnl: Any) -> bool:
    """A P&L as the layout writes it: a JSON number of a float's size (not a bool, string, NaN, null)."""
    return (type(pnl) is float or type(pnl) is int) and -1e300 < pnl < 1e300


def _tally(closed: Sequence[Closed], today: str) -> Tally:
    """Judge every closed position: the day's realised P&L and the records that cannot be judged."""
    day = date.fromisoformat(today)
    aware = datetime(day.year, day.month, day.day, tzinfo=UTC)
    naive = aware.replace(tzinfo=None)  # a time with no zone is UTC
    aware_end, naive_end = aware + timedelta(days=1), naive + timedelta(days=1)
    today_pnl = 0.0
    unjudged = 0
    examples: list[str] = []
    for i, c in enumerate(closed):
        at, pnl = c.closed_at, c.pnl
        if at is None or not ((type(pnl) is float or type(pnl) is int) and -1e300 < pnl < 1e300):
            unjudged += 1
            if len(examples) < EXAMPLES:
                examples.append(_why_unjudged(i, at is None, pnl, None))
        elif (aware <= at < aware_end) if at.tzinfo is not None else (naive <= at < naive_end):
            today_pnl += pnl
    return len(closed), today_pnl, unjudged, tuple(examples)


def _why_unjudged(index: int, no_time: bool, pnl: Any, raw_time: Any) -> str:
    if no_time:
        what = "missing or null" if raw_time is None else f"{raw_time!r:.40}"
        return f"#{index}: closed_at {what} is not an ISO 8601 UTC time or Unix seconds"
    return f"#{index}: pnl {pnl!r:.40} is not a number"


def _tally_records(raws: list[msgspec.Raw], today: str) -> Tally:
    """The slow path, for a closed list the typed decode rejected: each record on its own, so one
    bad record (a null, a string) is counted and named and every other record is still judged. A
    record msgspec cannot type is read again untyped and its closed_at judged by Python's parser."""
    day = date.fromisoformat(today)
    today_pnl = 0.0
    unjudged = 0
    examples: list[str] = []

    def bad(why: str) -> None:
        nonlocal unjudged
        unjudged += 1
        if len(examples) < EXAMPLES:
            examples.append(why)

    for i, raw in enumerate(raws):
        try:
            _, pnl, n, why = _tally([_ONE_CLOSED.decode(raw)], today)
        except msgspec.ValidationError:
            pass
        else:
            today_pnl += pnl
            if n:
                bad(why[0].replace("#0:", f"#{i}:", 1))
            continue
        try:
            c = _ONE_PLAIN.decode(raw)
        except msgspec.ValidationError:
            bad(f"#{i}: {bytes(raw)[:40].decode('utf-8', 'replace')} is not a position object")
            continue
        when = _judge_plain(c.closed_at, day)
        if when is _Day.UNPARSED or not _sane_pnl(c.pnl):
            bad(_why_unjudged(i, when is _Day.UNPARSED, c.pnl, c.closed_at))
        elif when is _Day.TODAY:
            today_pnl += c.pnl
    return len(raws), today_pnl, unjudged, tuple(examples)


def load_positions(
    path: Path, *, today: str, max_bytes: int, memo: ClosedMemo | None = None
) -> tuple[Loaded, Positions | None]:
    """Read the positions file. ``today`` is the current UTC date, ``YYYY-MM-DD``. A caller that reads
    the same file again and again passes the same ``memo``: the result is the same, only cheaper."""
    raw = _read(path, max_bytes)
    if isinstance(raw, Loaded):
        return raw, None
    loaded, positions = _decode_positions(path, raw, today, memo)
    if positions is not None and positions.open:
        positions.also_closed = _ids_also_closed(raw, positions.open)
    return loaded, positions


def _ids_also_closed(raw: bytes, open_: list[Any]) -> tuple[str, ...]:
    """The ids of open positions that a closed position carries too (the same trade both open and
    closed). Exact, and cheap where it can be: an id string whose JSON literal does not occur after
    the first ``"closed_positions"`` key, in a file with no backslash there (no escaped form of it),
    cannot be a closed position's id; anything else is settled by decoding the closed ids."""
    ids = [p.get("id") for p in open_ if isinstance(p, dict) and p.get("id") is not None]
    start = raw.find(_CLOSED_KEY)
    if not ids or start == -1:
        return ()
    literal = raw.find(b"\\", start) == -1 and all(isinstance(i, str) for i in ids)
    if literal and not any(raw.find(msgspec.json.encode(i), start) != -1 for i in ids):
        return ()
    return tuple(sorted({str(i) for i in ids} & _closed_ids_of(raw)))


def _closed_ids_of(raw: bytes) -> set[str]:
    """Every closed position's id; where a record has another shape (the per-record path judged
    it), the ids of those that are objects."""
    try:
        closed = msgspec.json.decode(raw, type=_ClosedIdsDoc).closed_positions
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        try:
            records = msgspec.json.decode(raw, type=_RecordsDoc).closed_positions
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            return set()
        one = msgspec.json.Decoder(_ClosedIds)
        closed = []
        for r in records if isinstance(records, list) else ():
            with contextlib.suppress(msgspec.MsgspecError):
                closed.append(one.decode(r))
    return {str(c.id) for c in closed if c.id is not None}


def _decode_positions(path: Path, raw: bytes, today: str, memo: ClosedMemo | None) -> tuple[Loaded, Positions | None]:
    size = len(raw)
    if _is_empty(raw):
        return Loaded(path, FileState.EMPTY, "is empty", size=size), None
    if memo is not None:
        positions = _load_memoised(raw, today, memo)
        if positions is not None:
            return Loaded(path, FileState.OK, size=size), positions
    try:
        try:
            doc = _DOC_DECODER.decode(raw)
        except msgspec.ValidationError:
            return _load_per_record(path, raw, today)
        except (msgspec.DecodeError, UnicodeDecodeError) as e:  # msgspec reports invalid UTF-8 as the latter
            try:  # NaN or Infinity, as Python's json.dump writes them: judged per position, not a corrupt file
                doc = msgspec.convert(decode_any(raw), _PositionsDoc, strict=False)
            except msgspec.ValidationError:
                return _load_per_record(path, msgspec.json.encode(decode_any(raw)), today)
            except msgspec.DecodeError:
                return Loaded(path, FileState.CORRUPT, f"is not valid JSON ({e})", size=size), None
    except RecursionError:  # valid JSON, perhaps, but nested deeper than any decoder here goes
        return Loaded(path, FileState.UNREADABLE, "is nested too deep to read", size=size), None
    missing = tuple(
        k
        for k, v in (("open_positions", doc.open_positions), ("closed_positions", doc.closed_positions))
        if v is msgspec.UNSET
    )
    if missing:
        return Loaded(path, FileState.MALFORMED, f"lacks {', '.join(missing)}", missing_keys=missing, size=size), None
    assert not isinstance(doc.open_positions, msgspec.UnsetType)
    assert not isinstance(doc.closed_positions, msgspec.UnsetType)
    counts = _tally(doc.closed_positions, today)
    return Loaded(path, FileState.OK, size=size), Positions(list(doc.open_positions), *counts)


class _RecordsDoc(msgspec.Struct):
    open_positions: list[Any] | msgspec.UnsetType = msgspec.UNSET
    closed_positions: list[msgspec.Raw] | msgspec.UnsetType = msgspec.UNSET


def _load_per_record(path: Path, raw: bytes, today: str) -> tuple[Loaded, Positions | None]:
    """The typed decode rejected a record: judge the file record by record. Only a file whose shape
    is wrong (not an object, a list that is not a list, a key missing) is MALFORMED; a bad record
    inside a sound shape is counted as unjudged, and the open positions are still judged whole."""
    try:
        doc = msgspec.json.decode(raw, type=_RecordsDoc)
    except msgspec.ValidationError as e:
        return _classify_untyped(path, raw, ("open_positions", "closed_positions"), str(e)), None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        return Loaded(path, FileState.CORRUPT, f"is not valid JSON ({e})", size=len(raw)), None
    missing = tuple(
        k
        for k, v in (("open_positions", doc.open_positions), ("closed_positions", doc.closed_positions))
        if v is msgspec.UNSET
    )
    if missing:
        return Loaded(
            path, FileState.MALFORMED, f"lacks {', '.join(missing)}", missing_keys=missing, size=len(raw)
        ), None
    assert not isinstance(doc.open_positions, msgspec.UnsetType)
    assert not isinstance(doc.closed_positions, msgspec.UnsetType)
    try:
        counts = _tally_records(doc.closed_positions, today)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:  # invalid UTF-8 inside a record: not JSON at all
        return Loaded(path, FileState.CORRUPT, f"is not valid JSON ({e})", size=len(raw)), None
    return Loaded(path, FileState.OK, size=len(raw)), Positions(list(doc.open_positions), *counts)


def _load_memoised(raw: bytes, today: str, memo: ClosedMemo) -> Positions | None:
    """The positions of a sound file, decoding its closed list only if it differs from the memo's; None
    for anything else, which the full decode then judges (it alone says what is wrong, and how).

    The first pass checks the closed list as JSON syntax only (not its UTF-8, not its types), so it
    can accept a file the full decode rejects: only the closed list's own decode makes it sound.
    It is called from ``load_positions`` a frame deeper than the full decode, so a file nested too
    deep for that fails here first."""
    last = memo.last
    if last is not None and last[1] == today:
        open_positions = _open_before(raw, last[0])
        if open_positions is not None:
            return Positions(open_positions, *last[2])
    try:
        doc = _SPLIT_DECODER.decode(raw)
    except Exception:  # whatever it is, the full decode finds and names it
        return None
    closed = doc.closed_positions
    if isinstance(doc.open_positions, msgspec.UnsetType) or isinstance(closed, msgspec.UnsetType):
        return None
    # A repeated key: the full decode checks every copy, this pass only the last (`closed`). No key
    # lies in the final len(closed) bytes (its list, after it and before the closing brace, would be
    # shorter than `closed`), so one literal key before them and no backslash (an escaped key) is
    # no repeat.
    start = len(raw) - len(closed)
    if raw.find(b"\\", 0, start) != -1 or raw.count(_CLOSED_KEY, 0, start) != 1:
        return None
    if last is not None and last[1] == today and len(last[0]) == len(closed) and last[0] == bytes(closed):
        counts = last[2]
    else:
        memo.last = None  # the old bytes are of no more use: not held while this list decodes
        try:
            plain = _CLOSED_DECODER.decode(closed)
        except Exception:
            return None
        counts = _tally(plain, today)
        if len(closed) <= memo.MAX_BYTES:
            memo.last = (bytes(closed), today, counts)  # a copy: `closed` is a view into the whole file
    return Positions(list(doc.open_positions), *counts)


_WS = b" \t\r\n"


def _open_before(raw: bytes, closed: bytes) -> list[Any] | None:
    """The open positions of a file laid out as the bot writes it, ``{"open_positions": [...],
    "closed_positions": <closed>}``, where <closed> is byte-identical to the memo's: only the bytes
    before it are decoded (with ``[]`` in its place), not the megabytes of closed positions.

    Exact, not a guess: ``closed`` is one complete JSON value, so the file is valid exactly when the
    file with ``[]`` in its place is. That ``[]`` is the value of the top-level closed_positions key
    because the bytes before it end with that key and a colon (with no backslash before it, no string
    can hold a quote, so that is a key; and only a top-level key's value can be followed by the one
    closing brace that ends the file), and the key occurs once (no repeated key)."""
    end = len(raw)
    while end and raw[end - 1] in _WS:
        end -= 1
    if not end or raw[end - 1] != ord("}"):
        return None
    stop = end - 1
    while stop and raw[stop - 1] in _WS:
        stop -= 1
    start = stop - len(closed)
    if start <= 0 or not raw.startswith(closed, start):  # compared in place: a slice would copy megabytes
        return None
    head = raw[:start].rstrip(_WS)
    if not head.endswith(b":") or not head[:-1].rstrip(_WS).endswith(_CLOSED_KEY):
        return None
    if b"\\" in head or head.count(_CLOSED_KEY) != 1:
        return None
    try:
        doc = _SPLIT_DECODER.decode(head + b"[]" + raw[stop:])
    except Exception:  # the full decode finds and names what is wrong
        return None
    if isinstance(doc.open_positions, msgspec.UnsetType) or isinstance(doc.closed_positions, msgspec.UnsetType):
        return None
    if bytes(doc.closed_positions) != b"[]":
        return None
    return list(doc.open_positions)


def _classify_untyped(path: Path, raw: bytes, required: tuple[str, ...], why: str) -> Loaded:
    """The typed decode failed validation: say which structure is wrong, without a typed model."""
    try:
        obj = decode_any(raw)
    except msgspec.DecodeError as e:
        return Loaded(path, FileState.CORRUPT, f"is not valid JSON ({e})", size=len(raw))
    if not isinstance(obj, dict):
        return Loaded(path, FileState.MALFORMED, f"holds {type(obj).__name__}, not an object", missing_keys=required)
    missing = tuple(k for k in required if k not in obj)
    return Loaded(path, FileState.MALFORMED, f"has the wrong structure ({why})", data=obj, missing_keys=missing)


def load_json_object(path: Path, *, required: tuple[str, ...], max_bytes: int) -> Loaded:
    """Read a small JSON object file (portfolio, heartbeat, emergency stop)."""
    raw = _read(path, max_bytes)
    if isinstance(raw, Loaded):
        return raw
    if _is_empty(raw):
        return Loaded(path, FileState.EMPTY, "is empty", size=len(raw))
    try:
        obj = decode_any(raw)
    except msgspec.DecodeError as e:
        return Loaded(path, FileState.CORRUPT, f"is not valid JSON ({e})", size=len(raw))
    except RecursionError:
        return Loaded(path, FileState.UNREADABLE, "is nested too deep to read", size=len(raw))
    if not isinstance(obj, dict):
        return Loaded(path, FileState.MALFORMED, f"holds {type(obj).__name__}, not an object", missing_keys=required)
    missing = tuple(k for k in required if k not in obj)
    if missing:
        return Loaded(path, FileState.MALFORMED, f"lacks {', '.join(missing)}", data=obj, missing_keys=missing)
    return Loaded(path, FileState.OK, data=obj, size=len(raw))


def load_open_positions(path: Path, *, max_bytes: int) -> list[dict[str, Any]] | None:
    """Only the open positions of a positions file (another slot's), or None if unreadable."""
    try:
        raw = read_regular(path, max_bytes=max_bytes)
        return list(msgspec.json.decode(raw, type=_OpenOnlyDoc).open_positions)
    except (OSError, msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return None


def load_closed_ids(path: Path, *, max_bytes: int) -> set[str] | None:
    """The ids of the closed positions, or None if unreadable."""
    try:
        raw = read_regular(path, max_bytes=max_bytes)
        doc = msgspec.json.decode(raw, type=_ClosedIdsDoc)
    except (OSError, msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return None
    return {str(c.id) for c in doc.closed_positions if c.id is not None}


# Python's json module writes these for non-finite floats; strict JSON (and msgspec) has no such tokens.
_NON_FINITE = re.compile(rb"(?:-?Infinity|NaN)")


def decode_any(raw: bytes) -> Any:
    """Untyped decode of strict JSON, or of the dialect Python's ``json.dump`` writes (NaN, Infinity),
    so that a non-finite number is judged where it stands instead of condemning its whole file.
    Raise msgspec.DecodeError when neither parses."""
    try:
        return msgspec.json.decode(raw)
    except UnicodeDecodeError as e:  # msgspec's answer to invalid UTF-8 in a string: not JSON either
        raise msgspec.DecodeError(f"invalid UTF-8 ({e.reason} at byte {e.start})") from None
    except msgspec.DecodeError:
        if not _NON_FINITE.search(raw):
            raise
        try:
            return json.loads(raw)
        except ValueError:
            pass
        raise


def encode(obj: Any) -> bytes:
    """The bytes guardian writes for a JSON state file: indented like the bot's own saves."""
    return msgspec.json.format(msgspec.json.encode(obj), indent=2) + b"\n"
