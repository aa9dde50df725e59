"""Shared fixtures: real bot trees in tmp_path, real child processes, and a CLI runner.

Nothing here writes outside tmp_path; every process a test starts is ended by its pid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from guardian.cli import main
from guardian.config import Config, load
from guardian.demo import BotTree, build_bot_tree, write_config
from tests.mounts import filesystems  # noqa: F401  (a fixture: tmpfs, read-only binds, chattr)

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def tree(tmp_path: Path) -> BotTree:
    """A healthy bot tree (blue/green slots, green current and deployed, one open position)."""
    return build_bot_tree(tmp_path / "bot", now=datetime.now(UTC))


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config for a tree; keyword ``extra`` is merged into it. Runtime state stays in tmp_path."""

    def make(t: BotTree, *, mode: str = "paper", extra: Mapping[str, Any] | None = None) -> Path:
        # guardian's state and the journal socket point into tmp_path: no test reaches the host's.
        merged: dict[str, Any] = {
            "guardian": {"state_dir": str(tmp_path / "guardian-state")},
            "alerts": {"journald_socket": str(tmp_path / "no-journal.socket")},
        }
        for k, v in (extra or {}).items():
            merged[k] = {**merged.get(k, {}), **v} if isinstance(v, Mapping) else v
        return write_config(t, tmp_path / f"guardian-{mode}.yaml", mode=mode, extra=merged)

    return make


@pytest.fixture
def cfg(tree: BotTree, make_config: Callable[..., Path]) -> Config:
    return load(make_config(tree))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``guardian --config CFG <args>`` in-process; return exit code and output."""

    def run(config: Path, *args: str) -> Result:
        capsys.readouterr()
        code = main(["--config", str(config), *args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a real child process; every one is killed (by pid) and reaped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], *, cwd: Path | None = None, ready: Path | None = None) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        if ready is not None:  # wait for the child to say it is ready, not for a fixed time
            deadline = time.monotonic() + 10
            while not ready.exists():
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"child {args} did not become ready")
                time.sleep(0.01)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


@pytest.fixture
def hold_lock(spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path) -> Callable[[Path], int]:
    """A child process that takes ``<file>.lock`` with filelock, as the bot does, and keeps it."""

    def hold(lock_file: Path) -> int:
        ready = tmp_path / f"ready-{lock_file.name}-{time.monotonic_ns()}"
        code = (
            "import filelock, pathlib, sys, time\n"
            "lock = filelock.FileLock(sys.argv[1]); lock.acquire()\n"
            "pathlib.Path(sys.argv[2]).touch()\n"
            "time.sleep(600)\n"
        )
        return spawn([sys.executable, "-c", code, str(lock_file), str(ready)], ready=ready).pid

    return hold


@pytest.fixture
def run_bot(spawn: Callable[..., subprocess.Popen[bytes]]) -> Callable[[Path], int]:
    """A real bot process running ``src/run.py`` from the given slot directory."""

    def start(slot: Path) -> int:
        p = spawn([sys.executable, "src/run.py"], cwd=slot)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until /proc shows it running from the slot
            try:
                if os.readlink(f"/proc/{p.pid}/cwd") == str(slot.resolve()):
                    return p.pid
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("bot process did not start")

    return start


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file's bytes (and every symlink's target) under ``root``, for byte-identical comparisons."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "->" + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = "<dir>"
    return out


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
