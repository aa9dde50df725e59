"""Issue 11, as a property over (fault x the way the repair fails): whenever the real-mode gate
allows, the positions file afterwards is valid, every record in it judged, and it holds exactly the
open positions the bot had; and whatever it changed, it kept first.

Each example builds a bot on a tmpfs of its own, plants one fault, makes the repair fail one way
(self-heal disabled, a child process holding the bot's lock, the filesystem full, or mounted
read-only) and runs the gate. Run as root (the mounts); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from guardian.demo import BotTree, build_bot_tree, default_open_position, iso_z, write_config
from guardian.state import FileState, load_positions
from tests.conftest import Result, read_json, write_json
from tests.mounts import fill, readonly_bind, tmpfs

Cli = Callable[..., Result]
FAULTS = (
    "none",
    "truncate-positions",
    "garble-positions",
    "null-in-closed",
    "pnl-string",
    "delete-positions",
    "empty-positions",
    "delete-logs",
    "tear-portfolio",
    "delete-portfolio",
    "wal-pending",
)
FAILURES = ("none", "heal-disabled", "lock-held", "disk-full", "read-only")
MARKETS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def _open_positions(n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        default_open_position(
            now, id=f"pos-{i}", symbol=MARKETS[i], size=0.001, order={"status": "filled", "qty": 0.001}
        )
        for i in range(n)
    ]


def plant(t: BotTree, fault: str, cut: float) -> None:
    raw = t.positions.read_bytes()
    if fault == "truncate-positions":
        t.positions.write_bytes(raw[: max(1, int(len(raw) * cut))])
    elif fault == "garble-positions":
        at = int(len(raw) * cut)
        t.positions.write_bytes(raw[:at] + b"\x00#garbage#\x00" + raw[at + 12 :])
    elif fault in ("null-in-closed", "pnl-string"):
        doc = read_json(t.positions)
        if fault == "null-in-closed":
            doc["closed_positions"].append(None)
        else:
            doc["closed_positions"][0]["pnl"] = "12.5"
        write_json(t.positions, doc)
    elif fault == "delete-positions":
        t.positions.unlink()
    elif fault == "empty-positions":
        t.positions.write_bytes(b"")
    elif fault == "delete-logs":
        shutil.rmtree(t.data / "logs")
    elif fault == "tear-portfolio":
        pf = t.portfolio.read_bytes()
        t.portfolio.write_bytes(pf[: max(1, int(len(pf) * cut))])
    elif fault == "delete-portfolio":
        t.portfolio.unlink()
    elif fault == "wal-pending":
        with t.wal.open("a") as f:
            f.write(
                json.dumps({"id": "op-9", "op": "POSITION_OPEN", "status": "pending", "ts": iso_z(datetime.now(UTC))})
            )
            f.write("\n")


@contextlib.contextmanager
def lock_held(path: Path) -> Iterator[None]:
    """A child process holding ``<path>.lock`` with filelock, as the bot does, until the block ends."""
    ready = path.with_name(f".ready-{time.monotonic_ns()}")
    code = (
        "import filelock, pathlib, sys, time\n"
        "lock = filelock.FileLock(sys.argv[1]); lock.acquire()\n"
        "pathlib.Path(sys.argv[2]).touch()\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, f"{path}.lock", str(ready)], cwd="/")
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.01)
        ready.unlink()
        yield
    finally:
        child.kill()
        child.wait(timeout=10)


@contextlib.contextmanager
def failing(how: str, t: BotTree, fs: Path) -> Iterator[None]:
    if how == "lock-held":
        with lock_held(t.positions):
            yield
    elif how == "disk-full":
        with fill(fs):
            yield
    elif how == "read-only":
        with readonly_bind(fs):
            yield
    else:
        yield


def files_bytes(root: Path) -> set[str]:
    out = set()
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                out.add(hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the property's filesystems (tmpfs, read-only binds) need root")
    return tmp_path


@settings(
    max_examples=int(os.environ.get("GUARDIAN_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fault=st.sampled_from(FAULTS),
    failure=st.sampled_from(FAILURES),
    n_open=st.integers(min_value=0, max_value=2),
    started_before=st.booleans(),
    cut=st.floats(min_value=0.05, max_value=0.95),
)
def test_whenever_the_real_mode_gate_allows_every_open_position_the_bot_had_is_there_and_nothing_was_lost(
    root: Path, cli: Cli, fault: str, failure: str, n_open: int, started_before: bool, cut: float
) -> None:
    example = Path(tempfile.mkdtemp(dir=root))
    fs = example / "fs"
    fs.mkdir()
    with tmpfs(fs, size_kb=8192):
        opens = _open_positions(n_open)
        t = build_bot_tree(fs / "bot", now=datetime.now(UTC), open_positions=opens, closed=4, with_wal=n_open > 0)
        extra: dict[str, Any] = {
            "guardian": {"state_dir": str(example / "guardian-state")},
            "alerts": {"journald_socket": str(example / "no-journal.socket")},
            "thresholds": {"disk_min_free_mb": 0},
            "heal": {"lock_timeout": "0.2s", "enabled": failure != "heal-disabled"},
        }
        config = write_config(t, example / "guardian.yaml", mode="real", extra=extra)
        if started_before:
            first = cli(config, "gate")
            assert first.code == 0, first.err  # a healthy first start, remembered
        plant(t, fault, cut)
        before = t.positions.read_bytes() if t.positions.is_file() else None
        with failing(failure, t, fs):
            r = cli(config, "gate")
        last = r.err.strip().splitlines()[-1]
        assert r.code in (0, 1) and last.startswith("guardian gate: "), r.err
        assert "Traceback" not in r.err
        after = t.positions.read_bytes() if t.positions.is_file() else None
        if before is not None and after != before:
            # Whatever the gate changed, it kept first.
            assert hashlib.sha256(before).hexdigest() in files_bytes(t.backups), "a changed file was not kept"
        event("allowed" if r.code == 0 else "refused")  # --hypothesis-show-statistics: the property is not vacuous
        if r.code == 0:
            assert last.startswith("guardian gate: ALLOWED (real mode): state proven sound"), last
            loaded, positions = load_positions(
                t.positions, today=datetime.now(UTC).date().isoformat(), max_bytes=1 << 30
            )
            assert loaded.state is FileState.OK, (fault, failure, loaded)
            assert positions is not None and positions.closed_unjudged == 0
            assert [p["id"] for p in positions.open] == [p["id"] for p in opens], (fault, failure, started_before)
            assert not (t.emergency_stop.exists() and read_json(t.emergency_stop).get("active"))
        else:
            assert last.startswith("guardian gate: REFUSED (real mode): "), last
