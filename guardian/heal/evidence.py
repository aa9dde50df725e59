"""Traces of an earlier life of the bot: what must all be absent before guardian starts it flat.

A missing or empty positions file (or portfolio) may be created fresh only on a true cold start.
Any of these says the bot has lived before, so its positions and balance are unknown, not zero:
an entry in the WAL, a backup of the state files, an alert log that records an allowed start or an
open position, guardian's own record of an allowed start, or a readable fragment of the other state
file. Each trace is a sentence for the operator; something that cannot be read counts as a trace,
since it may hold one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec

from guardian.alerts.jsonl import rotated_path
from guardian.fsutil import read_regular
from guardian.heal.base import HealContext
from guardian.history import HistoryUnreadable, read_history, state_dir
from guardian.state import FileState, load_json_object, load_positions

# What a line of the alert log says about a past life: the bot was allowed to start, or it held
# (or could have held) positions. Findings of a cold start itself (a missing file) are no trace.
_LIFE_CODES = frozenset(
    {
        "GATE_ALLOWED",
        "STATE_MISMATCH",
        "POSITION_CONFLICT",
        "POSITION_INVALID",
        "PARTIAL_FILL",
        "STOP_LOSS_MISSING",
        "STOP_LOSS_WRONG_SIDE",
        "LIMIT_POSITION_SIZE",
        "LIMIT_OPEN_POSITIONS",
        "LIMIT_DAILY_LOSS",
        "LIMIT_LEVERAGE",
        "WAL_INCOMPLETE",
        "SLOT_STATE_DIVERGED",
        "EMERGENCY_STOP_ACTIVE",
    }
)
_ALERT_LOG_CAP = 64 << 20  # per file: the log rotates at alerts.jsonl_max_mb (10 MB by default)


class _Line(msgspec.Struct):
    code: str = ""
    event: str = ""
    ts: str = ""
    context: dict[str, object] = msgspec.field(default_factory=dict)


def earlier_life(h: HealContext, *, about: Path) -> list[str]:
    """Every trace of an earlier life, as sentences; empty only on a true cold start. ``about`` is the
    state file to be created: its own backups and its partner file are looked at, not itself."""
    ctx = h.ctx
    traces: list[str] = []
    traces += _wal(h)
    for path in (ctx.positions_path, ctx.portfolio_path):
        kept = [b for b in h.store.newest_for(path) if not _empty_file(b)]
        if kept:
            traces.append(f"{len(kept)} backup(s) of {ctx.rel(path)} in {ctx.rel(h.store.dir)} (newest {kept[0].name})")
    partner = ctx.portfolio_path if about == ctx.positions_path else ctx.positions_path
    traces += _partner(h, partner)
    traces += _alert_log(h)
    traces += _gate_history(h)
    return traces


def _empty_file(path: Path) -> bool:
    try:
        return not read_regular(path, max_bytes=64).strip(b" \t\r\n{}")
    except OSError:
        return False  # too large to be empty, or unreadable: it may hold something


def _wal(h: HealContext) -> list[str]:
    path = h.ctx.wal_path
    try:
        raw = read_regular(path, max_bytes=h.ctx.max_bytes)
    except FileNotFoundError:
        return []
    except OSError as e:
        return [f"{h.ctx.rel(path)} cannot be read ({e.strerror or e}): it may record positions"]
    entries = sum(1 for line in raw.splitlines() if line.strip())
    return [f"{h.ctx.rel(path)} records {entries} operation line(s)"] if entries else []


def _partner(h: HealContext, path: Path) -> list[str]:
    """The other state file: a positions file holding any position, or a portfolio with anything in it."""
    rel = h.ctx.rel(path)
    if path == h.ctx.positions_path:
        loaded, positions = load_positions(path, today=h.ctx.today, max_bytes=h.ctx.max_bytes)
        if loaded.state in (FileState.MISSING, FileState.EMPTY):
            return []
        if positions is None:
            return [f"{rel} exists ({loaded.state.value}: {loaded.detail})"]
        if positions.open or positions.closed_count:
            return [f"{rel} holds {len(positions.open)} open and {positions.closed_count} closed position(s)"]
        return []
    loaded = load_json_object(path, required=(), max_bytes=h.ctx.max_bytes)
    if loaded.state in (FileState.MISSING, FileState.EMPTY):
        return []
    count = portfolio_count(h, path)
    counted = f"; it counts {count} open position(s)" if count is not None else ""
    return [f"{rel} exists ({loaded.state.value}{counted})"]


def portfolio_count(h: HealContext, path: Path) -> int | None:
    """The portfolio's ``open_positions_count``, from a sound file or salvaged from a torn one."""
    import re

    loaded = load_json_object(path, required=(), max_bytes=h.ctx.max_bytes)
    if loaded.ok:
        count = loaded.data.get("open_positions_count")
        return count if isinstance(count, int) and not isinstance(count, bool) else None
    try:
        raw = read_regular(path, max_bytes=h.ctx.max_bytes)
    except OSError:
        return None
    m = re.search(rb'"open_positions_count"\s*:\s*(\d{1,9})\b', raw)
    return int(m.group(1)) if m else None


def _alert_log(h: HealContext) -> list[str]:
    ctx = h.ctx
    decoder = msgspec.json.Decoder(_Line)
    files = [ctx.alerts_path, *(rotated_path(ctx.alerts_path, n) for n in range(1, ctx.cfg.alerts.jsonl_keep + 1))]
    for path in files:
        try:
            raw = read_regular(path, max_bytes=_ALERT_LOG_CAP)
        except FileNotFoundError:
            continue
        except OSError as e:
            return [f"the alert log {ctx.rel(path)} cannot be read ({e.strerror or e}): it may record a life"]
        for line in raw.splitlines():
            try:
                doc = decoder.decode(line)
            except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
                continue  # torn or foreign: the reader skips it too
            held = doc.context.get("open_positions")
            if doc.code in _LIFE_CODES or (isinstance(held, int) and not isinstance(held, bool) and held > 0):
                return [f"the alert log {ctx.rel(path)} records {doc.code} at {doc.ts}"]
    return []


def _gate_history(h: HealContext) -> list[str]:
    directory = state_dir(h.ctx.cfg)
    try:
        history = read_history(directory)
    except HistoryUnreadable as e:
        return [f"guardian's gate history cannot be read ({e}): earlier starts cannot be ruled out"]
    if history.lost:
        return [f"guardian's gate history was lost ({history.lost}): earlier starts cannot be ruled out"]
    if history.allowed:
        t = history.last_allowed_t
        when = f", the last at {datetime.fromtimestamp(t, UTC):%Y-%m-%dT%H:%M:%SZ}" if t else ""
        return [f"guardian's gate history in {directory} records {history.allowed} allowed start(s){when}"]
    return []
