"""`guardian run` as a real process: faults planted in a real tree, alerts read back from its JSONL
log, and systemd's notify protocol received on a socket the test owns."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from guardian.backups import BackupStore
from guardian.config import load
from guardian.demo import BotTree, build_bot_tree, default_open_position
from tests.conftest import Result, write_json

GUARDIAN = Path(sys.executable).with_name("guardian")
WAIT = 15.0  # seconds a test waits for an event before it fails (never a fixed sleep)


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    alerts: Path
    config: Path
    state_dir: Path
    notes: list[str] = field(default_factory=list)

    def _drain(self, timeout: float) -> bool:
        """Read what has arrived (waiting up to ``timeout`` for the first); True if anything did."""
        n = len(self.notes)
        self.sock.settimeout(timeout)
        try:
            while True:
                self.notes.append(self.sock.recv(65536).decode())
                self.sock.settimeout(0.0)
        except (TimeoutError, BlockingIOError):
            pass
        return len(self.notes) > n

    def wait_note(self, pred: Callable[[str], bool], *, after: int = 0) -> str:
        """The first notify datagram (from index ``after``) that satisfies ``pred``."""
        deadline = time.monotonic() + WAIT
        while True:
            exited = self.proc.poll() is not None  # read before the last drain: what it sent is queued
            for note in self.notes[after:]:
                if pred(note):
                    return note
            if time.monotonic() > deadline or (exited and not self._drain(0.0)):
                raise AssertionError(f"no such notification; got {self.notes[after:]!r}")
            self._drain(0.2)

    def read_alerts(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in self.alerts.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def wait_alert(self, code: str, event: str = "firing", subject: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while True:
            for a in self.read_alerts():
                if a["code"] == code and a["event"] == event and subject in (None, a["subject"]):
                    return a
            if time.monotonic() > deadline or self.proc.poll() is not None:
                if self.proc.poll() is None:  # where it is: faulthandler prints every thread's stack
                    self.signal(signal.SIGUSR1)
                    time.sleep(0.5)
                    self.proc.kill()
                    self.proc.wait()
                got = [(a["code"], a["event"]) for a in self.read_alerts()]
                raise AssertionError(
                    f"no {code} {event} alert; got {got}; stderr: {self.stderr()}; status: {self.status_text()}"
                )
            time.sleep(0.01)

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.state_dir / "status.json").read_text())
        return doc

    def wait_status(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                doc = self.status()
                if pred(doc):
                    return doc
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"status never matched; last: {self.status_text()}")
            time.sleep(0.01)

    def status_text(self) -> str:
        try:
            return (self.state_dir / "status.json").read_text()[:3000]
        except OSError as e:
            return str(e)

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)


@pytest.fixture
def daemon(tmp_path: Path, make_config: Callable[..., Path]) -> Iterator[Callable[..., Running]]:
    """Start `guardian run` on a tree; it is stopped (by its pid) at teardown."""
    started: list[Running] = []

    def start(tree: BotTree, *, mode: str = "paper", extra: dict[str, Any] | None = None) -> Running:
        # Test bots run outside any unit: in paper mode they would be killed as orphans.
        merged: dict[str, Any] = {"heal": {"kill_orphans_in_paper": False}, "daemon": {"coalesce": "20ms"}}
        for k, v in (extra or {}).items():
            merged[k] = {**merged.get(k, {}), **v}
        config = make_config(tree, mode=mode, extra=merged)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"guardian-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)  # abstract: no path length limit, nothing left on disk
        env = {**os.environ, "NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "200000"}
        env.pop("WATCHDOG_PID", None)
        env.pop("STATE_DIRECTORY", None)
        proc = subprocess.Popen(
            [str(GUARDIAN), "--config", str(config), "run"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        r = Running(proc, sock, tree.alerts, config, load(config).guardian.state_dir)
        started.append(r)
        r.wait_note(lambda n: "READY=1" in n)
        return r

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
        r.proc.wait(timeout=10)
        r.sock.close()


@pytest.fixture
def bot_pid(run_bot: Callable[[Path], int], tree: BotTree) -> int:
    """A running bot with a fresh heartbeat, so the daemon's picture starts without BOT_DOWN."""
    pid = run_bot(tree.current_slot)
    write_json(tree.heartbeats / "bot_cycle.json", {"component": "bot_cycle", "pid": pid, "ts": time.time()})
    return pid


