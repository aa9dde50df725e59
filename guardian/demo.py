"""Build realistic trading-bot trees, laid out as docs/bot-layout.md describes.

Used by the tests, the benchmark and the README demo, so it imports only the
standard library and writes even a million closed positions in seconds.

    python -m guardian.demo HOME [--closed N] [--mode paper|real] [--config PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = ["BotTree", "build_bot_tree", "default_open_position", "iso_z", "main", "write_config"]

CURRENT_LINK = "trading-bot-current"
REQUIRED_DIRS = ("config", "configs", "data", "feature_store", "state", "state/heartbeats", "logs/backups")
# Linux allocates pids below pid_max, itself at most 2**22: no process can hold this one.
DEAD_PID = 2**22
RUN_PY = "import time\nwhile True: time.sleep(1)\n"
LIVE_CONFIG = {"mode": "paper", "max_position_pct": 5}
ASSET_UNIVERSE = ["BTCUSDT", "ETHUSDT"]

_CLOSED_WINDOW = 60 * 86400
_CHUNK_ROWS = 20_000
# One closed position, about 420 bytes: the keys the layout requires plus the bookkeeping a real
# bot keeps beside them. Formatted with % because json.dumps of a million dicts is ~10x slower.
_CLOSED_ROW = (
    '{"id": "pos-%09d", "symbol": "%s", "direction": "%s", "entry_price": %.2f, "size": %s, '
    '"leverage": 1, "stop_loss": %.2f, "take_profit": %.2f, "opened_at": "%s", '
    '"order": {"status": "filled", "qty": %s}, '
    '"exit_price": %.2f, "closed_at": "%s", "pnl": %.2f, "fees": %.2f, "strategy": "%s", '
    '"exit_reason": "%s", "notes": "%s"}'
)
# (symbol, typical price, size as written): notionals of $400-$470, under 5% of the default balance.
_MARKETS = (("BTCUSDT", 50_000.0, "0.008"), ("ETHUSDT", 3_000.0, "0.15"))
_STRATEGIES = ("momentum_v3", "mean_reversion_v2", "breakout_v1")
_NOTES = ("auto-closed by strategy", "closed on signal; no slippage", "exit filled at market")
_FEE_RATE = 0.0004


@dataclass(frozen=True)
class BotTree:
    """Where a built tree lives. State paths hang off `data`, as guardian's defaults do."""

    home: Path
    slots_dir: Path
    current_link: Path
    current_slot: Path
    data: Path

    @property
    def positions(self) -> Path:
        return self.data / "logs" / "positions_futures.json"

    @property
    def portfolio(self) -> Path:
        return self.data / "logs" / "portfolio_futures.json"

    @property
    def alerts(self) -> Path:
        return self.data / "logs" / "operator_alerts.jsonl"

    @property
    def backups(self) -> Path:
        return self.data / "logs" / "backups"

    @property
    def heartbeats(self) -> Path:
        return self.data / "state" / "heartbeats"

    @property
    def wal(self) -> Path:
        return self.data / "state" / "wal" / "operations.wal"

    @property
    def emergency_stop(self) -> Path:
        return self.data / "state" / "emergency_stop.json"


def iso_z(moment: datetime) -> str:
    """Return `moment` as ISO 8601 UTC with a `Z`, to the second (naive means UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def default_open_position(now: datetime, **overrides: Any) -> dict[str, Any]:
    """Return the healthy open position a default tree holds, with `overrides` applied."""
    position: dict[str, Any] = {
        "id": "pos-open-000001",
        "symbol": "BTCUSDT",
        "direction": "LONG",
        "entry_price": 50000.0,
        "size": 0.01,
        "leverage": 1,
        "stop_loss": 49000.0,
        "opened_at": iso_z(now - timedelta(hours=1)),
        "order": {"status": "filled", "qty": 0.01},
    }
    position.update(overrides)
    return position


def build_bot_tree(
    home: Path,
    *,
    slots: Sequence[str] = ("blue", "green"),
    current: str = "green",
    deployed: str | None = "green",
    open_positions: Sequence[Mapping[str, Any]] | None = None,
    closed: int = 0,
    balance: float = 10625.05,
    now: datetime | None = None,
    heartbeat_components: Sequence[str] = ("bot_cycle",),
    with_wal: bool = True,
) -> BotTree:
    """Build a healthy bot tree under `home` and return its paths.

    Open positions are written as given, so a test can plant a broken one. State goes to the
    current slot, the layout's default data root. Raise ValueError if `current` is not in `slots`.
    """
    if current not in slots:
        raise ValueError(f"current slot {current!r} is not one of {list(slots)}")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    slots_dir = home / "slots"
    for name in slots:
        _write_slot(slots_dir / name)
    link = home / CURRENT_LINK
    link.symlink_to(Path("slots") / current)
    if deployed is not None:
        (home / "DEPLOYED_SLOT").write_text(f"{deployed}\n", encoding="utf-8")
    tree = BotTree(
        home=home,
        slots_dir=slots_dir,
        current_link=link,
        current_slot=slots_dir / current,
        data=link,
    )

    for rel in (*REQUIRED_DIRS, "logs", "state/wal"):
        (tree.data / rel).mkdir(parents=True, exist_ok=True)
    opens = [default_open_position(now)] if open_positions is None else [dict(p) for p in open_positions]
    written = [_write_positions(tree.positions, opens, closed, now)]
    written.append(
        _write_json(
            tree.portfolio,
            {
                "balance": balance,
                "open_positions_count": len(opens),
                "updated_at": iso_z(now),
            },
        )
    )
    for component in heartbeat_components:
        beat = {"component": component, "pid": DEAD_PID, "ts": iso_z(now)}
        written.append(_write_json(tree.heartbeats / f"{component}.json", beat))
    if with_wal:
        written.append(_write_wal(tree.wal, opens[0] if opens else default_open_position(now), now))
    # mtimes agree with `now`, so checks that fall back on them see the same fresh tree.
    stamp = now.timestamp()
    for path in written:
        os.utime(path, (stamp, stamp))
    return tree


def write_config(
    tree: BotTree,
    path: Path,
    *,
    mode: str = "paper",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a guardian config naming the tree's home and `mode`, deep-merged with `extra`.

    JSON is valid YAML, so the file is JSON: no YAML library needed here.
    """
    config = _deep_merge({"bot": {"home": str(tree.home), "mode": mode}}, extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guardian.demo", description="Build a demo bot tree.")
    parser.add_argument("home", type=Path, help="directory to build the bot in (created)")
    parser.add_argument("--closed", type=int, default=0, metavar="N", help="closed positions to generate")
    parser.add_argument("--mode", choices=("paper", "real"), default="paper")
    parser.add_argument("--config", type=Path, help="config to write (default: HOME/guardian.yaml)")
    args = parser.parse_args(argv)
    home: Path = args.home.absolute()
    home.mkdir(parents=True, exist_ok=True)
    tree = build_bot_tree(home, closed=args.closed)
    # guardian's own state stays beside the demo, never in /var/lib/guardian.
    extra = {"guardian": {"state_dir": str(home / "guardian-state")}}
    print(write_config(tree, args.config or home / "guardian.yaml", mode=args.mode, extra=extra))
    return 0


def _write_slot(slot: Path) -> None:
    (slot / "src").mkdir(parents=True)
    (slot / "config").mkdir()
    (slot / "src" / "run.py").write_text(RUN_PY, encoding="utf-8")
    _write_json(slot / "config" / "live_config.json", LIVE_CONFIG)
    _write_json(slot / "config" / "asset_universe.json", ASSET_UNIVERSE)


def _write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value) + "\n", encoding="utf-8")
    return path


