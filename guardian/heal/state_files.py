"""STATE_FILE_MISSING / EMPTY / MALFORMED / CORRUPT for the positions and portfolio files.

The rule that comes first: never turn unknown into flat. A fresh or salvaged file is written only
when no open position (or balance) that the evidence shows can be lost by it. The evidence is the
newest good backup, what can be salvaged from the broken file, and the portfolio's count. Where it
would lose something, the remedy refuses with a CRITICAL STATE_UNRECOVERABLE for the operator.
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
from guardian.model import Finding, HealAction, Level, Outcome
from guardian.state import FileState, Loaded, decode_any, encode, load_json_object, load_positions


@dataclass(frozen=True)
class Plan:
    content: dict[str, Any] | None  # what to write; None with no refusal: the file is sound already
    detail: str
    refusal: str | None = None


def _read_raw(path: Path) -> bytes | None:
    try:
        return read_regular(path)
    except FileNotFoundError:
        return None


def _decode(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return decode_any(raw)
    except (msgspec.DecodeError, RecursionError):
        return None


_ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


def salvage_array(raw: bytes, key: str) -> tuple[list[Any], bool]:
    """The elements of ``"key": [...]`` that parse from a corrupt file, and whether the array closed."""
    text = raw.decode("utf-8", "surrogateescape")  # invalid bytes stay visible, never replaced
    m = re.search(rf'"{re.escape(key)}"\s*:\s*\[', text)
    if not m:
        return [], False
    dec = json.JSONDecoder()
    items: list[Any] = []
    i = m.end()
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text):
            return items, False
        if text[i] == "]":
            return items, True
        try:
            obj, end = dec.raw_decode(text, i)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json goes
            return items, False
        if _ESCAPED.search(text, i, end):  # invalid UTF-8 in it: it cannot be carried over unchanged
            return items, False
        items.append(obj)
        i = end


def _newest_good_positions(h: HealContext) -> tuple[Path, list[dict[str, Any]]] | None:
    for p in h.store.newest_for(h.ctx.positions_path):
        loaded, pos = load_positions(p, today=h.ctx.today, max_bytes=h.ctx.max_bytes)
        if pos is not None:
            return p, [x for x in pos.open if isinstance(x, dict)]
        if loaded.state is FileState.CORRUPT:  # e.g. the original a salvage kept: its open positions count
            raw = _read_raw(p)
            opens, whole = salvage_array(raw, "open_positions") if raw is not None else ([], False)
            if whole:
                return p, [x for x in opens if isinstance(x, dict)]
    return None


def plan_positions(h: HealContext, loaded: Loaded, raw: bytes | None) -> Plan:
    st = loaded.state
    if st is FileState.OK:
        return Plan(None, "sound")
    if st is FileState.UNREADABLE:
        return Plan(None, "", refusal=f"cannot read it ({loaded.detail})")
    how = {FileState.MISSING: "initialised", FileState.EMPTY: "initialised"}.get(st, "")
    candidate: dict[str, Any]
    open_intact = False  # the file's own open_positions are carried over whole
    if st in (FileState.MISSING, FileState.EMPTY):
        candidate = {"open_positions": [], "closed_positions": []}
    elif st is FileState.MALFORMED:
        obj = _decode(raw)
        if not isinstance(obj, dict):
            return Plan(None, "", refusal=f"it holds {type(obj).__name__}, not an object: its positions are unknown")
        for k in ("open_positions", "closed_positions"):
            if k in obj and not isinstance(obj[k], list):
                return Plan(None, "", refusal=f"{k} is {type(obj[k]).__name__}, not a list: its positions are unknown")
        candidate = {**obj, **{k: obj.get(k, []) for k in ("open_positions", "closed_positions")}}
        how = f"added missing {', '.join(k for k in ('open_positions', 'closed_positions') if k not in obj)}"
        open_intact = "open_positions" in obj
    else:  # CORRUPT
        assert raw is not None
        open_, open_closed = salvage_array(raw, "open_positions")
        closed, _ = salvage_array(raw, "closed_positions")
        if not open_closed:
            return Plan(None, "", refusal="it is corrupt and its open_positions cannot be salvaged whole")
        candidate = {"open_positions": open_, "closed_positions": closed}
        how = f"salvaged {len(open_)} open and {len(closed)} closed positions"
    keys = {
        position_key(p) for k in ("open_positions", "closed_positions") for p in candidate[k] if isinstance(p, dict)
    }
    n_open = len(candidate["open_positions"])
    if not open_intact:
        good = _newest_good_positions(h)
        if good:
            lost = [position_key(p) for p in good[1] if position_key(p) not in keys]
            if lost:
                return Plan(
                    None,
                    "",
                    refusal=f"the newest good backup {good[0].name} holds open position(s) "
                    f"{', '.join(lost[:5])} that the result would not",
                )
    pf = h.ctx.portfolio
    count = pf.data.get("open_positions_count") if pf.ok else None
    if isinstance(count, int) and count > n_open:
        return Plan(None, "", refusal=f"the portfolio counts {count} open position(s); the result would hold {n_open}")
    return Plan(candidate, how or "repaired")


def _may_hold_balance(backup: Path) -> bool:
    """An empty backup (a heal cut short after keeping an empty file) holds no balance to lose."""
    return load_json_object(backup, required=(), max_bytes=1 << 20).state not in (FileState.EMPTY, FileState.MISSING)


def plan_portfolio(h: HealContext, loaded: Loaded, raw: bytes | None) -> Plan:
    st = loaded.state
    if st is FileState.OK:
        return Plan(None, "sound")
    if st is FileState.UNREADABLE:
        return Plan(None, "", refusal=f"cannot read it ({loaded.detail})")
    # Fresh from disk: the positions remedy may have just rewritten the file.
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
    if balance is None:
        if st in (FileState.CORRUPT, FileState.MALFORMED):
            return Plan(None, "", refusal="its balance cannot be read or salvaged")
        if any(_may_hold_balance(b) for b in h.store.newest_for(h.ctx.portfolio_path)):
            return Plan(
                None,
                "",
                refusal="a backup of it exists: the balance is unknown, not zero; restore it "
                "(`guardian backups list`) or write the exchange's balance",
            )
        balance = 0.0
    if n_open is None:
        return Plan(None, "", refusal="the positions file is not sound, so the open position count is unknown")
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
        raw = _read_raw(path) if path.exists() else None
        if is_positions:
            loaded, _ = load_positions(path, today=ctx.today, max_bytes=ctx.max_bytes)
            return plan_positions(h, loaded, raw)
        return plan_portfolio(
            h, load_json_object(path, required=("balance", "open_positions_count"), max_bytes=ctx.max_bytes), raw
        )

    def refuse(why: str) -> HealAction:
        h.extra_findings.append(
            Finding(
                "STATE_UNRECOVERABLE",
                Level.CRITICAL,
                f.subject,
                f"{f.subject} is {f.code.removeprefix('STATE_FILE_').lower()} and was not repaired: {why}",
                action="reconcile with the exchange, then restore a backup (`guardian backups list`) or write the file by hand",
            )
        )
        return refused(f, why)

    if h.dry_run:
        p = plan()
        return refuse(p.refusal) if p.refusal else planned(f, f"{f.subject}: {p.detail}")
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
        atomic_write(path, data)
    stat = "files_created" if kept is None or f.code == "STATE_FILE_EMPTY" else "files_repaired"
    return HealAction(f, Outcome.HEALED, f"{f.subject}: {p.detail}", stat=stat, backups=(kept.id,) if kept else ())