def save_atomically(path: Path, doc: Any) -> None:
    """As a careful bot saves: a temp file renamed over the target."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


# --- systemd's notify protocol ------------------------------------------------------------------


def test_ready_is_sent_after_the_first_check_with_a_status_line_then_watchdog_pings(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running]
) -> None:
    d = daemon(tree)
    ready = d.wait_note(lambda n: "READY=1" in n)
    assert "STATUS=" in ready
    status = d.status()
    assert status["state"] == "running" and status["pid"] == d.proc.pid
    assert status["checks"]["positions"]["runs"] >= 1  # the first full check ran before READY
    first = d.notes.index(ready)
    d.wait_note(lambda n: n == "WATCHDOG=1", after=first)
    second = len(d.notes)
    d.wait_note(lambda n: n == "WATCHDOG=1", after=second)  # and again: pings keep coming


def test_sigterm_sends_stopping_and_exits_0_within_2_seconds(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running], cli: Callable[..., Result]
) -> None:
    d = daemon(tree)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=2) == 0
    d.wait_note(lambda n: "STOPPING=1" in n)
    assert d.status()["state"] == "stopped"
    r = cli(d.config, "status")
    assert r.code == 3 and "NOT RUNNING" in r.out


def test_sighup_with_a_good_config_reloads_it(tree: BotTree, bot_pid: int, daemon: Callable[..., Running]) -> None:
    d = daemon(tree)
    assert d.status()["mode"] == "paper"
    text = d.config.read_text().replace('"mode": "paper"', '"mode": "real"')
    assert text != d.config.read_text()
    d.config.write_text(text)
    mark = len(d.notes)
    d.signal(signal.SIGHUP)
    d.wait_note(lambda n: "RELOADING=1" in n, after=mark)
    d.wait_note(lambda n: "READY=1" in n, after=mark)
    assert d.wait_status(lambda s: s["mode"] == "real")["config_error"] is None


def test_sighup_with_a_bad_config_keeps_the_old_one_and_says_so(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running]
) -> None:
    d = daemon(tree)
    d.config.write_text(d.config.read_text().replace('"mode": "paper"', '"mode": "paper", "moed": "real"'))
    d.signal(signal.SIGHUP)
    alert = d.wait_alert("CONFIG_INVALID")
    assert "moed" in alert["message"] and "previous config stays" in alert["message"]
    status = d.wait_status(lambda s: s["config_error"] is not None)
    assert status["mode"] == "paper" and status["state"] == "running"
    assert d.proc.poll() is None


# --- faults, seen as they happen ----------------------------------------------------------------


def test_a_corrupted_positions_file_is_alerted_and_its_bytes_are_kept(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running]
) -> None:
    d = daemon(tree)
    tree.positions.write_text('{"open_positions": [')
    alert = d.wait_alert("STATE_FILE_CORRUPT", subject="logs/positions_futures.json")
    assert alert["level"] == "HIGH"
    # Its one open position cannot be salvaged: the repair is refused, loudly, and the bytes stay.
    assert d.wait_alert("STATE_UNRECOVERABLE")["level"] == "CRITICAL"
    assert tree.positions.read_text() == '{"open_positions": ['


def test_an_atomic_save_that_adds_a_duplicate_position_is_seen_as_a_move(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running]
) -> None:
    d = daemon(tree)
    doc = json.loads(tree.positions.read_text())
    doc["open_positions"].append({**doc["open_positions"][0], "id": "dup-1"})
    save_atomically(tree.positions, doc)
    alert = d.wait_alert("POSITION_CONFLICT")
    assert alert["level"] == "CRITICAL" and alert["action_required"] is True


def test_a_lock_left_by_a_killed_process_is_healed_with_a_backup(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running], spawn: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:  # fmt: skip
    d = daemon(tree, extra={"thresholds": {"lock_stale": 0}})
    lock = tree.portfolio.with_name(tree.portfolio.name + ".lock")
    ready = tmp_path / "holding"
    code = (
        "import filelock, pathlib, sys, time\n"
        "lock = filelock.SoftFileLock(sys.argv[1]); lock.acquire()\n"
        "pathlib.Path(sys.argv[2]).touch()\n"
        "time.sleep(600)\n"
    )
    holder = spawn([sys.executable, "-c", code, str(lock), str(ready)], ready=ready)
    d.wait_status(lambda s: holder.pid in s["watched_pids"])  # the daemon watches the live holder
    holder.kill()
    healed = d.wait_alert("LOCK_STALE", event="healed")
    assert healed["subject"] == "logs/portfolio_futures.json.lock"
    assert not lock.exists()
    kept = BackupStore(tree.data, tree.backups).list()
    assert [b.original for b in kept if b.reason == "stale-lock"] == ["logs/portfolio_futures.json.lock"]


def test_a_bot_whose_heartbeat_stops_is_reported_hung_when_it_crosses_the_threshold(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running]
) -> None:
    d = daemon(tree, extra={"thresholds": {"heartbeat_stale": "1s", "bot_start_grace": 0}})
    d.wait_status(lambda s: s["summary"].startswith(("OK", "HIGH ORPHAN")))
    hung = d.wait_alert("BOT_HUNG")
    assert str(bot_pid) in hung["message"]
    # The daemon did not wait for a sweep (60 s): a timer fired at the crossing.
    assert d.status()["last_sweep"] < hung["ts"]
    # BOT_HUNG holds back the stale heartbeat alert, which says nothing new.
    assert not [a for a in d.read_alerts() if a["code"] == "HEARTBEAT_STALE"]
    # The same bot beats again: resolved by that event, not at the next sweep (60 s, beyond WAIT).
    write_json(tree.heartbeats / "bot_cycle.json", {"component": "bot_cycle", "pid": bot_pid, "ts": time.time() + 5})
    d.wait_alert("BOT_HUNG", event="resolved")


def test_a_bot_that_exits_is_reported_down_at_once(tree: BotTree, bot_pid: int, daemon: Callable[..., Running]) -> None:
    d = daemon(tree)
    d.wait_status(lambda s: bot_pid in s["watched_pids"])
    os.kill(bot_pid, signal.SIGKILL)
    down = d.wait_alert("BOT_DOWN")
    assert down["level"] == "HIGH" and "1 open position(s)" in down["message"]
    assert d.status()["last_sweep"] < down["ts"]  # seen by its exit, not by the next sweep


def test_a_heartbeat_of_a_just_started_bot_is_not_stale_within_the_grace_period(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running]
) -> None:
    write_json(tree.heartbeats / "bot_cycle.json", {"component": "bot_cycle", "pid": bot_pid, "ts": 0})
    d = daemon(tree, extra={"thresholds": {"bot_start_grace": "10m"}})
    assert "HEARTBEAT_STALE" not in {f["code"] for f in d.status()["findings"]}
    assert "BOT_HUNG" not in {f["code"] for f in d.status()["findings"]}


def test_a_flipped_link_is_seen_and_the_watches_follow_it_to_the_new_slot(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running]
) -> None:
    d = daemon(tree)
    blue = tree.slots_dir / "blue"
    tmp_link = tree.home / "trading-bot-current.new"
    tmp_link.symlink_to(blue.relative_to(tree.home))
    subprocess.run(["mv", "-T", str(tmp_link), str(tree.current_link)], check=True)  # as a deploy script flips
    mismatch = d.wait_alert("SLOT_MISMATCH")
    assert "blue" in mismatch["message"]
    assert d.wait_alert("STALE_CODE")["level"] == "CRITICAL"  # the bot still runs from green
    d.wait_status(lambda s: s["slot"] == "blue")
    (blue / "logs" / "positions_futures.json").write_text("{")  # a fault in the new slot is seen too
    d.wait_alert("STATE_FILE_CORRUPT")


def watched_inodes(pid: int) -> set[int]:
    """The inodes a process's inotify instances watch, as the kernel lists them (fdinfo, proc(5))."""
    found: set[int] = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            lines = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
        except OSError:  # closed meanwhile
            continue
        found |= {int(line.split("ino:")[1].split()[0], 16) for line in lines if line.startswith("inotify wd:")}
    return found


