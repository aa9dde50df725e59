"""STATE_FILE_MISSING / EMPTY / MALFORMED / CORRUPT for the positions and portfolio files.

The rule that comes first: never turn unknown into flat.

- A fresh file (no positions, balance 0) is written only on a true cold start: no trace of an
  earlier life anywhere (``heal/evidence.py``).
- A salvaged or completed file must keep every open position that any evidence shows: the newest
  good backup, the portfolio's count (read from a torn portfolio too). A file whose open positions
  cannot be read whole is never rewritten.
- Salvage keeps every closed position it can and says how many it could not. If one may be lost,
  the day's loss is unknown: the emergency stop is set (before the file is rewritten) until an
  operator confirms with ``guardian clear-stop``; the lost bytes stay in the backup.

Where a repair would lose something, it refuses with a CRITICAL STATE_UNRECOVERABLE.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from guardian.alerts import iso
from guardian.checks.base import finite_number, position_key
from guardian.fsutil import atomic_write, bot_lock, read_regular
from guardian.heal.base import HealContext, planned, refused
from guardian.heal.evidence import earlier_life, portfolio_count
from guardian.model import Fact, Finding, HealAction, Level, Outcome
from guardian.state import FileState, Loaded, decode_any, encode, load_json_object, load_positions


@dataclass(frozen=True)
class Plan:
    content: dict[str, Any] | None  # what to write; None with no refusal: the file is sound already
    detail: str
    refusal: str | None = None
    # Set the emergency stop with this reason before writing: the repair leaves the day's loss unknown.
    stop: str | None = None


def _read_raw(path: Path) -> bytes | None:
    try:
        return read_regular(path)
    except FileNotFoundError:  # gone since it was judged: the plan refuses what it cannot see
        return None


def _decode(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return decode_any(raw)
    except (msgspec.DecodeError, RecursionError):
        return None


_ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8
_NEXT_RECORD = re.compile(rb",\s*(?=\{)")
_DEC = json.JSONDecoder()


class _Text:
    """A large byte buffer read as JSON text through a window moving forward, so salvage holds the
    file once, not once more as decoded text. Offsets in and out are byte offsets into ``raw``;
    invalid UTF-8 stays visible (surrogateescape), never replaced."""

    WINDOW = 4 << 20
    MAX_WINDOW = 64 << 20  # no position record is larger: one that does not parse within this is broken

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.start = self.stop = 0  # the window, in bytes
        self.text = ""
        self.mark = (0, 0)  # a (byte, char) pair inside the window, moved forward as offsets are mapped

    def _load(self, at: int, size: int) -> None:
        end = min(len(self.raw), at + size)
        while end < len(self.raw) and (self.raw[end] & 0xC0) == 0x80:  # never split a UTF-8 sequence
            end -= 1
        self.text = self.raw[at:end].decode("utf-8", "surrogateescape")
        self.start, self.stop, self.mark = at, end, (at, 0)

    def _char(self, at: int) -> int:
        b, c = self.mark if self.mark[0] <= at else (self.start, 0)
        c += len(self.raw[b:at].decode("utf-8", "surrogateescape"))
        self.mark = (at, c)
        return c

    def _byte(self, char: int) -> int:
        b, c = self.mark if self.mark[1] <= char else (self.start, 0)
        b += len(self.text[c:char].encode("utf-8", "surrogateescape"))
        self.mark = (b, char)
        return b

    def value_at(self, at: int) -> tuple[Any, int]:
        """The JSON value at byte ``at`` and the byte after it. Raise ValueError when none parses there
        (or it holds invalid UTF-8: it could not be carried over unchanged)."""
        size = self.WINDOW
        if not (self.start <= at < self.stop and (self.stop == len(self.raw) or self.stop - at >= size // 4)):
            self._load(at, size)
        while True:
            off = self._char(at)
            try:
                obj, end = _DEC.raw_decode(self.text, off)
            except ValueError:
                if self.stop == len(self.raw) or (self.start == at and size >= self.MAX_WINDOW):
                    raise
                size = min(size * 4, self.MAX_WINDOW) if self.start == at else size
                self._load(at, size)  # it may only run past the window: try with it at the window's start
                continue
            except RecursionError:  # nested deeper than json goes
                raise ValueError("nested too deep") from None
            if _ESCAPED.search(self.text, off, end):
                raise ValueError("invalid UTF-8")
            return obj, self._byte(end)


@dataclass(frozen=True)
class Salvage:
    """What could be read of ``"key": [...]`` in a corrupt file."""

    items: list[Any]
    found: bool  # the key and its opening bracket were there
    closed: bool  # the array reached its closing bracket
    skipped: tuple[tuple[int, int], ...] = ()  # byte ranges inside it that no element could be read from
    tail: int = 0  # bytes after the last element read, when the array never closed
    tail_ids: int = 0  # `"id"` keys among them: records at least partly there

    @property
    def whole(self) -> bool:
        return self.found and self.closed and not self.skipped

    def lost(self) -> str | None:
        """What may be lost, for the operator; None when every element was kept."""
        if self.whole:
            return None
        if not self.found:
            return "the list itself cannot be found"
        parts = []
        if self.skipped:
            n = sum(b - a for a, b in self.skipped)
            parts.append(f"{n} unreadable byte(s) in {len(self.skipped)} place(s) between records")
        if not self.closed:
            more = f", holding at least {self.tail_ids} more record(s)" if self.tail_ids else ""
            parts.append(f"the list is cut off after the last record read ({self.tail} byte(s) left{more})")
        return "; ".join(parts)


def _looks_like_position(obj: object) -> bool:
    return isinstance(obj, dict) and ("id" in obj or ("symbol" in obj and "direction" in obj))


def salvage_array(raw: bytes, key: str, *, resync: bool = False) -> Salvage:
    """The elements of ``"key": [...]`` that parse from a corrupt file. With ``resync``, reading goes
    on past an element that does not parse, at the next ``, {`` that starts a position object, and
    the bytes skipped are reported; without it, reading stops there."""
    m = re.search(rb'"' + re.escape(key.encode()) + rb'"\s*:\s*\[', raw)
    if not m:
        return Salvage([], found=False, closed=False)
    text = _Text(raw)
    items: list[Any] = []
    skipped: list[tuple[int, int]] = []
    i, n = m.end(), len(raw)
    while True:
        while i < n and raw[i] in b" \t\r\n,":
            i += 1
        if i >= n:
            return Salvage(items, True, False, tuple(skipped))
        if raw[i] == ord("]"):
            return Salvage(items, True, True, tuple(skipped))
        try:
            obj, end = text.value_at(i)
        except ValueError:
            nxt = _resync(text, i) if resync else None
            if nxt is None:
                return Salvage(items, True, False, tuple(skipped), tail=n - i, tail_ids=raw.count(b'"id"', i))
            skipped.append((i, nxt))
            i = nxt
            continue
        items.append(obj)
        i = end


def _resync(text: _Text, start: int) -> int | None:
    """Where the next readable position object after ``start`` begins, or None."""
    raw = text.raw
    for m in _NEXT_RECORD.finditer(raw, start):
        j = m.end()
        try:
            obj, end = text.value_at(j)
        except ValueError:
            continue
        rest = raw[end : end + 64].lstrip(b" \t\r\n")
        if _looks_like_position(obj) and rest[:1] in (b",", b"]"):
            return j
    return None


def _newest_good_positions(h: HealContext) -> tuple[Path, list[dict[str, Any]]] | None:
    for p in h.store.newest_for(h.ctx.positions_path):
        loaded, pos = load_positions(p, today=h.ctx.today, max_bytes=h.ctx.max_bytes)
        if pos is not None:
            return p, [x for x in pos.open if isinstance(x, dict)]
        if loaded.state is FileState.CORRUPT:  # e.g. the original a salvage kept: its open positions count
            raw = _read_raw(p)
            s = salvage_array(raw, "open_positions") if raw is not None else None
            if s is not None and s.whole:
                return p, [x for x in s.items if isinstance(x, dict)]
    return None


_STOP_FOR_LOSS = (
    "guardian repaired {file} but {lost}: the day's realised loss is unknown. Check today's trades on the "
    "exchange (the lost bytes are in backup {backup}), then `guardian clear-stop --approver NAME`"
)


def _cold_start(h: HealContext, path: Path, what: str) -> Plan:
    traces = earlier_life(h, about=path)
    if traces:
        shown = "; ".join(traces[:3]) + (f"; +{len(traces) - 3} more" if len(traces) > 3 else "")
        return Plan(None, "", refusal=f"not a cold start, so not created {what}: {shown}")
    return Plan({}, f"initialised {what} (cold start: no WAL, backup, alert log, gate history or other state file)")


def plan_positions(h: HealContext, loaded: Loaded, raw: bytes | None) -> Plan:
    st = loaded.state
    if st is FileState.OK:
        return Plan(None, "sound")
    if st is FileState.UNREADABLE:
        return Plan(None, "", refusal=f"cannot read it ({loaded.detail})")
    candidate: dict[str, Any]
    stop: str | None = None
    if st in (FileState.MISSING, FileState.EMPTY):
        cold = _cold_start(h, h.ctx.positions_path, "flat")
        if cold.refusal:
            return cold
        return Plan({"open_positions": [], "closed_positions": []}, cold.detail)
    if st is FileState.MALFORMED:
        obj = _decode(raw)
        if not isinstance(obj, dict):
            return Plan(None, "", refusal=f"it holds {type(obj).__name__}, not an object: its positions are unknown")
        for k in ("open_positions", "closed_positions"):
            if k in obj and not isinstance(obj[k], list):
                return Plan(None, "", refusal=f"{k} is {type(obj[k]).__name__}, not a list: its positions are unknown")
        if "open_positions" not in obj:
            return Plan(None, "", refusal="it has no open_positions: its open positions are unknown, not none")
        candidate = {**obj, "closed_positions": obj.get("closed_positions", [])}
        how = "added the missing closed_positions"
        if "closed_positions" not in obj:
            stop = "it had no closed_positions, so today's closed positions are unknown"
    else:  # CORRUPT
        if raw is None:
            return Plan(None, "", refusal="it went away while it was read")
        open_ = salvage_array(raw, "open_positions")
        if not open_.whole:
            return Plan(None, "", refusal="it is corrupt and its open_positions cannot be salvaged whole")
        closed = salvage_array(raw, "closed_positions", resync=True)
        candidate = {"open_positions": open_.items, "closed_positions": closed.items}
        how = f"salvaged {len(open_.items)} open and {len(closed.items)} closed positions"
        if (lost := closed.lost()) is not None:
            stop = f"closed positions may be lost ({lost})"
            how += f"; closed positions may be lost: {lost}"
    keys = {
        position_key(p) for k in ("open_positions", "closed_positions") for p in candidate[k] if isinstance(p, dict)
    }
    n_open = len(candidate["open_positions"])
    good = _newest_good_positions(h)
    if good:
        lost_open = [position_key(p) for p in good[1] if position_key(p) not in keys]
        if lost_open:
            return Plan(
                None,
                "",
                refusal=f"the newest good backup {good[0].name} holds open position(s) "
                f"{', '.join(lost_open[:5])} that the result would not",
            )
    count = portfolio_count(h, h.ctx.portfolio_path)
    if count is not None and count > n_open:
        return Plan(None, "", refusal=f"the portfolio counts {count} open position(s); the result would hold {n_open}")
    return Plan(candidate, how, stop=stop)


def plan_portfolio(h: HealContext, loaded: Loaded, raw: bytes | None) -> Plan:
    st = loaded.state
    if st is FileState.OK:
        return Plan(None, "sound")
    if st is FileState.UNREADABLE:
        return Plan(None, "", refusal=f"cannot read it ({loaded.detail})")
    # Fresh from disk: the positions remedy may have just rewritten the file (or, in a dry run, planned to).
    n_open: int | None
    if h.planned_positions is not None:
        n_open = len(h.planned_positions["open_positions"])
    else:
        _, positions = load_positions(h.ctx.positions_path, today=h.ctx.today, max_bytes=h.ctx.max_bytes)
        n_open = len(positions.open) if positions is not None else None
    obj = _decode(raw) if st is FileState.MALFORMED else None
    balance: Any = None
    # A finite number only: true, NaN, 1e999 or a 400-digit integer is no balance (and would be written as null).
    if isinstance(obj, dict) and finite_number(obj.get("balance")):
        balance = obj["balance"]
    elif st is FileState.CORRUPT and raw is not None:
        m = re.search(rb'"balance"\s*:\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)', raw)
        balance = float(m.group(1)) if m and finite_number(float(m.group(1))) else None
    if n_open is None:
        return Plan(None, "", refusal="the positions file is not sound, so the open position count is unknown")
    if balance is None:
        if st in (FileState.CORRUPT, FileState.MALFORMED):
            return Plan(None, "", refusal="its balance cannot be read or salvaged")
        cold = _cold_start(h, h.ctx.portfolio_path, "with balance 0")
        if cold.refusal:
            return Plan(
                None, "", refusal=f"{cold.refusal}. The balance is unknown, not zero: restore a backup "
                "(`guardian backups list`) or write the exchange's balance"
            )  # fmt: skip
        balance = 0.0
    content = {**(obj if isinstance(obj, dict) else {}), "balance": balance, "open_positions_count": n_open}
    content.setdefault("updated_at", iso(h.ctx.now).replace(".000Z", "Z"))
    how = (
        "initialised (balance 0: cold start)"
        if st in (FileState.MISSING, FileState.EMPTY)
        else f"repaired (balance {balance})"
    )
    return Plan(content, how)


def heal_state_file(h: HealContext, f: Finding) -> HealAction:
    ctx = h.ctx
    is_positions = f.subject == ctx.rel(ctx.positions_path)
    path = ctx.positions_path if is_positions else ctx.portfolio_path

    def plan() -> Plan:
        # The file is judged first and its bytes read again only where a repair needs them: a huge
        # corrupt file is held once at a time, not twice.
        if is_positions:
            loaded, _ = load_positions(path, today=ctx.today, max_bytes=ctx.max_bytes)
        else:
            loaded = load_json_object(path, required=("balance", "open_positions_count"), max_bytes=ctx.max_bytes)
        raw = _read_raw(path) if loaded.state in (FileState.CORRUPT, FileState.MALFORMED) else None
        return plan_positions(h, loaded, raw) if is_positions else plan_portfolio(h, loaded, raw)

    def refuse(why: str) -> HealAction:
        h.extra_findings.append(
            Finding(
                "STATE_UNRECOVERABLE",
                Level.CRITICAL,
                f.subject,
                f"{f.subject} is {f.code.removeprefix('STATE_FILE_').lower()} and was not repaired: {why}",
                action="reconcile with the exchange, then restore a backup (`guardian backups list`) or write the file by hand",
                concern=Fact.POSITIONS if is_positions else Fact.PORTFOLIO,
            )
        )
        return refused(f, why)

    if h.dry_run:
        p = plan()
        if p.refusal:
            return refuse(p.refusal)
        if is_positions and p.content is not None:
            h.planned_positions = p.content
        then = "; then the emergency stop is set until an operator confirms" if p.stop else ""
        return planned(f, f"{f.subject}: {p.detail}{then}")
    with bot_lock(path, timeout=h.lock_timeout, soft=h.soft_locks):
        p = plan()  # again, under the lock: the bot may have written it meanwhile
        if p.refusal:
            return refuse(p.refusal)
        if p.content is None:
            return HealAction(f, Outcome.HEALED, f"{f.subject} was sound when re-read under its lock")
        try:
            data = encode(p.content)
        except UnicodeEncodeError:  # a lone surrogate ("\\ud800") that Python's json let through
            return refuse("it holds text that is not valid Unicode: it cannot be written back as it was")
        kept = h.store.keep(path, f.code.removeprefix("STATE_FILE_").lower(), now=ctx.now) if path.exists() else None
        detail = f"{f.subject}: {p.detail}"
        if p.stop:
            # Before the rewrite: if the stop cannot be set, the file stays as it was (and kept).
            from guardian.stop import set_stop

            where = kept.id if kept else "none"
            set_stop(ctx, _STOP_FOR_LOSS.format(file=f.subject, lost=p.stop, backup=where), by="guardian", now=ctx.now)
            detail += "; the emergency stop is set until an operator confirms the day's loss"
        atomic_write(path, data)
    stat = "files_created" if kept is None or f.code == "STATE_FILE_EMPTY" else "files_repaired"
    return HealAction(f, Outcome.HEALED, detail, stat=stat, backups=(kept.id,) if kept else ())
