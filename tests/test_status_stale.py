"""``guardian status`` never shows an old picture as current.

The daemon rewrites status.json at least every sweep. One older than two sweeps, or whose daemon is
gone, says it stopped, or is SIGSTOPped (alive, but not looking), is STALE in the first line, its
findings marked old, exit 3. A status.json of the wrong shape is a clear message and exit 3.

Real daemons and real processes; the clock is the only fake (in the judging tests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from guardian.alerts import iso
from guardian.config import load
from guardian.daemon.status import Process, Status, judge
from guardian.demo import DEAD_PID, BotTree
from tests import test_daemon
from tests.conftest import Result

daemon = test_daemon.daemon  # `guardian run` as a real process, ended by its pid at teardown
GUARDIAN = Path(sys.executable).with_name("guardian")
WAIT = 15.0  # seconds a test waits for a process to change state before it fails


@pytest.fixture
def config(tree: BotTree, make_config: Callable[..., Path]) -> Path:
    return make_config(tree)


@pytest.fixture
def sleeper(spawn: Callable[..., subprocess.Popen[bytes]]) -> psutil.Process:
    """A live process to stand for a daemon whose status was written by hand."""
    return psutil.Process(spawn([sys.executable, "-c", "import time; time.sleep(600)"]).pid)


def status_dir(config: Path) -> Path:
    return load(config).guardian.state_dir


def write_status(config: Path, **doc: Any) -> Path:
    directory = status_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "status.json").write_text(json.dumps(doc))
    return directory / "status.json"


def hand_written(proc: psutil.Process, *, updated: datetime, state: str = "running") -> dict[str, Any]:
    return {
        "pid": proc.pid,
        "process_started": proc.create_time(),
        "state": state,
        "mode": "paper",
        "slot": "green",
        "started_at": iso(updated - timedelta(hours=1)),
        "updated_at": iso(updated),
        "summary": "CRITICAL SLOT_MISMATCH trading-bot-current; 1 CRITICAL",
        "score": 50,
        "worst": "CRITICAL",
        "findings": [
            {"level": "CRITICAL", "code": "SLOT_MISMATCH", "subject": "trading-bot-current", "message": "planted"}
        ],
    }


def first_line(r: Result) -> str:
    return r.out.splitlines()[0]


# --- a real daemon, SIGSTOPped ---------------------------------------------------------------------


def wait_stopped(pid: int, *, stopped: bool = True) -> None:
    deadline = time.monotonic() + WAIT
    while (psutil.Process(pid).status() == psutil.STATUS_STOPPED) != stopped:
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} never {'stopped' if stopped else 'continued'}")
        time.sleep(0.01)


@pytest.fixture
def stopped_daemon(tree: BotTree, daemon: Callable[..., test_daemon.Running]) -> Iterator[test_daemon.Running]:
    """A real daemon seeing a SLOT_MISMATCH, then SIGSTOPped; SIGCONTed before the daemon fixture kills it."""
    (tree.home / "DEPLOYED_SLOT").write_text("blue\n")
    d = daemon(tree)
    d.wait_status(lambda s: "SLOT_MISMATCH" in {f["code"] for f in s["findings"]})
    d.signal(signal.SIGSTOP)
    try:
        wait_stopped(d.proc.pid)
        yield d
    finally:
        d.signal(signal.SIGCONT)


def test_a_sigstopped_daemon_is_stale_in_the_first_line_with_its_findings_marked_old_and_exit_3(
    stopped_daemon: test_daemon.Running, cli: Callable[..., Result]
) -> None:
    d = stopped_daemon
    r = cli(d.config, "status")
    assert r.code == 3, r.out
    head = first_line(r)
    assert head.startswith("guardian daemon: STALE - last status ")
    assert head.endswith(f"(pid {d.proc.pid}, stopped (SIGSTOP): alive but not looking); the picture below is old")
    assert "  findings (old: as of " in r.out
    assert any(line.startswith("    old  CRITICAL  SLOT_MISMATCH") for line in r.out.splitlines()), r.out
    j = cli(d.config, "status", "--json").json()
    assert (j["running"], j["stale"], j["stale_reasons"]) == (False, True, ["stopped (SIGSTOP): alive but not looking"])


def test_the_same_daemon_sigconted_is_current_again(
    stopped_daemon: test_daemon.Running, cli: Callable[..., Result]
) -> None:
    d = stopped_daemon
    assert cli(d.config, "status").code == 3
    d.signal(signal.SIGCONT)
    wait_stopped(d.proc.pid, stopped=False)
    r = cli(d.config, "status")
    assert r.code == 2, r.out  # as check: its CRITICAL SLOT_MISMATCH
    assert first_line(r).startswith(f"guardian daemon: running (pid {d.proc.pid}, since ")
    assert "STALE" not in r.out and " old " not in r.out
    assert cli(d.config, "status", "--json").json()["stale"] is False


def test_a_daemon_that_stopped_cleanly_is_stale_and_not_running(
    tree: BotTree, daemon: Callable[..., test_daemon.Running], cli: Callable[..., Result]
) -> None:
    d = daemon(tree)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(timeout=WAIT) == 0
    r = cli(d.config, "status")
    assert r.code == 3
    assert first_line(r).endswith(f"(pid {d.proc.pid}, NOT RUNNING: it stopped); the picture below is old")


# --- a status written by hand: old, dead, of the wrong shape ------------------------------------


def test_a_status_older_than_two_sweeps_is_stale_though_its_process_lives(
    config: Path, sleeper: psutil.Process, cli: Callable[..., Result]
) -> None:
    write_status(config, **hand_written(sleeper, updated=datetime.now(UTC) - timedelta(minutes=10)))
    r = cli(config, "status")
    assert r.code == 3, r.out
    assert first_line(r) == (
        f"guardian daemon: STALE - last status 10 min ago (pid {sleeper.pid}, not updated for 10 min, over two "
        "sweeps (2 min)); the picture below is old"
    )
    assert "    old  CRITICAL  SLOT_MISMATCH  trading-bot-current  planted" in r.out.splitlines()
    assert "  summary   old  CRITICAL SLOT_MISMATCH" in r.out
    j = cli(config, "status", "--json").json()
    assert (j["stale"], j["stale_reasons"]) == (True, ["not updated for 10 min, over two sweeps (2 min)"])
    assert j["status"]["findings"][0]["message"] == "planted"  # the file as written


def test_a_fresh_status_of_a_live_process_is_current_and_exits_as_check(
    config: Path, sleeper: psutil.Process, cli: Callable[..., Result]
) -> None:
    write_status(config, **hand_written(sleeper, updated=datetime.now(UTC)))
    r = cli(config, "status")
    assert r.code == 2, r.out
    assert first_line(r).startswith(f"guardian daemon: running (pid {sleeper.pid}")
    assert "    CRITICAL  SLOT_MISMATCH  trading-bot-current  planted" in r.out.splitlines()


def test_two_sweeps_are_read_from_the_config(
    tree: BotTree, make_config: Callable[..., Path], sleeper: psutil.Process, cli: Callable[..., Result]
) -> None:
    config = make_config(tree, extra={"daemon": {"sweep": "10m"}})
    write_status(config, **hand_written(sleeper, updated=datetime.now(UTC) - timedelta(minutes=10)))
    assert cli(config, "status").code == 2  # 10 min is within two sweeps of 10 min


def test_a_status_whose_pid_is_dead_is_stale_and_not_running(
    config: Path, sleeper: psutil.Process, cli: Callable[..., Result]
) -> None:
    doc = hand_written(sleeper, updated=datetime.now(UTC))
    write_status(config, **{**doc, "pid": DEAD_PID})
    r = cli(config, "status")
    assert r.code == 3
    assert first_line(r).endswith(f"(pid {DEAD_PID}, NOT RUNNING: its process is gone); the picture below is old")


def test_a_status_whose_pid_was_reused_by_another_process_is_not_running(
    config: Path, sleeper: psutil.Process, cli: Callable[..., Result]
) -> None:
    doc = hand_written(sleeper, updated=datetime.now(UTC))
    write_status(config, **{**doc, "process_started": sleeper.create_time() - 3600})
    r = cli(config, "status")
    assert r.code == 3
    assert "NOT RUNNING: its process is gone" in first_line(r)


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ([1, 2], "Expected `object`, got `array`"),
        ({"pid": 1, "findings": ["CRITICAL", "SLOT_MISMATCH"]}, "Expected `object`, got `str` - at `$.findings[0]`"),
        ({"pid": "1234"}, "Expected `int | null`, got `str` - at `$.pid`"),
        ({"checks": {"wal": []}}, "Expected `object`, got `array` - at `$.checks[...]`"),
    ],
    ids=["a-list", "findings-of-strings", "pid-a-string", "a-check-a-list"],
)
def test_a_status_of_the_wrong_shape_is_a_clear_message_and_exit_3(
    config: Path, cli: Callable[..., Result], doc: Any, why: str
) -> None:
    path = status_dir(config) / "status.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    r = cli(config, "status")
    assert r.code == 3
    assert r.out == f"guardian daemon: UNKNOWN - {path} is not a status the daemon wrote ({why})\n"
    j = cli(config, "status", "--json")
    assert j.code == 3
    assert (j.json()["stale"], j.json()["status"]) == (True, None)


def test_a_status_that_is_not_json_is_a_clear_message_and_exit_3(config: Path, cli: Callable[..., Result]) -> None:
    path = status_dir(config) / "status.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"pid": 12')
    r = cli(config, "status")
    assert r.code == 3
    assert first_line(r).startswith(f"guardian daemon: UNKNOWN - {path} is not JSON (")


def test_a_fifo_in_place_of_the_status_is_reported_without_hanging(config: Path) -> None:
    path = status_dir(config) / "status.json"
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    r = subprocess.run(
        [str(GUARDIAN), "--config", str(config), "status"], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 3, r.stderr
    assert r.stdout == f"guardian daemon: UNKNOWN - {path} cannot be read (is a FIFO)\n"


# --- the judging itself, with the clock passed in ----------------------------------------------------

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def at(seconds_ago: float, state: str = "running") -> Status:
    return Status(pid=1, state=state, updated_at=iso(NOW - timedelta(seconds=seconds_ago)))


def test_a_status_exactly_two_sweeps_old_is_current_and_a_second_more_is_stale() -> None:
    assert judge(at(120), Process.RUNNING, now=NOW, sweep=60).stale == ()
    assert judge(at(121), Process.RUNNING, now=NOW, sweep=60).stale == (
        "not updated for 2 min, over two sweeps (2 min)",
    )


def test_a_status_from_further_in_the_future_than_two_sweeps_is_stale() -> None:
    assert judge(at(-5), Process.RUNNING, now=NOW, sweep=60).stale == ()
    assert judge(at(-600), Process.RUNNING, now=NOW, sweep=60).stale == ("updated_at is 10 min in the future",)


def test_a_status_without_a_readable_time_is_stale() -> None:
    for updated in (None, "yesterday"):
        assert judge(Status(pid=1, updated_at=updated), Process.RUNNING, now=NOW, sweep=60).stale == (
            "no readable updated_at",
        )


def test_a_live_process_whose_status_says_stopped_is_stale() -> None:
    live = judge(at(0, state="stopped"), Process.RUNNING, now=NOW, sweep=60)
    assert (live.running, live.stale) == (False, ("state: stopped",))
