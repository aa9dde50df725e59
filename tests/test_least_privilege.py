"""Least privilege: guardian runs as the bot's own user wherever it can; where it runs as root, it
never writes through a symlink out of the bot's tree and never ends a process that is not the bot's.

The bot's user here is an unprivileged uid (65534) owning a tree in a world-traversable temp dir;
guardian runs as it through ``setpriv`` (or ``runuser``), with an interpreter that user can execute
and this checkout's packages on its path. A test that needs it skips, saying why, when the host
cannot provide it; nothing outside temp dirs is chmod'ed or chown'ed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import guardian
from guardian.config import load
from guardian.demo import DEAD_PID, BotTree, build_bot_tree, iso_z, write_config
from guardian.heal import heal
from guardian.model import Outcome

BOT_UID = BOT_GID = 65534
REPO = Path(guardian.__file__).resolve().parent.parent
SITE = sysconfig.get_paths()["purelib"]  # this venv's packages (msgspec, yaml, psutil, filelock ...)


def _drop(uid: int, gid: int) -> list[str] | None:
    """The argv prefix that runs a command as ``uid``:``gid`` with no capabilities, or None."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    if shutil.which("runuser") and uid == 65534:
        return ["runuser", "-u", "nobody", "--"]
    return None


_PYTHON: list[str | None] = []


