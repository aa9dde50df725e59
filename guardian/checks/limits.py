"""The safety controller's limits, as percentages of the current balance, and the kill switch."""

from __future__ import annotations

from collections.abc import Iterator

from guardian.checks.base import finite_number, position_label, positive_number, unknown
from guardian.context import Context
from guardian.model import Fact, Finding, Level, Proof
from guardian.state import FileState, load_json_object


def check_limits(ctx: Context) -> Iterator[Finding | Proof]:
    """The safety controller's limits; proves LIMITS once every open position and the day's closed
    ones were measured against a readable balance."""
    _, positions = ctx.positions
    pf = ctx.portfolio
    if positions is None or not pf.ok:
        return  # the state-file check reports why; limits need both, so nothing is proven
    balance = pf.data.get("balance")
    if not finite_number(balance):
        yield unknown(
            ctx.rel(ctx.portfolio_path),
            f"balance is {balance!r}, not a number: limits cannot be checked",
            concern=Fact.LIMITS,
        )
        return
    lim = ctx.cfg.limits
    max_notional = balance * lim.max_position_pct / 100
    for i, p in enumerate(positions.open):
        if not isinstance(p, dict) or not (positive_number(p.get("size")) and positive_number(p.get("entry_price"))):
            continue  # POSITION_INVALID covers it
        notional = float(p["size"]) * float(p["entry_price"])
        if notional > max_notional + 1e-9:
            label = position_label(p, i)
            yield Finding(
                "LIMIT_POSITION_SIZE",
                Level.CRITICAL,
                label,
                f"{label} notional ${notional:,.2f} exceeds {lim.max_position_pct:g}% of balance (${max_notional:,.2f})",
                action="reduce or close the position",
                context={"notional": round(notional, 2), "limit": round(max_notional, 2)},
                concern=Fact.LIMITS,
            )
    if len(positions.open) > lim.max_open_positions:
        yield Finding(
            "LIMIT_OPEN_POSITIONS",
            Level.CRITICAL,
            ctx.rel(ctx.positions_path),
            f"{len(positions.open)} open positions, limit is {lim.max_open_positions}",
            action="close positions",
            concern=Fact.LIMITS,
        )
    loss = -positions.today_pnl
    max_loss = balance * lim.max_daily_loss_pct / 100
    if loss > max_loss + 1e-9:
        yield Finding(
            "LIMIT_DAILY_LOSS",
            Level.CRITICAL,
            ctx.rel(ctx.positions_path),
            f"realised loss today (UTC {ctx.today}) ${loss:,.2f} exceeds {lim.max_daily_loss_pct:g}% of balance (${max_loss:,.2f})",
            action="stop trading for the day",
            context={"loss": round(loss, 2), "limit": round(max_loss, 2)},
            concern=Fact.LIMITS,
        )
    if positions.closed_unjudged:
        return  # the positions check names the records; the day's loss is not known, so not proven
    yield Proof(
        Fact.LIMITS,
        f"{len(positions.open)} open position(s) measured against balance {balance:,.2f}; "
        f"today's realised P&L {positions.today_pnl:+,.2f} (limit -{max_loss:,.2f})",
    )


def check_emergency_stop(ctx: Context) -> Iterator[Finding | Proof]:
    loaded = load_json_object(ctx.stop_path, required=("active",), max_bytes=1 << 20)
    subject = ctx.rel(ctx.stop_path)
    if loaded.state is FileState.MISSING:
        yield Proof(Fact.EMERGENCY_STOP, f"no {subject}: the kill switch was never set")
        return
    active = loaded.data.get("active") if loaded.ok else None
    if not loaded.ok or not isinstance(active, bool):
        why = loaded.detail if not loaded.ok else f"has active={active!r}"
        yield unknown(
            subject, f"{subject} {why}: cannot tell whether the emergency stop is active", concern=Fact.EMERGENCY_STOP
        )
    elif not active:
        yield Proof(Fact.EMERGENCY_STOP, f"{subject} is inactive")
    else:
        yield Finding(
            "EMERGENCY_STOP_ACTIVE",
            Level.CRITICAL,
            subject,
            f"emergency stop is active since {loaded.data.get('since', '?')}: {loaded.data.get('reason', 'no reason given')}",
            action="investigate, then `guardian clear-stop --approver NAME`",
            context={"reason": loaded.data.get("reason"), "since": loaded.data.get("since")},
            concern=Fact.EMERGENCY_STOP,
        )
