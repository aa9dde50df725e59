"""Issue 6, soak: ``guardian run`` watches the simulated bot while faults are injected at random
(seeded), one at a time. Every fault must produce its alert; the daemon's memory and open file
descriptors must not grow; every check must keep running without an error.

CI runs 60 s of faults; ``GUARDIAN_LONG=1`` runs 600 s (``GUARDIAN_SOAK_SECONDS`` overrides both).
The figures (faults injected and alerted by kind, RSS, fds, check runs) are printed at the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from guardian.demo import BotTree, build_bot_tree
from tests.test_live_bot import (
    KNOWN_FALSE_ALARMS,
    LONG,
    SOFT_HOLDER,
    WAIT,
    Bot,
    Daemon,
    Procs,
    guardian,
    guardian_config,
    procs,  # noqa: F401  (the fixture: the live-bot test's child processes, ended by pid)
    start_bot,
    start_daemon,
    wait_for,
)

SECONDS = float(os.environ.get("GUARDIAN_SOAK_SECONDS") or (600 if LONG else 60))
SWEEP = 5.0
SAMPLE_EVERY = 2.0
RATE = 20.0  # the bot's ticks per second: the live-bot test covers 100 Hz; here the faults are the load
BOT_ARGS = ("--p-trade", "0.01")  # an open or a close every few seconds: the WAL is written too
SPARE_DIRS = ("data", "feature_store", "configs")  # required directories the bot never writes into
SOFT_LOCK = "state/soak_marker.json.lock"  # a lock nobody else takes (not even clear-stop), so its marker stays put
# What a fault may bring about besides its own alert.
COLLATERAL = {
    # Its open positions could not be salvaged: refused, loudly; or salvaged with closed positions
    # maybe lost: the stop is set until an operator confirms the day's loss.
    "corrupt": {"STATE_UNRECOVERABLE", "EMERGENCY_STOP_ACTIVE"},
    # Killed mid-save or mid-trade: a temp file, an unfinished operation, one file saved of two.
    "kill": {"HEARTBEAT_STALE", "TEMP_FILE_LEFTOVER", "WAL_INCOMPLETE", "STATE_MISMATCH"},
}


@dataclass
class Fault:
    kind: str
    mark: int  # the alert log's length when it was injected
    codes: tuple[str, ...]  # an alert with one of these, firing or healed, answers it
    subject: str
    alert: dict[str, Any] | None = None


@dataclass
class Sample:
    t: float
    rss: int
    fds: int
    runs: dict[str, int]
    errors: dict[str, int]


@dataclass
class Soak:
    tree: BotTree
    tmp: Path
    procs: Procs
    daemon: Daemon
    bot: Bot
    rng: random.Random
    config: Path
    faults: list[Fault] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)  # pids of the bots the soak killed
    samples: list[Sample] = field(default_factory=list)

    # --- the faults: each injects, waits for its alert, then undoes what guardian does not ----

    def inject(self, kind: str, codes: tuple[str, ...], subject: str, do: Callable[[], None]) -> Fault:
        fault = Fault(kind, len(self.daemon.alerts()), codes, subject)
        self.faults.append(fault)
        do()
        with suppress(AssertionError):  # a missed fault is counted, and the soak goes on
            fault.alert = self.daemon.wait_alert(codes, after=fault.mark, events=("firing", "healed"), subject=subject)
        return fault

    def corrupt(self) -> None:
        # The bot is paused, or its next save would overwrite the fault before guardian could see it.
        self.bot.pause()
        raw = self.tree.positions.read_bytes()
        cut = self.rng.randint(1, len(raw) - 2)  # a prefix of a JSON object never parses

        def do() -> None:
            tmp = self.tree.positions.with_name(".positions_futures.json.fault")
            tmp.write_bytes(raw[:cut])
            os.replace(tmp, self.tree.positions)

        self.inject("corrupt", ("STATE_FILE_CORRUPT",), "logs/positions_futures.json", do)
        self.bot.resume()  # the bot saves its whole state again

        def stop_if_set() -> dict[str, Any] | None:
            doc = self.daemon.status()
            if doc is None or "STATE_FILE_CORRUPT" in {f["code"] for f in doc["findings"]}:
                return None  # not yet judged
            return doc

        wait_for("the corrupt file judged", stop_if_set)
        if self.tree.emergency_stop.exists() and json.loads(self.tree.emergency_stop.read_text())["active"]:
            # Set by the salvage: the operator checks the day's trades, then confirms.
            assert guardian(self.config, "clear-stop", "--approver", "soak").returncode == 0

    def rmdir(self) -> None:
        name = self.rng.choice(SPARE_DIRS)
        self.inject("rmdir", ("DIRECTORY_MISSING",), name, (self.tree.data / name).rmdir)
        (self.tree.data / name).mkdir(exist_ok=True)  # in case guardian did not

    def stale_lock(self) -> None:
        lock = self.tree.data / SOFT_LOCK
        holder = self.procs.start([sys.executable, "-c", SOFT_HOLDER], name=f"holder-{len(self.faults)}", cwd=self.tmp,
                                  env={**os.environ, "LOCK": str(lock)})  # fmt: skip
        wait_for("the soft lock", lambda: True if lock.exists() and lock.stat().st_size else None)

        def do() -> None:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=WAIT)

        self.inject("stale_lock", ("LOCK_STALE",), SOFT_LOCK, do)
        lock.unlink(missing_ok=True)

    def hang(self) -> None:
        # Paused first, so that it hangs between saves: a save stopped half-way would leave a temp file.
        self.bot.pause()
        self.inject("hang", ("BOT_HUNG",), "tradingbot.service", lambda: os.kill(self.bot.proc.pid, signal.SIGSTOP))
        os.kill(self.bot.proc.pid, signal.SIGCONT)
        self.bot.resume()

    def kill(self) -> None:
        victim = self.bot.proc

        def do() -> None:
            os.kill(victim.pid, signal.SIGKILL)  # wherever it is: mid-save, mid-trade, holding a lock
            victim.wait(timeout=WAIT)

        self.killed.append(victim.pid)
        self.inject("kill", ("BOT_DOWN",), "tradingbot.service", do)
        self.bot = start_bot(self.procs, self.tree, self.bot.log, rate=RATE, seed=len(self.faults),
                             args=BOT_ARGS, name=f"bot-{len(self.faults)}")  # fmt: skip

    def temp(self) -> None:
        path = self.tree.data / self.rng.choice(("logs", "state", "state/wal")) / f"fault-{len(self.faults)}.tmp"

        def do() -> None:
            path.write_bytes(b'{"open_positions": [')  # what a failed save leaves
            old = time.time() - 60  # old at once: found by the next sweep
            os.utime(path, (old, old))

        self.inject("temp", ("TEMP_FILE_LEFTOVER",), str(path.relative_to(self.tree.data)), do)
        path.unlink(missing_ok=True)

    def wait_clean(self) -> None:
        """Until the daemon sees nothing but the test bot's own orphan finding."""

        def clean() -> bool | None:
            doc = self.daemon.status()
            return True if doc and {f["code"] for f in doc["findings"]} <= {"ORPHAN_PROCESS"} else None

        wait_for(f"recovery from {self.faults[-1].kind if self.faults else 'start-up'}", clean)

    # --- resources -------------------------------------------------------------------------------

    def sample(self, stop: threading.Event) -> None:
        proc = psutil.Process(self.daemon.proc.pid)
        while not stop.wait(SAMPLE_EVERY):
            doc = self.daemon.status()
            if doc is None:
                continue
            checks = doc["checks"]
            self.samples.append(Sample(
                time.monotonic(), proc.memory_info().rss, proc.num_fds(),
                {k: v["runs"] for k, v in checks.items()}, {k: v["errors"] for k, v in checks.items()},
            ))  # fmt: skip