def test_a_watched_directory_swapped_for_a_new_one_is_watched_again_and_the_old_one_let_go(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running]
) -> None:
    d = daemon(tree, extra={"daemon": {"sweep": "1h"}})  # no sweep in the test's time: only an event finds the fault
    logs = tree.positions.parent
    old = logs.with_name("logs.old")
    old_ino = logs.stat().st_ino
    assert old_ino in watched_inodes(d.proc.pid)
    logs.rename(old)
    shutil.copytree(old, logs)
    new_ino = logs.stat().st_ino
    deadline = time.monotonic() + WAIT
    while not ((w := watched_inodes(d.proc.pid)) >= {new_ino} and old_ino not in w):
        assert time.monotonic() < deadline, (new_ino, old_ino, w)
        time.sleep(0.01)
    tree.positions.write_text("{")
    d.wait_alert("STATE_FILE_CORRUPT")


def test_a_burst_of_saves_is_coalesced_and_the_last_one_is_always_looked_at(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running]
) -> None:
    d = daemon(tree, extra={"daemon": {"coalesce": "100ms"}})
    before = d.status()["events"]["evaluations"]
    doc = json.loads(tree.positions.read_text())
    saves = 300
    for i in range(saves - 1):
        doc["open_positions"][0]["stop_loss"] = 49000.0 - i
        save_atomically(tree.positions, doc)
    doc["open_positions"].append({**doc["open_positions"][0], "id": "dup-1"})
    save_atomically(tree.positions, doc)  # the last save of the burst holds the fault
    d.wait_alert("POSITION_CONFLICT")
    events = d.wait_status(lambda s: s["worst"] == "CRITICAL")["events"]
    assert events["seen"] >= saves, events  # each save's rename was routed...
    assert 1 <= events["evaluations"] - before < saves // 3, events  # ...into far fewer looks


