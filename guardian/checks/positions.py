"""The open positions judged against each other and the portfolio: the dangerous findings that are
never auto-healed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from guardian.checks.base import position_label, positive_number
from guardian.context import Context
from guardian.model import Finding, Level

_RECONCILE = "verify against the exchange and correct the state by hand"


def _crit(code: str, subject: str, message: str, **context: Any) -> Finding:
    return Finding(code, Level.CRITICAL, subject, message, action=_RECONCILE, context=context)


def check(ctx: Context) -> Iterator[Finding]:
    _, positions = ctx.positions
    if positions is None:
        return
    open_ = positions.open
    pf = ctx.portfolio
    if pf.ok:
        count = pf.data.get("open_positions_count")
        if not (isinstance(count, int) and not isinstance(count, bool)) or count != len(open_):
            yield _crit(
                "STATE_MISMATCH",
                ctx.rel(ctx.portfolio_path),
                f"portfolio says {count!r} open positions, positions file holds {len(open_)}",
                portfolio_count=count,
                positions_count=len(open_),
            )
    groups: dict[tuple[Any, Any], list[str]] = defaultdict(list)
    ids: dict[str, int] = defaultdict(int)
    for i, p in enumerate(open_):
        if not isinstance(p, dict):
            yield _crit("POSITION_INVALID", f"position:#{i}", f"open position #{i} is not an object: {p!r:.60}")
            continue
        label = position_label(p, i)
        yield from _judge(ctx, p, label)
        key = (p.get("symbol"), p.get("direction"))
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
    if ctx.cfg.limits.require_stop_loss and not positive_number(p.get("stop_loss")):
        yield _crit(
            "STOP_LOSS_MISSING",
            label,
            f"{label} ({p.get('symbol')} {p.get('direction')}) has no stop loss",
            stop_loss=p.get("stop_loss"),
        )
    order = p.get("order")
    if isinstance(order, dict):
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