def unexplained_alerts(soak: Soak, alerts: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Alerts no fault explains (and the known false alarms, counted apart)."""
    unexplained: list[dict[str, Any]] = []
    known: Counter[str] = Counter()
    starts = [f.mark for f in soak.faults]
    for i, a in enumerate(alerts):
        if a["event"] not in ("firing", "healed") or a["code"] == "ORPHAN_PROCESS":
            continue
        window = [f for f, start in zip(soak.faults, starts, strict=True) if start <= i]
        fault = window[-1] if window else None
        if fault and (a["code"] in fault.codes or a["code"] in COLLATERAL.get(fault.kind, ())):
            continue
        # A bot killed mid-save leaves its temp file; guardian finds it aged, sweeps later.
        if a["code"] == "TEMP_FILE_LEFTOVER" and any(a["subject"].endswith(f".{pid}.tmp") for pid in soak.killed):
            continue
        if a["code"] in KNOWN_FALSE_ALARMS:
            known[a["code"]] += 1
        else:
            unexplained.append(a)
    return unexplained, known


def test_the_daemon_alerts_every_injected_fault_and_neither_grows_nor_stops_a_check_over_a_soak(
    tmp_path: Path,
    procs: Procs,  # noqa: F811  (the fixture imported above)
) -> None:
    tree = build_bot_tree(tmp_path / "bot", now=datetime.now(UTC))
    config = guardian_config(tree, tmp_path, {
        "daemon": {"sweep": f"{SWEEP:g}s"},
        "thresholds": {"heartbeat_stale": "3s", "bot_start_grace": "1s", "temp_file_age": "2s", "lock_stale": 0},
        # Every fault is sent as it happens: no flap hold, no heal budget, one log file to read back.
        "alerts": {"flap_changes": 1_000_000, "heal_budget": 1_000_000, "jsonl_max_mb": 1000},
    })  # fmt: skip
    daemon = start_daemon(procs, tree, config)
    bot = start_bot(procs, tree, tmp_path / "bot.jsonl", rate=RATE, seed=0, args=BOT_ARGS)
    soak = Soak(tree, tmp_path, procs, daemon, bot, random.Random(20261121), config)
    soak.wait_clean()
    kinds: dict[str, Callable[[], None]] = {
        "corrupt": soak.corrupt, "rmdir": soak.rmdir, "stale_lock": soak.stale_lock,
        "hang": soak.hang, "kill": soak.kill, "temp": soak.temp,
    }  # fmt: skip
    stop = threading.Event()
    sampler = threading.Thread(target=soak.sample, args=(stop,))
    sampler.start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < SECONDS:
            kinds[soak.rng.choice(sorted(kinds))]()
            soak.wait_clean()
            time.sleep(soak.rng.uniform(0.2, 2.0))  # a quiet spell of random length between faults
        soak.wait_clean()
    finally:
        stop.set()
        sampler.join()
    status = daemon.status()
    assert status is not None
    assert daemon.stop() == 0
    os.kill(soak.bot.proc.pid, signal.SIGTERM)
    assert soak.bot.proc.wait(timeout=WAIT) == 0

    injected = Counter(f.kind for f in soak.faults)
    alerted = Counter(f.kind for f in soak.faults if f.alert is not None)
    missed = [(f.kind, f.subject) for f in soak.faults if f.alert is None]
    unexplained, known = unexplained_alerts(soak, daemon.alerts())
    samples = soak.samples
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    rss_first, rss_last = (statistics.mean(s.rss for s in part) / 2**20 for part in (first, last))
    fds_first, fds_last = (statistics.mean(s.fds for s in part) for part in (first, last))
    rss_by_tenth = [round(samples[i * len(samples) // 10].rss / 2**20, 2) for i in range(10)] if samples else []
    figures = {
        "seconds": round(time.monotonic() - started),
        "faults_injected": dict(injected),
        "faults_alerted": dict(alerted),
        "missed": missed,
        "unexplained_alerts": [(a["code"], a["subject"], a["event"]) for a in unexplained],
        "known_false_alarms": dict(known),
        "rss_mb_first_third": round(rss_first, 2),
        "rss_mb_last_third": round(rss_last, 2),
        "fds_first_third": round(fds_first, 2),
        "fds_last_third": round(fds_last, 2),
        "samples": len(samples),
        "rss_mb_by_tenth": rss_by_tenth,
        "min_check_runs": min(status["checks"][c]["runs"] for c in status["checks"]),
        "evaluations": status["events"]["evaluations"],
        "events": status["events"]["seen"],
        "bot_writes": len(soak.bot.writes()),
    }
    print("\nsoak figures:", json.dumps(figures))

    assert missed == [], figures
    assert unexplained == [], figures
    # Nobody wrote a state file while the bot held its lock, through every fault.
    assert [e for e in soak.bot.events("foreign_write") if e["when"] == "during"] == []
    # Resources: the last third of the samples holds no more than the first third, within 5% + 1 MB of
    # allocator noise: a leak grows with the work, and the work goes on all the run.
    assert len(samples) >= 6, figures
    assert rss_last <= rss_first * 1.05 + 1.0, figures
    assert fds_last <= fds_first + 1.0, figures
    # No check stopped running, and none raised: every check ran again within every two sweeps.
    assert all(not any(s.errors.values()) for s in samples), [s.errors for s in samples if any(s.errors.values())]
    anchor = samples[0]
    for s in samples[1:]:
        if s.t - anchor.t >= 2 * SWEEP:
            stalled = [c for c, n in s.runs.items() if n <= anchor.runs.get(c, 0)]
            assert stalled == [], f"checks {stalled} did not run between {anchor.t:.0f} and {s.t:.0f}"
            anchor = s