def test_a_recheck_that_costs_more_than_the_cpu_budget_waits_longer_and_the_last_save_is_still_seen(
    tmp_path: Path, run_bot: Callable[[Path], int], daemon: Callable[..., Running]
) -> None:
    big = build_bot_tree(tmp_path / "big", closed=10_000, now=datetime.now(UTC))  # a 4 MB positions file
    pid = run_bot(big.current_slot)
    write_json(big.heartbeats / "bot_cycle.json", {"component": "bot_cycle", "pid": pid, "ts": time.time()})
    coalesce = 0.02
    d = daemon(big, extra={"daemon": {"coalesce": f"{coalesce * 1000:g}ms", "cpu_percent": 0.5}})
    before = d.status()["events"]["evaluations"]
    doc = json.loads(big.positions.read_text())
    saves = []
    for stop in (49000.0, 48000.0):  # two sound versions, encoded once: the burst below is only I/O
        doc["open_positions"][0]["stop_loss"] = stop
        saves.append(json.dumps(doc).encode())
    tmp = big.positions.with_name(big.positions.name + ".tmp")
    t0 = time.monotonic()
    i = 0
    while (elapsed := time.monotonic() - t0) < 1.5:
        tmp.write_bytes(saves[i % 2])
        os.replace(tmp, big.positions)
        i += 1
    doc["open_positions"].append({**doc["open_positions"][0], "id": "dup-1"})
    save_atomically(big.positions, doc)  # the last save of the burst holds the fault
    d.wait_alert("POSITION_CONFLICT")
    st = d.wait_status(lambda s: s["worst"] == "CRITICAL")
    # Each look costs a few ms of CPU: at 0.5% of a core, a wait of ~0.5 s after it, not 20 ms.
    looks = st["events"]["evaluations"] - before
    assert 1 <= looks < elapsed / coalesce / 4, (looks, i, st["events"])


def test_a_check_that_raises_is_reported_and_backed_off_while_the_others_go_on(
    tree: BotTree, cfg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guardian import checks
    from guardian.context import Context
    from guardian.daemon import loop

    def broken(ctx: Context) -> list[Any]:
        raise RuntimeError("boom")

    patched = tuple(checks.Check(c.name, broken, c.needs_data) if c.name == "wal" else c for c in checks.CHECKS)
    monkeypatch.setattr(loop, "CHECKS", patched)
    d = loop.Daemon(Path("unused.yaml"), cfg)
    d._run(Context(cfg), {"wal", "positions"})
    wal = d.checks["wal"]
    assert wal.errors == 1 and wal.backoff_until > time.monotonic()
    assert [f.subject for f in wal.findings] == ["check:wal"]
    assert d.checks["positions"].runs == 1 and d.checks["positions"].errors == 0
    runs = wal.runs
    d._run(Context(cfg), {"wal"})  # within its backoff: not run again
    assert wal.runs == runs and wal.errors == 1


def test_guardian_status_prints_the_daemons_findings_and_exits_as_check_does(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running], cli: Callable[..., Result]
) -> None:
    d = daemon(tree, mode="real")
    doc = json.loads(tree.positions.read_text())
    doc["open_positions"].append(default_open_position(datetime.now(UTC), id="dup-1"))
    save_atomically(tree.positions, doc)
    d.wait_alert("POSITION_CONFLICT")
    # The status is written just after the alerts (and an orphan is CRITICAL in real mode already).
    d.wait_status(lambda s: "POSITION_CONFLICT" in {f["code"] for f in s["findings"]})
    r = cli(d.config, "status")
    assert r.code == 2, r.out
    assert "running" in r.out and "POSITION_CONFLICT" in r.out
    j = cli(d.config, "status", "--json").json()
    assert j["running"] is True and j["status"]["worst"] == "CRITICAL"


