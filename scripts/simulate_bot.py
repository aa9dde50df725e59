#!/usr/bin/env python3
"""A small, realistic stand-in for the trading bot, writing the files of docs/bot-layout.md.

    python scripts/simulate_bot.py --home HOME [--rate HZ] [--duration S] [--mode MODE] [--seed N]
                                   [--log FILE] [--fail-after N] [--lock-style flock|soft] [--hold MS]

It runs from the current slot (it changes into ``<home>/trading-bot-current``), so guardian takes it
for the bot. Each tick it trades a little (open, close, or trail a stop loss, within the safety
limits) and saves the positions and the portfolio; it beats ``state/heartbeats/bot_cycle.json``
every second and appends WAL entries around each open and close.

Modes:
  careful             every save under ``<file>.lock`` (filelock), temp file + fsync + rename + fsync of
                      the directory. It should raise no finding at all (but see the xfail tests in
                      tests/test_live_bot.py: guardian reports its operations in flight).
  careless-overwrite  positions and portfolio rewritten in place, no lock: readers can catch a torn file.
  crash-mid-trade     careful, until the first open or close after --fail-after writes: it exits (70)
                      between the WAL's pending line and its completed line.
  die-holding-lock    careful, until --fail-after writes: then it takes the positions lock and is killed
                      (SIGKILL) holding it. With --lock-style soft the marker stays behind.

Every write gets the next sequence number, which the file written also carries (``"seq"``), and
--log gets one JSON line per write: ``{"seq", "kind", "file", "sha256", "t"}`` (sha256 of the bytes
written). Events are logged too (``{"event": ...}``): start, paused, resumed, stop, crash, dying,
``lock_timeout`` (a lock held by another past 5 s: that save is skipped, never forced), and
``foreign_write``: a careful bot checks, under its lock, that the file still holds what it wrote
last (``when: "between"``: someone wrote it between two saves) and, before it lets go of the lock,
that its own save is still there (``when: "during"``: someone wrote while the bot held the lock).
A test reads the log and the files afterwards to tell whether any write was lost or reordered.

Signals: SIGTERM/SIGINT stop after the current tick (exit 0); SIGUSR1 pauses trading (heartbeats go
on) and logs ``paused`` once no save is in flight; SIGUSR2 resumes. On start it recovers: it takes
up the positions on disk, numbers on from the highest sequence number seen, and closes (rolls back)
any WAL operation a previous run left unfinished.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import filelock

MODES = ("careful", "careless-overwrite", "crash-mid-trade", "die-holding-lock")
CURRENT_LINK = "trading-bot-current"
COMPONENT = "bot_cycle"
MAX_OPEN = 3  # limits.max_open_positions
SIZE_PCT = 4.0  # of the balance per position: under the 5% limit, with room for the balance to move
STOP_PCT = 0.02
# The day's realised loss is kept under this share of the 2% limit: a losing close turns into a
# winning one before it would cross it, so a careful bot never trips LIMIT_DAILY_LOSS.
LOSS_BUDGET = 0.5 * 0.02
MARKETS = {"BTCUSDT": 50_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 150.0}
UNFINISHED = {"pending", "in_progress", "failed"}
LOCK_TIMEOUT = 5.0  # a lock taken longer than this: the save is skipped and logged, never forced


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


class Bot:
    def __init__(self, args: argparse.Namespace) -> None:
        self.home: Path = args.home.absolute()
        self.data: Path = (args.data or self.home / CURRENT_LINK).absolute()
        self.positions_path = self.data / "logs" / "positions_futures.json"
        self.portfolio_path = self.data / "logs" / "portfolio_futures.json"
        self.wal_path = self.data / "state" / "wal" / "operations.wal"
        self.beat_path = self.data / "state" / "heartbeats" / f"{COMPONENT}.json"
        self.mode: str = args.mode
        self.rate: float = args.rate
        self.duration: float = args.duration
        self.lock_style: str = args.lock_style
        self.hold = args.hold / 1000.0
        self.p_trade: float = args.p_trade
        # Not for security: a seeded stream makes a run repeatable.
        self.rng = random.Random(args.seed)  # noqa: S311
        self.fail_after: int = (
            args.fail_after if args.fail_after is not None else self.rng.randint(int(self.rate), int(3 * self.rate) + 1)
        )
        self.log: TextIO | None = args.log.open("a", encoding="utf-8") if args.log else None
        self.seq = 0
        self.writes = 0
        self.open: list[dict[str, Any]] = []
        self.closed: list[dict[str, Any]] = []
        self.balance = 10_000.0
        self.day_pnl = 0.0
        self.prices = dict(MARKETS)
        self.last_written: dict[Path, str] = {}  # sha256 of what this process last wrote to each file
        self.stop = False
        self.paused = False
        self.pause_logged = False

    # --- the log and the sequence numbers ---------------------------------------------------

    def note(self, **record: Any) -> None:
        if self.log is not None:
            self.log.write(json.dumps({"t": time.time(), **record}) + "\n")
            self.log.flush()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def wrote(self, seq: int, kind: str, path: Path, data: bytes) -> None:
        self.writes += 1
        self.note(seq=seq, kind=kind, file=str(path.relative_to(self.data)), sha256=sha(data))

    # --- locks and saves ------------------------------------------------------------------------

    def lock_for(self, path: Path) -> filelock.BaseFileLock:
        lock_file = str(path.with_name(path.name + ".lock"))
        return filelock.SoftFileLock(lock_file) if self.lock_style == "soft" else filelock.FileLock(lock_file)

    @contextlib.contextmanager
    def locked(self, path: Path) -> Iterator[bool]:
        """Hold the file's lock; yield False (and log it) if it stays taken past LOCK_TIMEOUT: the save
        is skipped, and the next tick saves the state again."""
        lock = self.lock_for(path)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT)
        except filelock.Timeout:
            self.note(event="lock_timeout", file=str(path.relative_to(self.data)))
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def foreign_check(self, path: Path, when: str) -> None:
        """Log it when the file no longer holds what this bot wrote last: someone else wrote it."""
        expected = self.last_written.get(path)
        if expected is None:
            return
        raw = read_or_none(path)
        found = sha(raw) if raw is not None else None
        if found != expected:
            doc = load_json(path)
            self.note(
                event="foreign_write",
                when=when,
                file=str(path.relative_to(self.data)),
                found_seq=doc.get("seq") if isinstance(doc, dict) else None,
                found_sha256=found,
            )

    def encode(self, doc: dict[str, Any]) -> tuple[int, bytes]:
        seq = self.next_seq()
        return seq, (json.dumps({"seq": seq, **doc}, indent=2) + "\n").encode()

    def save(self, path: Path, doc: dict[str, Any], kind: str) -> None:
        if self.mode == "careless-overwrite" and kind in ("positions", "portfolio"):
            # As a careless bot saves: truncate in place and write, no lock, no fsync.
            seq, data = self.encode(doc)
            with path.open("wb") as f:
                f.write(data)
            self.last_written[path] = sha(data)
            self.wrote(seq, kind, path, data)
            return
        with self.locked(path) as held:
            if not held:
                return
            self.foreign_check(path, "between")
            seq, data = self.encode(doc)  # numbered under the lock: a skipped save leaves no gap
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            fsync_dir(path.parent)
            self.last_written[path] = sha(data)
            if self.hold:
                time.sleep(self.hold)  # work done under the lock widens the window a foreign write would hit
            self.foreign_check(path, "during")
        self.wrote(seq, kind, path, data)

    def append_wal(self, entry: dict[str, Any]) -> None:
        with self.locked(self.wal_path) as held:
            if not held:
                return
            seq = self.next_seq()
            data = (json.dumps({**entry, "ts": iso_now(), "seq": seq}) + "\n").encode()
            fd = os.open(self.wal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.wrote(seq, "wal", self.wal_path, data)

    def beat(self) -> None:
        self.save(self.beat_path, {"component": COMPONENT, "pid": os.getpid(), "ts": iso_now()}, "heartbeat")

    def save_state(self) -> None:
        self.save(self.positions_path, {"open_positions": self.open, "closed_positions": self.closed}, "positions")
        self.save(
            self.portfolio_path,
            {"balance": round(self.balance, 2), "open_positions_count": len(self.open), "updated_at": iso_now()},
            "portfolio",
        )

    # --- start-up: take up what is on disk --------------------------------------------------------

    def recover(self) -> list[str]:
        """Take up the state on disk (no write yet); return the WAL operations left unfinished."""
        positions = load_json(self.positions_path)
        portfolio = load_json(self.portfolio_path)
        seqs = [0]
        if isinstance(positions, dict):
            self.open = [p for p in positions.get("open_positions") or [] if isinstance(p, dict)]
            self.closed = [p for p in positions.get("closed_positions") or [] if isinstance(p, dict)]
            seqs.append(int(positions.get("seq") or 0))
        if isinstance(portfolio, dict):
            if isinstance(portfolio.get("balance"), int | float) and portfolio["balance"] > 0:
                self.balance = float(portfolio["balance"])
            seqs.append(int(portfolio.get("seq") or 0))
        today = datetime.now(UTC).date().isoformat()
        self.day_pnl = sum(
            float(p.get("pnl") or 0) for p in self.closed if str(p.get("closed_at", "")).startswith(today)
        )
        for p in self.open:
            if p.get("symbol") in self.prices and isinstance(p.get("entry_price"), int | float):
                self.prices[p["symbol"]] = float(p["entry_price"])
        last_status: dict[str, str] = {}
        raw = read_or_none(self.wal_path) or b""
        for line in raw.splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                entry = json.loads(line)
                last_status[str(entry["id"])] = entry.get("status")
                seqs.append(int(entry.get("seq") or 0))
        if self.log is not None:
            with contextlib.suppress(OSError):
                for line in Path(self.log.name).read_bytes().splitlines()[-64:]:
                    with contextlib.suppress(ValueError, TypeError):
                        seqs.append(int(json.loads(line).get("seq") or 0))
        self.seq = max(seqs)
        for path in (self.positions_path, self.portfolio_path):  # a write before our first save shows too
            if (on_disk := read_or_none(path)) is not None:
                self.last_written[path] = sha(on_disk)
        return [op_id for op_id, status in last_status.items() if status in UNFINISHED]

    # --- trading ------------------------------------------------------------------------------

    def tick(self) -> None:
        for sym in self.prices:
            self.prices[sym] *= 1.0 + self.rng.uniform(-0.0005, 0.0005)
        roll = self.rng.random()
        free = [s for s in MARKETS if s not in {p["symbol"] for p in self.open}]
        if roll < self.p_trade and free and len(self.open) < MAX_OPEN:
            self.trade("POSITION_OPEN", self.rng.choice(free))
        elif roll < 2 * self.p_trade and self.open:
            self.trade("POSITION_CLOSE", self.rng.choice(self.open)["symbol"])
        else:
            for p in self.open:  # trail the stop loss a little: the positions file changes every tick
                sign = 1.0 if p["direction"] == "LONG" else -1.0
                p["stop_loss"] = round(self.prices[p["symbol"]] * (1.0 - sign * STOP_PCT), 4)
            self.save_state()

    def trade(self, op: str, symbol: str) -> None:
        op_id = f"op-{self.seq + 1:09d}"
        if op == "POSITION_OPEN":
            price = round(self.prices[symbol], 4)
            size = round(self.balance * SIZE_PCT / 100 / price, 6)
            direction = self.rng.choice(("LONG", "SHORT"))
            sign = 1.0 if direction == "LONG" else -1.0
            position: dict[str, Any] = {
                "id": f"pos-{self.seq + 1:09d}",
                "symbol": symbol,
                "direction": direction,
                "entry_price": price,
                "size": size,
                "leverage": 1,
                "stop_loss": round(price * (1.0 - sign * STOP_PCT), 4),
                "opened_at": iso_now(),
                "order": {"status": "filled", "qty": size},
            }
            entry = {"id": op_id, "op": op, "status": "pending", "data": position, "rollback_data": {}}
        else:
            position = next(p for p in self.open if p["symbol"] == symbol)
            entry = {"id": op_id, "op": op, "status": "pending", "data": {"id": position["id"]},
                     "rollback_data": {"balance": round(self.balance, 2)}}  # fmt: skip
        self.append_wal(entry)
        if self.mode == "crash-mid-trade" and self.writes >= self.fail_after:
            self.note(event="crash", op=op_id)
            os._exit(70)  # between pending and completed, as a crash leaves it
        if op == "POSITION_OPEN":
            self.open.append(position)
        else:
            self.close(position)
        self.save_state()
        self.append_wal({"id": op_id, "op": op, "status": "completed", "data": entry["data"]})

    def close(self, position: dict[str, Any]) -> None:
        price = self.prices[position["symbol"]]
        sign = 1.0 if position["direction"] == "LONG" else -1.0
        pnl = round((price - position["entry_price"]) * position["size"] * sign, 2)
        if pnl < 0 and -(self.day_pnl + pnl) > LOSS_BUDGET * self.balance:
            pnl = -pnl  # stay inside the day's loss limit
        self.open.remove(position)
        self.closed.append({**position, "exit_price": round(price, 4), "closed_at": iso_now(), "pnl": pnl})
        self.balance += pnl
        self.day_pnl += pnl

    # --- the loop ----------------------------------------------------------------------------------

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stop = True
        elif signum == signal.SIGUSR1:
            self.paused, self.pause_logged = True, False
        elif signum == signal.SIGUSR2:
            self.paused = False

    def die_holding_lock(self) -> None:
        lock = self.lock_for(self.positions_path)
        lock.acquire(timeout=LOCK_TIMEOUT)
        self.note(event="dying", lock=lock.lock_file)
        os.kill(os.getpid(), signal.SIGKILL)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, self.on_signal)
        os.chdir(self.home / CURRENT_LINK)  # the bot runs from its slot: that is how guardian knows it
        unfinished = self.recover()
        self.note(event="start", pid=os.getpid(), mode=self.mode, seq=self.seq, fail_after=self.fail_after)
        self.beat()  # before trading: a restarted bot is alive to guardian at once
        # What a previous run left unfinished: the state on disk is what stands, so it is rolled back.
        for op_id in unfinished:
            self.append_wal({"id": op_id, "op": "POSITION_UPDATE", "status": "rolled_back", "data": {}})
        period = 1.0 / self.rate
        start = time.monotonic()
        next_tick, next_beat = start + period, start + 1.0
        while not self.stop and not (self.duration and time.monotonic() - start >= self.duration):
            now = time.monotonic()
            if now >= next_beat:
                self.beat()
                next_beat = now + 1.0
            if self.paused:
                if not self.pause_logged:
                    self.note(event="paused", seq=self.seq)
                    self.pause_logged = True
                time.sleep(min(0.01, max(0.0, next_beat - time.monotonic())))
                continue
            if self.pause_logged:
                self.note(event="resumed", seq=self.seq)
                self.pause_logged = False
            if now >= next_tick:
                if self.mode == "die-holding-lock" and self.writes >= self.fail_after:
                    self.die_holding_lock()
                self.tick()
                next_tick = max(next_tick + period, time.monotonic() - period)  # late: no burst to catch up
            time.sleep(max(0.0, min(next_tick, next_beat) - time.monotonic()))
        self.note(event="stop", seq=self.seq, writes=self.writes)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="the bot's home (bot.home)")
    parser.add_argument("--data", type=Path, help="data root (default: HOME/trading-bot-current)")
    parser.add_argument("--rate", type=float, default=10.0, metavar="HZ", help="ticks per second (default 10)")
    parser.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: never)")
    parser.add_argument("--mode", choices=MODES, default="careful")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, help="append one JSON line per write (and per event) here")
    parser.add_argument("--fail-after", type=int, metavar="N", help="writes before the mode's failure (default: 1-3 s)")
    parser.add_argument("--lock-style", choices=("flock", "soft"), default="flock", help="FileLock or SoftFileLock")
    parser.add_argument("--hold", type=float, default=0.0, metavar="MS", help="keep each lock this long after a save")
    parser.add_argument("--p-trade", type=float, default=0.05, help="chance per tick of an open, and of a close")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")
    return Bot(args).run()


if __name__ == "__main__":
    sys.exit(main())
