"""Decode a large positions file five ways, each in a fresh process: the case for msgspec.

    bench/decode.py [--closed N] [--runs N] [--file PATH]

The gate needs the open positions in full but of the closed ones only that they parse (and,
for the day's loss, the recent ones). Time is read + decode inside the child; peak RSS is the
child's own, from `os.wait4`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
from gate import MB, Sample, run_child

from guardian.demo import build_bot_tree
from guardian.state import load_positions


# gc=False: positions hold no cycles, and untracked structs spare the collector a million objects.
class Order(msgspec.Struct, gc=False):
    status: str
    qty: float


class Pos(msgspec.Struct, gc=False):
    id: str
    symbol: str
    direction: str
    entry_price: float
    size: float
    leverage: float = 1.0
    stop_loss: float | None = None
    opened_at: str | None = None
    order: Order | None = None
    exit_price: float | None = None
    closed_at: str | None = None
    pnl: float | None = None


class Positions(msgspec.Struct):
    open_positions: list[Pos]
    closed_positions: list[Pos]


class OpenOnly(msgspec.Struct):
    open_positions: list[Pos]
    closed_positions: msgspec.Raw  # validated as JSON, left as a slice of the input


def _count(value: object) -> str:
    if isinstance(value, bytes):
        return f"{len(value):,} bytes"
    if isinstance(value, dict):
        return f"{len(value['open_positions'])} open, {len(value['closed_positions'])} closed"
    if isinstance(value, OpenOnly):
        return f"{len(value.open_positions)} open, closed left raw"
    assert isinstance(value, Positions)
    return f"{len(value.open_positions)} open, {len(value.closed_positions)} closed"


METHODS: dict[str, tuple[str, Callable[[bytes], object]]] = {
    "read": ("read bytes only (floor)", lambda raw: raw),
    "json": ("json.loads", json.loads),
    "msgspec": ("msgspec.json.decode, untyped", msgspec.json.decode),
    "typed": ("msgspec, typed Struct, all positions", msgspec.json.Decoder(Positions).decode),
    "open": ("msgspec, typed open + Raw closed", msgspec.json.Decoder(OpenOnly).decode),
    "guardian": ("guardian.state.load_positions: typed open + closed as (pnl, closed_at)", lambda raw: raw),
}


def child(method: str, path: Path) -> int:
    decode = METHODS[method][1]
    start = time.perf_counter()
    if method == "guardian":  # what the gate runs: it reads the file itself
        _, positions = load_positions(path, today="2026-11-21", max_bytes=1 << 40)
        assert positions is not None
        elapsed = time.perf_counter() - start
        print(
            f"{elapsed:.6f} {len(positions.open)} open, {positions.closed_count} closed, day P&L {positions.today_pnl}"
        )
        return 0
    value = decode(path.read_bytes())
    elapsed = time.perf_counter() - start
    print(f"{elapsed:.6f} {_count(value)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--closed", type=int, default=1_000_000, help="closed positions, default %(default)s")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--file", type=Path, help="decode this positions file instead of building one")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child[0], Path(args.child[1]))

    with tempfile.TemporaryDirectory(prefix="guardian-bench-") as tmp:
        work = Path(tmp)
        path: Path = args.file or build_bot_tree(work / "bot", closed=args.closed).positions
        size = path.stat().st_size
        print(f"\nDecoding {path.name}: {size / MB:.0f} MB, best of {args.runs} fresh processes each\n")
        print("| method | median ms | min ms | peak RSS MB | RSS / file | result |")
        print("|---|---:|---:|---:|---:|---|")
        for method, (label, _) in METHODS.items():
            print(f"{method} ...", file=sys.stderr, flush=True)
            samples: list[Sample] = []
            for _ in range(args.runs):
                sample = run_child([sys.executable, __file__, "--child", method, str(path)], work)
                if sample.code != 0:
                    print(f"{label} failed:\n{sample.stderr}", file=sys.stderr)
                    return 1
                samples.append(sample)
            times = [float(s.stdout.split()[0]) for s in samples]
            rss = max(s.max_rss for s in samples)
            result = samples[0].stdout.split(maxsplit=1)[1].strip()
            print(
                f"| {label} | {statistics.median(times) * 1e3:.0f} | {min(times) * 1e3:.0f} "
                f"| {rss / MB:.0f} | {rss / size:.2f} | {result} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
