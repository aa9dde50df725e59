"""The alert log survives a full disk: on a real, small tmpfs, an alert cut short by ENOSPC is the
only line lost; the next one, written once there is room again, is read back whole.

Mounting needs root; without it (or where the mount is refused) the tests skip, saying why. What a
test mounts is unmounted in its fixture's teardown.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from guardian.alerts import Alert
from guardian.alerts.jsonl import JsonlSink
from guardian.alerts.reader import read_alerts
from guardian.demo import BotTree

GUARDIAN = Path(sys.executable).with_name("guardian")
SIZE = 64 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs under tmp_path, unmounted at teardown. (A shared mount fixture is being written
    as tests/mounts.py; this one stays here until the two are merged.)"""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small-fs"
    where.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs", str(where)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        st = os.statvfs(where)
        assert st.f_blocks * st.f_frsize == SIZE, "not the small filesystem the test needs"
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, timeout=30, check=True)


def fill(directory: Path) -> Path:
    """Take every free block of the filesystem, as a bot's runaway log would."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler


def guardian(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [str(GUARDIAN), "--config", str(config), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture
def config(tree: BotTree, make_config: Callable[..., Path], small_fs: Path) -> Path:
    return make_config(tree, extra={"alerts": {"jsonl": str(small_fs / "operator_alerts.jsonl")}})


def test_an_alert_torn_by_a_full_disk_does_not_take_the_next_one_with_it(config: Path, small_fs: Path) -> None:
    log = small_fs / "operator_alerts.jsonl"
    assert guardian(config, "emergency-stop", "--reason", "first").returncode == 0
    assert log.read_bytes().endswith(b"\n") and log.read_bytes().count(b"\n") == 1
    filler = fill(small_fs)
    # Longer than what is left of the log's last page: the disk takes part of it, then is full.
    torn = guardian(config, "emergency-stop", "--reason", "x" * 10_000)
    assert torn.returncode == 0, torn.stderr  # the kill switch is set; only the alert log failed
    assert "guardian: warning: alert sink jsonl failed: OSError: [Errno 28] short write (" in torn.stderr
    assert not log.read_bytes().endswith(b"\n")  # really torn: what a full disk leaves behind
    filler.unlink()
    assert guardian(config, "clear-stop", "--approver", "ops").returncode == 0
    read = guardian(config, "alerts", "--json")
    assert read.returncode == 0, read.stderr
    got = [json.loads(line) for line in read.stdout.splitlines()]
    assert [(a["code"], a["context"]) for a in got] == [
        ("EMERGENCY_STOP_SET", {"reason": "first"}),
        ("EMERGENCY_STOP_CLEARED", {"approver": "ops"}),
    ]
    assert "1 unreadable line(s) skipped" in read.stderr  # the torn one, and only it


def test_a_sink_writing_into_a_full_disk_fails_loudly_and_the_log_recovers_when_there_is_room(
    small_fs: Path,
) -> None:
    """The same in-process, through the sink: every good line survives, in order."""
    log = small_fs / "operator_alerts.jsonl"
    sink = JsonlSink(log)

    def alert(code: str, message: str = "m") -> Alert:
        return Alert(
            ts="2026-11-21T12:00:00.000Z", level="HIGH", code=code, subject="s", message=message,
            action_required=False, event="firing",
        )  # fmt: skip

    sink.emit(alert("A"))
    filler = fill(small_fs)
    with pytest.raises(OSError, match="short write"):
        sink.emit(alert("TORN", "x" * 10_000))
    with pytest.raises(OSError, match="No space left"):  # nothing of it written: the page is full now
        sink.emit(alert("NO_ROOM"))
    filler.unlink()
    sink.emit(alert("B"))
    sink.emit(alert("C"))
    result = read_alerts(log)
    assert ([a["code"] for a in result.alerts], result.skipped) == (["A", "B", "C"], 1)
    assert log.read_bytes().endswith(b"\n")