def test_guardian_status_says_what_a_real_mode_start_would_get_and_exits_critical_when_refused(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running], cli: Callable[..., Result]
) -> None:
    # A HIGH finding that leaves the WAL unproven: the start line names it, as the gate would.
    d = daemon(tree, mode="real", extra={"heal": {"enabled": False}})
    with tree.wal.open("a") as f:
        f.write('{"op": "POSITION_OPEN", "status": "completed"}\n')  # no id: the operation is unknown
    d.wait_status(lambda s: not s["verdict"]["sound"] and "WAL not proven" in " ".join(s["verdict"]["blockers"]))
    r = cli(d.config, "status")
    start = [line for line in r.out.splitlines() if line.startswith("  start ")]
    assert start and start[0].startswith(
        "  start     guardian gate: REFUSED (real mode): WAL not proven: UNKNOWN wal:line3"
    )
    assert r.code == 2, r.out


@pytest.mark.parametrize(
    ("mode", "worst", "sound", "code"),
    [("real", "HIGH", False, 2), ("real", "HIGH", True, 1), ("paper", "HIGH", False, 1), ("real", None, True, 0)],
)
def test_status_exits_critical_when_a_real_mode_start_would_be_refused_whatever_the_worst_level(
    mode: str, worst: str | None, sound: bool, code: int
) -> None:
    from guardian.daemon import status as st

    snap = st.Snapshot({}, st.Status(mode=mode, worst=worst, verdict=st.StartVerdict(sound=sound)))
    live = st.Liveness(st.Process.RUNNING, 1.0, ())
    assert st.exit_code(snap, live) == code


def test_guardian_status_without_any_daemon_says_so_with_exit_3(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    r = cli(make_config(tree), "status")
    assert r.code == 3 and "NOT RUNNING" in r.out and "no status" in r.out


def test_an_invalid_config_stops_run_with_exit_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("bot: {home: /nonexistent, mode: fast}\n")
    r = subprocess.run(
        [str(GUARDIAN), "--config", str(bad), "run"], check=False, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 78 and "bot.mode" in r.stderr and "Traceback" not in r.stderr


def test_a_bot_not_yet_running_when_the_daemon_starts_is_reported_down_only_after_the_grace(
    tree: BotTree, daemon: Callable[..., Running]
) -> None:
    d = daemon(tree, extra={"thresholds": {"bot_start_grace": "1s"}})
    assert "BOT_DOWN" not in {f["code"] for f in d.status()["findings"]}  # at boot the bot starts after guardian
    down = d.wait_alert("BOT_DOWN")
    started = datetime.fromisoformat(d.status()["started_at"].replace("Z", "+00:00"))
    fired = datetime.fromisoformat(down["ts"].replace("Z", "+00:00"))
    assert (fired - started).total_seconds() >= 1.0  # by the grace timer, not by an event


def test_the_daemon_exports_its_findings_to_a_prometheus_textfile(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running], tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    prom = tmp_path / "textfile" / "guardian.prom"
    prom.parent.mkdir()
    d = daemon(tree, extra={"metrics": {"textfile": str(prom)}})
    tree.positions.write_text("{")
    d.wait_alert("STATE_FILE_CORRUPT")
    d.signal(signal.SIGTERM)  # the last textfile is written at the stop, whatever the flush interval
    assert d.proc.wait(timeout=5) == 0
    samples = {
        (s.name, s.labels.get("code"), s.labels.get("level")): s.value
        for fam in text_string_to_metric_families(prom.read_text())
        for s in fam.samples
    }
    assert samples[("guardian_findings", "STATE_FILE_CORRUPT", "HIGH")] == 1
    assert samples[("guardian_up", None, None)] == 0  # stopped cleanly


def test_a_notify_socket_nobody_reads_never_blocks_the_loop(
    tree: BotTree, bot_pid: int, daemon: Callable[..., Running]
) -> None:
    d = daemon(tree)
    # The test reads no more notifications: after max_dgram_qlen pings (WATCHDOG=1 every 0.1 s) the
    # socket's queue is full. The loop must drop what does not fit and go on: its status (rewritten
    # once a second while idle) keeps moving, and a fault is still seen.
    qlen = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    started = datetime.fromisoformat(d.status()["started_at"].replace("Z", "+00:00"))

    def age(s: dict[str, Any]) -> float:
        return (datetime.fromisoformat(s["updated_at"].replace("Z", "+00:00")) - started).total_seconds()

    d.wait_status(lambda s: age(s) > (qlen + 5) * 0.1)
    tree.positions.write_text("{")
    d.wait_alert("STATE_FILE_CORRUPT")