def _write_wal(path: Path, position: Mapping[str, Any], now: datetime) -> Path:
    # The bot appends a pending line, then the same id completed: a finished POSITION_OPEN.
    entry: dict[str, Any] = {
        "id": "wal-000001",
        "op": "POSITION_OPEN",
        "status": "pending",
        "ts": iso_z(now - timedelta(hours=1)),
        "data": dict(position),
        "rollback_data": {"balance_delta": 0},
    }
    done = {**entry, "status": "completed", "ts": iso_z(now - timedelta(minutes=59))}
    path.write_text(json.dumps(entry) + "\n" + json.dumps(done) + "\n", encoding="utf-8")
    return path


def _write_positions(path: Path, opens: Sequence[Mapping[str, Any]], closed: int, now: datetime) -> Path:
    with path.open("w", encoding="utf-8", buffering=1 << 20) as out:
        out.write('{"open_positions": [')
        out.write(",".join("\n" + json.dumps(p) for p in opens))
        out.write('\n], "closed_positions": [')
        first = True
        for chunk in _closed_chunks(closed, now):
            out.write(("\n" if first else ",\n") + chunk)
            first = False
        out.write("\n]}\n")
    return path


def _closed_chunks(count: int, now: datetime) -> Iterator[str]:
    """Yield `count` closed positions as JSON text, `_CHUNK_ROWS` per chunk, oldest first.

    They close over the 60 days before today (UTC), never today, so the day's loss stays 0.
    """
    # Not for security: a fixed seed keeps every tree of a given size byte-identical.
    rng = random.Random(count)  # noqa: S311
    uniform = rng.random
    day_start = int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    first_close = day_start - _CLOSED_WINDOW
    step = _CLOSED_WINDOW / max(count, 1)
    day_text: dict[int, str] = {}

    def iso(ts: int) -> str:
        # strftime per row would dominate; the date part is shared by thousands of rows.
        day, secs = divmod(ts, 86400)
        date = day_text.get(day)
        if date is None:
            date = day_text[day] = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
        hours, secs = divmod(secs, 3600)
        return "%sT%02d:%02d:%02dZ" % (date, hours, secs // 60, secs % 60)  # noqa: UP031

    for start in range(0, count, _CHUNK_ROWS):
        rows = []
        for i in range(start, min(start + _CHUNK_ROWS, count)):
            symbol, price, size = _MARKETS[i & 1]
            sign = 1.0 if uniform() < 0.55 else -1.0
            entry = price * (0.9 + 0.2 * uniform())
            # The move in the trade's favour, within +/-1% (never past the 2% stop), with an edge
            # that just pays the fees: a million trades leave the balance roughly where it was.
            move = (uniform() - 0.46) * 0.02
            exit_price = entry * (1.0 + move * sign)
            qty = float(size)
            fees = (entry + exit_price) * qty * _FEE_RATE
            pnl = (exit_price - entry) * qty * sign - fees
            closed_at = first_close + int((i + uniform()) * step)
            opened_at = closed_at - 300 - int(uniform() * 21_600)
            rows.append(
                _CLOSED_ROW
                % (
                    i + 1,
                    symbol,
                    "LONG" if sign > 0 else "SHORT",
                    entry,
                    size,
                    entry * (1.0 - 0.02 * sign),
                    entry * (1.0 + 0.03 * sign),
                    iso(opened_at),
                    size,
                    exit_price,
                    iso(closed_at),
                    pnl,
                    fees,
                    _STRATEGIES[i % 3],
                    "take_profit" if pnl > 0 else "stop_loss" if move < -0.008 else "signal_exit",
                    _NOTES[i % 3],
                )
            )
        yield ",\n".join(rows)


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


if __name__ == "__main__":
    raise SystemExit(main())