def unprivileged_python() -> str | None:
    """An interpreter of this Python version that the bot's user can run (this venv's own may live
    under /root, which other users cannot traverse), or None."""
    if _PYTHON:
        return _PYTHON[0]
    found = None
    drop = _drop(BOT_UID, BOT_GID)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (
        sys.executable,
        os.path.realpath(sys.executable),
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ):
        if drop is None or not os.path.exists(candidate):
            continue
        probe = subprocess.run(
            [*drop, "env", f"PYTHONPATH={REPO}:{SITE}", candidate, "-s", "-c", "import guardian.cli, msgspec, yaml, psutil"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        if probe.returncode == 0:
            found = candidate
            break
    _PYTHON.append(found)
    return found


@dataclass
class BotUser:
    """Runs guardian as the bot's user, on trees it owns under ``home``."""

    home: Path  # a world-traversable temp dir: build trees and configs here
    uid: int
    gid: int
    drop: list[str]
    python: str

    def hand_over(self, path: Path) -> None:
        """Make ``path`` (recursively, symlinks not followed) the bot user's, as a deployment would."""
        for dirpath, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                os.chown(Path(dirpath) / name, self.uid, self.gid, follow_symlinks=False)
        os.chown(path, self.uid, self.gid)

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "PYTHONPATH": f"{REPO}:{SITE}",
            "PYTHONDONTWRITEBYTECODE": "1",  # the checkout is root's: nothing is written into it
        }
        return subprocess.run(
            [*self.drop, "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def guardian(self, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.python, "-s", "-m", "guardian", "--config", str(config), *args)


@contextlib.contextmanager
def bot_user_or_skip() -> Iterator[BotUser]:
    """A BotUser with its own temp dir (removed after), or a skip that says what the host lacks."""
    drop = _drop(BOT_UID, BOT_GID)
    if drop is None:
        pytest.skip("needs root and setpriv or runuser to run guardian as another user")
    python = unprivileged_python()
    if python is None:
        pytest.skip(f"no python{sys.version_info.major}.{sys.version_info.minor} that uid {BOT_UID} can execute")
    # pytest's tmp_path sits under a 0700 directory of root's: the bot's user could not reach it.
    home = Path(tempfile.mkdtemp(prefix="guardian-botuser-"))
    home.chmod(0o755)
    try:
        yield BotUser(home, BOT_UID, BOT_GID, drop, python)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def bot_user() -> Iterator[BotUser]:
    with bot_user_or_skip() as user:
        yield user


def faulted_tree(root: Path, *, real: bool = False, **extra: Any) -> tuple[BotTree, Path]:
    """A tree with a corrupt-but-salvageable positions file, a portfolio lacking its count, a stale
    heartbeat, a temp leftover, a stale soft lock and a missing directory."""
    now = datetime.now(UTC)
    t = build_bot_tree(root / "bot", now=now, closed=3)
    (root / "opens.json").write_text(json.dumps(json.loads(t.positions.read_text())["open_positions"]))
    t.positions.write_bytes(t.positions.read_bytes() + b"\x00 garbage")  # corrupt, every record still readable
    pf = json.loads(t.portfolio.read_text())
    del pf["open_positions_count"]
    t.portfolio.write_text(json.dumps(pf))
    (t.heartbeats / "bot_cycle.json").write_text(
        json.dumps({"component": "bot_cycle", "pid": DEAD_PID, "ts": iso_z(now - timedelta(hours=1))})
    )
    tmp = t.data / "logs" / "positions_futures.json.tmp"
    tmp.write_bytes(b'{"open_positions": [')
    lock = t.portfolio.with_name(t.portfolio.name + ".lock")
    lock.write_text(f"{DEAD_PID}\n{socket.gethostname()}\n")
    for p in (tmp, lock):
        os.utime(p, (now.timestamp() - 3600, now.timestamp() - 3600))
    shutil.rmtree(t.data / "feature_store")
    merged: dict[str, Any] = {
        "guardian": {"state_dir": str(root / "guardian-state")},
        "alerts": {"journald_socket": str(root / "no-journal.socket")},
        **extra,
    }
    return t, write_config(t, root / "guardian.yaml", mode="real" if real else "paper", extra=merged)


def owners(root: Path) -> set[int]:
    out = set()
    for dirpath, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            out.add((Path(dirpath) / name).lstat().st_uid)
    return out


# --- as the bot's user -----------------------------------------------------------------------------


def test_check_heal_and_gate_do_their_whole_job_as_the_bots_own_user(bot_user: BotUser) -> None:
    t, config = faulted_tree(bot_user.home, real=True)
    opens = json.loads((bot_user.home / "opens.json").read_text())
    bot_user.hand_over(bot_user.home)
    checked = bot_user.guardian(config, "check", "--json")
    assert checked.returncode == 1, checked.stderr  # HIGH findings, nothing it cannot read
    codes = {f["code"] for f in json.loads(checked.stdout)["findings"]}
    assert {
        "STATE_FILE_CORRUPT",
        "STATE_FILE_MALFORMED",
        "HEARTBEAT_STALE",
        "TEMP_FILE_LEFTOVER",
        "LOCK_STALE",
    } <= codes
    assert "UNKNOWN" not in codes
    healed = bot_user.guardian(config, "heal", "--json")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    out = json.loads(healed.stdout)
    assert out["failed"] == [] and out["refused"] == []
    assert out["stats"]["files_repaired"] == 3 and out["stats"]["directories_created"] == 1
    gate = bot_user.guardian(config, "gate")
    assert gate.returncode == 0, gate.stderr
    assert "ALLOWED (real mode)" in gate.stderr.strip().splitlines()[-1]
    assert json.loads(t.positions.read_text())["open_positions"] == opens
    # Everything it wrote (repairs, backups, the alert log, its own state) belongs to the bot's user.
    assert owners(bot_user.home) == {bot_user.uid}


def test_as_the_bots_user_guardian_cannot_end_another_users_process_and_says_so(
    bot_user: BotUser, tmp_path: Path
) -> None:
    t, config = faulted_tree(bot_user.home)
    bot_user.hand_over(bot_user.home)
    # root's python running the bot's code: an orphan by every sign guardian can read as the bot's user.
    proc = subprocess.Popen([sys.executable, str(t.current_slot / "src" / "run.py")], cwd="/")
    try:
        healed = bot_user.guardian(config, "heal", "--json")
        assert proc.poll() is None, "a process of another user was ended"
        orphan = [a for a in json.loads(healed.stdout)["actions"] if a["code"] == "ORPHAN_PROCESS"]
        assert [a["outcome"] for a in orphan] == ["failed"], orphan
        assert "could not end" in orphan[0]["detail"]
    finally:
        proc.kill()
        proc.wait(timeout=10)


# --- as root: never through a symlink out of the tree ------------------------------------------------


def _outside(root: Path) -> Path:
    d = root / "outside"
    d.mkdir(exist_ok=True)
    return d


def _all_files(root: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


@pytest.mark.parametrize("link", ["logs/backups", "state/heartbeats", "logs", "state"])
def test_as_root_no_remedy_writes_through_a_directory_symlinked_out_of_the_tree(tmp_path: Path, link: str) -> None:
    t, config = faulted_tree(tmp_path)
    t.portfolio.write_bytes(b"")  # and an empty portfolio: every state-file remedy has work
    outside = _outside(tmp_path) / "elsewhere"
    shutil.move(t.data / link, outside)
    (t.data / link).symlink_to(outside)
    before = _all_files(outside)
    result = heal(load(config))
    assert _all_files(outside) == before, "a remedy wrote through a symlink out of the tree"
    assert {a.finding.code for a in result.actions if a.outcome is Outcome.HEALED} <= {
        "DIRECTORY_MISSING",
        "TEMP_FILE_LEFTOVER",
        "LOCK_STALE",
        "STATE_FILE_CORRUPT",
        "STATE_FILE_MALFORMED",
        "STATE_FILE_EMPTY",
        "HEARTBEAT_STALE",
    }


def test_as_root_a_missing_directory_is_not_created_through_a_symlink_out_of_the_tree(tmp_path: Path) -> None:
    t, config = faulted_tree(tmp_path)
    outside = _outside(tmp_path) / "state-elsewhere"
    shutil.move(t.data / "state", outside)
    shutil.rmtree(outside / "wal")  # DIRECTORY_MISSING state/wal, under the link
    (t.data / "state").symlink_to(outside)
    heal(load(config))
    assert not (outside / "wal").exists()


@pytest.mark.parametrize("what", ["temp-file", "lock", "heartbeat"])
def test_as_root_a_symlinked_temp_file_lock_or_heartbeat_is_never_moved_removed_or_rewritten(
    tmp_path: Path, what: str
) -> None:
    t, config = faulted_tree(tmp_path)
    victim = _outside(tmp_path) / "victim"
    old = time.time() - 7200
    name = {"temp-file": t.data / "logs" / "x.tmp", "lock": t.positions.with_name("positions_futures.json.lock"),
            "heartbeat": t.heartbeats / "feed.json"}[what]  # fmt: skip
    victim.write_text(
        f"{DEAD_PID}\n{socket.gethostname()}\n"
        if what == "lock"
        else json.dumps({"component": "feed", "pid": DEAD_PID, "ts": iso_z(datetime.now(UTC) - timedelta(hours=2))})
    )
    os.utime(victim, (old, old))
    name.symlink_to(victim)
    os.utime(name, (old, old), follow_symlinks=False)
    before = _all_files(victim.parent)
    heal(load(config))
    assert _all_files(victim.parent) == before
    assert name.is_symlink()


# --- as root: never a process that is not the bot's -------------------------------------------------


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    pidfd: int

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture
def start() -> Iterator[Callable[..., Started]]:
    """Start a process (Popen returns once it has exec'd: /proc shows its own program); every one
    is ended (through a pidfd, so a recycled pid is never signalled) and reaped at teardown."""
    started: list[Started] = []

    def go(argv: list[str], cwd: Path) -> Started:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE)  # a pipe never written: `read` waits
        s = Started(proc, os.pidfd_open(proc.pid))
        started.append(s)
        # Reaped the moment it dies, so a kill shows as the process gone, never as a zombie.
        threading.Thread(target=proc.wait, daemon=True).start()
        return s

    yield go
    for s in started:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(s.pidfd, signal.SIGKILL)
        s.proc.wait(timeout=10)
        os.close(s.pidfd)
        if s.proc.stdin is not None:
            s.proc.stdin.close()


def test_as_root_orphan_healing_ends_only_the_bots_interpreters(tmp_path: Path, start: Callable[..., Started]) -> None:
    t, config = faulted_tree(tmp_path)
    elsewhere = _outside(tmp_path)
    (elsewhere / "tool.py").write_text("import time\nwhile True: time.sleep(1)\n")
    (t.current_slot / "src" / "linked.py").symlink_to(elsewhere / "tool.py")
    (t.current_slot / "tools").symlink_to(elsewhere)
    sleep = shutil.which("sleep") or "/bin/sleep"
    bystanders = {
        # Not an interpreter, though it sits in the slot: an operator's shell or pager.
        "sleep in the slot": start([sleep, "600"], cwd=t.current_slot),
        "sh in the slot": start(["/bin/sh", "-c", "read line"], cwd=t.current_slot),
        # An interpreter, but neither its cwd nor its script lies in the home.
        "python outside the home": start([sys.executable, str(elsewhere / "tool.py")], cwd=elsewhere),
        # Tools run from outside the home that only name a file in it (its positions, to read them).
        "python -c naming a file in the home": start(
            [sys.executable, "-c", "import time; time.sleep(600)", str(t.positions)], cwd=elsewhere
        ),
        "a script outside reading a file in the home": start(
            [sys.executable, str(elsewhere / "tool.py"), str(t.positions)], cwd=elsewhere
        ),
        # Its cwd is reached through a symlink in the slot: the kernel reports where it really is.
        "python in a dir the slot links to": start([sys.executable, "tool.py"], cwd=t.current_slot / "tools"),
    }
    bot = start([sys.executable, "src/run.py"], cwd=t.current_slot)
    result = heal(load(config))
    assert not bot.alive(), "the orphan bot was not ended"
    assert [name for name, s in bystanders.items() if not s.alive()] == [], "a process that is not the bot's was ended"
    ended = [
        a.finding.context["pid"]
        for a in result.actions
        if a.finding.code == "ORPHAN_PROCESS" and a.outcome is Outcome.HEALED
    ]
    assert ended == [bot.proc.pid]
