"""The open positions judged against each other and the portfolio: the dangerous findings that are
never auto-healed. Proves POSITIONS (every open and closed position read and judged) and PORTFOLIO
(the portfolio read, and agreeing with the positions)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from guardian.checks.base import ago, position_label, positive_number, unknown
from guardian.context import Context
from guardian.model import Fact, Finding, Level, Proof

_RECONCILE = "verify against the exchange and correct the state by hand"


def _crit(code: str, subject: str, message: str, **context: Any) -> Finding:
    return Finding(code, Level.CRITICAL, subject, message, action=_RECONCILE, context=context, concern=Fact.POSITIONS)


def _norm(value: object) -> object:
    """A symbol or direction as the exchange reads it: ``" btcusdt"`` is BTCUSDT, ``long`` is LONG."""
    return value.strip().upper() if isinstance(value, str) else value


def check(ctx: Context) -> Iterator[Finding | Proof]:
    _, positions = ctx.positions
    if positions is None:
        return  # the state-file check says why; nothing is proven
    open_ = positions.open
    yield from _portfolio(ctx, len(open_))
    groups: dict[tuple[object, object], list[str]] = defaultdict(list)
    ids: dict[str, int] = defaultdict(int)
    for i, p in enumerate(open_):
        if not isinstance(p, dict):
            yield _crit("POSITION_INVALID", f"position:#{i}", f"open position #{i} is not an object: {p!r:.60}")
            continue
        label = position_label(p, i)
        yield from _judge(ctx, p, label)
        key = (_norm(p.get("symbol")), _norm(p.get("direction")))
        if not any(isinstance(v, list | dict) for v in key):  # unhashable: POSITION_INVALID above says so
            groups[key].append(label)
        if p.get("id") is not None:
            ids[str(p["id"])] += 1
    for (symbol, direction), labels in groups.items():
        if len(labels) > 1:
            yield _crit(
                "POSITION_CONFLICT",
                f"{symbol}/{direction}",
                f"{len(labels)} open {direction} positions on {symbol}: {', '.join(labels)}",
                positions=",".join(labels),
            )
    for pid, n in ids.items():
        if n > 1:
            yield _crit("POSITION_CONFLICT", f"position:{pid}", f"id {pid} is used by {n} open positions")
    for pid in positions.also_closed:
        yield _crit(
            "POSITION_CONFLICT",
            f"position:{pid}",
            f"position {pid} is both open and closed: the bot may trade a position it already closed, or lost a close",
        )
    if positions.closed_unjudged:
        shown = "; ".join(positions.unjudged)
        yield unknown(
            ctx.rel(ctx.positions_path),
            f"{positions.closed_unjudged} of {positions.closed_count} closed position(s) cannot be judged "
            f"({shown}): any of them may hide today's loss or a duplicate",
            Level.CRITICAL,
            concern=Fact.POSITIONS,
            action="correct those records to the bot layout (pnl a number; closed_at ISO 8601 UTC or Unix seconds), "
            "from the exchange's trade history",
        )
        return
    yield Proof(Fact.POSITIONS, f"{len(open_)} open and {positions.closed_count} closed position(s) judged")


def _portfolio(ctx: Context, n_open: int) -> Iterator[Finding | Proof]:
    pf = ctx.portfolio
    if not pf.ok:
        return  # the state-file check says why
    count = pf.data.get("open_positions_count")
    if not (isinstance(count, int) and not isinstance(count, bool)) or count != n_open:
        yield Finding(
            "STATE_MISMATCH",
            Level.CRITICAL,
            ctx.rel(ctx.portfolio_path),
            f"portfolio says {count!r} open positions, positions file holds {n_open}",
            action=_RECONCILE,
            context={"portfolio_count": count, "positions_count": n_open},
            concern=Fact.PORTFOLIO,
        )
        return
    yield Proof(Fact.PORTFOLIO, f"portfolio counts {count} open, as the positions file holds")


def _opened_in_future(ctx: Context, opened: object) -> float | None:
    """How far in the future ``opened_at`` lies, in seconds, if it does beyond the clock skew."""
    if not isinstance(opened, str):
        return None
    try:
        moment = datetime.fromisoformat(opened)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ctx.now.tzinfo)  # the layout's times are UTC
    ahead = (moment - ctx.now).total_seconds()
    return ahead if ahead > ctx.cfg.thresholds.clock_skew else None


def _judge(ctx: Context, p: dict[str, Any], label: str) -> Iterator[Finding]:
    bad = [k for k in ("entry_price", "size") if not positive_number(p.get(k))]
    if p.get("direction") not in ("LONG", "SHORT"):
        bad.append("direction")
    if not isinstance(p.get("symbol"), str) or not p.get("symbol"):
        bad.append("symbol")
    lev = p.get("leverage", 1)
    if not positive_number(lev) or lev < 1:
        bad.append("leverage")
    if bad:
        shown = ", ".join(f"{k}={p.get(k)!r}" for k in bad)
        yield _crit("POSITION_INVALID", label, f"{label} has invalid {shown}", fields=",".join(bad))
    ahead = _opened_in_future(ctx, p.get("opened_at"))
    if ahead is not None:
        yield _crit(
            "POSITION_INVALID",
            label,
            f"{label} opened_at {p.get('opened_at')} is {ago(ahead)} in the future "
            f"(clock skew allowed {ago(ctx.cfg.thresholds.clock_skew)}): a bad clock or a bad writer",
            fields="opened_at",
        )
    if "leverage" not in bad and lev > ctx.cfg.limits.max_leverage:
        yield _crit(
            "LIMIT_LEVERAGE",
            label,
            f"{label} has leverage {lev:g}, above limits.max_leverage {ctx.cfg.limits.max_leverage:g}",
            leverage=lev,
            limit=ctx.cfg.limits.max_leverage,
        )
    stop = p.get("stop_loss")
    if ctx.cfg.limits.require_stop_loss and not positive_number(stop):
        yield _crit(
            "STOP_LOSS_MISSING",
            label,
            f"{label} ({p.get('symbol')} {p.get('direction')}) has no stop loss",
            stop_loss=stop,
        )
    elif positive_number(stop) and positive_number(p.get("entry_price")) and not ctx.cfg.limits.stop_loss_past_entry:
        entry, direction = p["entry_price"], p.get("direction")
        if (direction == "LONG" and stop >= entry) or (direction == "SHORT" and stop <= entry):
            where = "at or above" if direction == "LONG" else "at or below"
            yield _crit(
                "STOP_LOSS_WRONG_SIDE",
                label,
                f"{label} is {direction} at {entry:g} with its stop loss {stop:g} {where} the entry: "
                "it would close at once, or never protect it",
                stop_loss=stop,
                entry_price=entry,
            )
    yield from _partial_fill(p, label)


def _partial_fill(p: dict[str, Any], label: str) -> Iterator[Finding]:
    order = p.get("order")
    if not isinstance(order, dict):
        return
    status, qty, size = order.get("status"), order.get("qty"), p.get("size")
    if status == "partially_filled":
        yield _crit(
            "PARTIAL_FILL",
            label,
            f"{label} order is only partially filled (qty {qty!r} of size {size!r})",
            qty=qty,
            size=size,
        )
    elif (
        status == "filled"
        and positive_number(qty)
        and positive_number(size)
        and abs(float(qty) - float(size)) > 1e-9 * max(1.0, float(size))  # type: ignore[arg-type]
    ):
        yield _crit(
            "PARTIAL_FILL",
            label,
            f"{label} order is marked filled for {qty} but the position size is {size}",
            qty=qty,
            size=size,
        )
