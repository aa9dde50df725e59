"""Kill anywhere: `guardian heal` and the daemon's runtime heal, SIGKILLed at many moments on trees
holding every recoverable fault at once.

After each kill: every state file holds its old bytes or its new, valid content (never a mix, never
empty); every byte of the original tree is still somewhere in it (the file itself, or a backup);
and a second, unkilled heal finishes the job: it leaves what an unkilled heal leaves, nothing
recoverable, every backup matching its manifest checksum.

Kill moments come two ways: a delay drawn uniformly over 0..1.2x the measured duration of an
unkilled run, and, for precision, SIGKILL on entry to the N-th call of every syscall that changes a
file (strace fault injection), so the state after each change is seen once. guardian has no hook
for either.

CI runs a short version (about a minute); GUARDIAN_LONG=1, or ``bench/kill_anywhere.py`` with its
figures table, the long one.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from guardian.backups import BackupStore
from guardian.checks import run_checks
from guardian.cli import main as guardian_main
from guardian.config import load
from guardian.context import Context
from guardian.demo import DEAD_PID, BotTree, build_bot_tree, iso_z, write_config
from guardian.heal import HealResult, heal
from guardian.model import Outcome

GUARDIAN = Path(sys.executable).with_name("guardian")
LONG = os.environ.get("GUARDIAN_LONG") == "1"
KINDS = ("salvage", "repair", "cold")
STRACE = shutil.which("strace")
# Every syscall that changes a file, a directory or a process: a kill on entry to the N-th call of
# one of these shows the tree exactly as the calls before it left it.
MUTATING = (
    "write", "pwrite64", "writev", "fsync", "fdatasync", "rename", "renameat", "renameat2", "unlink",
    "unlinkat", "mkdir", "mkdirat", "rmdir", "fchmod", "fchmodat", "chmod", "fchown", "fchownat", "chown",
    "ftruncate", "truncate", "link", "linkat", "kill", "pidfd_send_signal",
)  # fmt: skip
GUARDIAN_TMP = re.compile(r"^\..+\.guardian-\d+\.tmp$")
STALE = timedelta(hours=1)


# --- a tree with every recoverable fault ---------------------------------------------------------


@dataclass
class Orphan:
    """A bot process running outside the bot unit (ORPHAN_PROCESS); ended by its pidfd, so a
    recycled pid is never signalled."""

    proc: subprocess.Popen[bytes]
    pidfd: int
    reaper: threading.Thread

    @classmethod
    def start(cls, slot: Path) -> Orphan:
        proc = subprocess.Popen([sys.executable, "src/run.py"], cwd=slot, stdin=subprocess.DEVNULL)
        # Reaped the moment it dies: guardian, not its parent, waits for it to be gone, and a
        # zombie would look alive to it.
        reaper = threading.Thread(target=proc.wait, daemon=True)
        reaper.start()
        return cls(proc, os.pidfd_open(proc.pid), reaper)

    def end(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        self.reaper.join(timeout=10)
        os.close(self.pidfd)


@dataclass
class Planted:
    kind: str
    tree: BotTree
    config: Path
    opens: list[dict[str, Any]]  # the open positions the positions file held
    closed: list[dict[str, Any]]  # the closed positions it held
    balance: float  # the balance the portfolio must hold once healed
    original: dict[str, bytes]  # every regular file under the home, by path relative to it
    orphan: Orphan | None = None

    def rel(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.tree.home))

    def close(self) -> None:
        if self.orphan is not None:
            self.orphan.end()
            self.orphan = None


def _old(path: Path, age: timedelta = STALE) -> None:
    t = (datetime.now(UTC) - age).timestamp()
    os.utime(path, (t, t))


def _json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def files_under(home: Path) -> dict[str, bytes]:
    """Every regular file under ``home`` (symlinks not followed), by path relative to it."""
    out: dict[str, bytes] = {}
    for dirpath, _dirs, names in os.walk(home):
        for name in names:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(home))] = p.read_bytes()
    return out


def plant(root: Path, kind: str, *, orphan: bool = True, daemon: bool = False) -> Planted:
    """A tree with every recoverable fault the kind allows (the two state files can each have one)."""
    now = datetime.now(UTC)
    cold = kind == "cold"
    t = build_bot_tree(
        root / "bot",
        now=now,
        closed=0 if cold else 5,
        open_positions=[] if cold else None,
        heartbeat_components=("bot_cycle", "feed"),
    )
    _json(t.emergency_stop, {"active": False, "cleared_by": "admin", "cleared_at": iso_z(now)})
    doc = json.loads(t.positions.read_text())
    opens, closed = doc["open_positions"], doc["closed_positions"]
    balance = 0.0
    if kind == "salvage":  # CORRUPT positions (cut inside closed_positions: the stop is set), MALFORMED portfolio
        raw = t.positions.read_bytes()
        t.positions.write_bytes(raw[: raw.index(b'"closed_positions"') + 200])
        pf = json.loads(t.portfolio.read_text())
        del pf["open_positions_count"]
        balance = pf["balance"]  # kept by the repair
        _json(t.portfolio, pf)
        shutil.rmtree(t.data / "feature_store")
        shutil.rmtree(t.data / "configs")
        tmp = t.data / "logs" / "positions_futures.json.tmp"
        tmp.write_bytes(b'{"open_positions": [{"id": "half-writ')
        lock = t.positions.with_name(t.positions.name + ".lock")
    elif kind == "repair":  # MALFORMED positions (closed list missing: the stop is set), torn portfolio
        _json(t.positions, {"open_positions": opens, "bot_version": "7.1"})
        closed = []
        balance = json.loads(t.portfolio.read_text())["balance"]  # salvaged from the torn file
        t.portfolio.write_bytes(b'{"balance": %r, "open_positions_count": 1, "upd' % balance)
        shutil.rmtree(t.data / "data")
        shutil.rmtree(t.data / "state" / "wal")
        tmp = t.heartbeats / "tmp1a2b3c4d"
        tmp.write_bytes(b'{"component": "feed", "pid": 1, "ts": ')
        lock = t.portfolio.with_name(t.portfolio.name + ".lock")
    else:  # a cold start: both state files MISSING, the backups directory and the WAL too
        t.positions.unlink()
        t.portfolio.unlink()
        t.wal.unlink()
        shutil.rmtree(t.backups)
        shutil.rmtree(t.data / "configs")
        tmp = t.data / "logs" / ".portfolio_futures.json.tmp"
        tmp.write_bytes(b'{"balance": 12')
        lock = t.heartbeats / "bot_cycle.json.lock"
    _old(tmp)
    lock.write_text(f"{DEAD_PID}\n{socket.gethostname()}\n")  # a SoftFileLock marker of a dead process
    _old(lock)
    # One heartbeat an hour stale, one an hour in the future (a clock jump or a bad writer).
    _json(t.heartbeats / "bot_cycle.json", {"component": "bot_cycle", "pid": DEAD_PID, "ts": iso_z(now - STALE)})
    _json(t.heartbeats / "feed.json", {"component": "feed", "pid": DEAD_PID, "ts": iso_z(now + STALE)})
    state = root / "guardian-state"
    extra: dict[str, Any] = {
        "guardian": {"state_dir": str(state)},
        "alerts": {"journald_socket": str(root / "no-journal.socket")},
        "heal": {"kill_orphans_in_paper": not daemon, "orphan_term_timeout": "2s"},
    }
    config = write_config(t, root / "guardian.yaml", extra=extra)
    p = Planted(kind, t, config, opens, closed, balance, files_under(t.home))
    if orphan:
        p.orphan = Orphan.start(t.current_slot)
    return p


# --- what must hold after a kill, and after the heal that finishes the job -----------------------


def _doc(raw: bytes) -> Any:
    return json.loads(raw)  # strict: a torn or partial file fails here


def positions_ok(p: Planted, raw: bytes) -> str | None:
    doc = _doc(raw)
    if not isinstance(doc, dict) or doc.get("open_positions") != p.opens:
        return "open positions not preserved"
    got = doc.get("closed_positions")
    if not isinstance(got, list) or got != p.closed[: len(got)]:
        return "closed positions are not the original ones"
    if p.kind == "repair" and doc.get("bot_version") != "7.1":
        return "an unknown key was dropped"
    return None


def portfolio_ok(p: Planted, raw: bytes) -> str | None:
    doc = _doc(raw)
    if not isinstance(doc, dict):
        return "not an object"
    if doc.get("balance") != p.balance or doc.get("open_positions_count") != len(p.opens):
        return f"balance/count {doc.get('balance')}/{doc.get('open_positions_count')}"
    return None


def heartbeat_ok(component: str) -> Callable[[Planted, bytes], str | None]:
    def ok(p: Planted, raw: bytes) -> str | None:
        doc = _doc(raw)
        if not isinstance(doc, dict) or doc.get("component") != component or not isinstance(doc.get("ts"), str):
            return "not a heartbeat"
        datetime.fromisoformat(doc["ts"].replace("Z", "+00:00"))
        return None

    return ok


def stop_ok(p: Planted, raw: bytes) -> str | None:
    """A repair that may lose closed positions sets the stop; a cold start leaves it as it was."""
    doc = _doc(raw)
    if p.kind == "cold":
        return None if raw == p.original[p.rel(p.tree.emergency_stop)] else "the stop changed on a cold start"
    if not isinstance(doc, dict) or doc.get("active") is not True or doc.get("set_by") != "guardian":
        return "the stop is not set by guardian"
    return None


def validators(p: Planted) -> dict[str, Callable[[Planted, bytes], str | None]]:
    """The state files guardian may rewrite, with what their new content must be."""
    t = p.tree
    return {
        p.rel(t.positions): positions_ok,
        p.rel(t.portfolio): portfolio_ok,
        p.rel(t.emergency_stop): stop_ok,
        p.rel(t.heartbeats / "bot_cycle.json"): heartbeat_ok("bot_cycle"),
        p.rel(t.heartbeats / "feed.json"): heartbeat_ok("feed"),
    }


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def violations(p: Planted, *, finished: bool, backup_shas: set[str] | None = None) -> list[str]:
    """Everything wrong with the tree now. ``finished``: after the heal that must finish the job,
    when every state file must hold its new content and every backup be in the manifest."""
    now = files_under(p.tree.home)
    bad: list[str] = []
    valid = validators(p)
    backups = p.rel(p.tree.backups) + "/"
    alerts = p.rel(p.tree.alerts)
    # 1. Every state file: its old bytes or its new valid content; never absent if it existed.
    for rel, ok in valid.items():
        if rel not in now:
            if rel in p.original or finished:
                bad.append(f"{rel}: missing")
            continue
        if rel in p.original and now[rel] == p.original[rel] and not finished:
            continue
        try:
            why = ok(p, now[rel])
        except ValueError as e:
            why = f"not valid JSON ({e})"
        if why:
            bad.append(f"{rel}: {why} ({len(now[rel])} bytes)")
    # 2. Every byte of the original tree is still in it.
    present = {_sha(b) for b in now.values()}
    bad += [
        f"{rel}: its original bytes are nowhere in the tree" for rel, b in p.original.items() if _sha(b) not in present
    ]
    # 3. Nothing else changed, and nothing new is torn or unexpected.
    allowed_backups = backup_shas or {_sha(b) for b in p.original.values()}
    manifest: dict[str, str] = {}
    for rel, b in now.items():
        name = Path(rel).name
        if rel in valid or name.endswith(".lock"):
            continue  # a lock file guardian removed may come back, empty, as the lock it writes under
        if rel in p.original:
            if b != p.original[rel]:
                bad.append(f"{rel}: changed")
        elif GUARDIAN_TMP.match(name):
            continue  # a save's temp file cut short: its target is judged above
        elif rel == alerts or rel == backups + "manifest.jsonl":
            if b and not b.endswith(b"\n"):
                bad.append(f"{rel}: torn last line")
            for line in b.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    bad.append(f"{rel}: unreadable line {line[:60]!r}")
                    continue
                if rel != alerts:
                    manifest[entry.get("id", "")] = entry.get("sha256", "")
        elif rel.startswith(backups) and name.endswith(".bak"):
            if _sha(b) not in allowed_backups:
                bad.append(f"{rel}: a backup that is no copy of a file the tree held ({len(b)} bytes)")
        else:
            bad.append(f"{rel}: unexpected new file")
    if finished:
        for rel, b in now.items():
            if rel.startswith(backups) and rel.endswith(".bak") and manifest.get(Path(rel).name, _sha(b)) != _sha(b):
                bad.append(f"{rel}: does not match its manifest checksum")
    return bad


# What an unkilled heal leaves: a repair that may have lost closed positions sets the emergency stop
# (the day's loss is the operator's to confirm). Nothing recoverable is ever left.
LEFT_AFTER_HEAL: dict[str, set[str]] = {
    "salvage": {"EMERGENCY_STOP_ACTIVE"},
    "repair": {"EMERGENCY_STOP_ACTIVE"},
    "cold": set(),
}


def quiet_cli(*args: str) -> tuple[int, str, str]:
    """``guardian ARGS`` in this process (a fresh interpreter per call would dominate the run time)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = guardian_main(list(args))
    return code, out.getvalue(), err.getvalue()


def finish(p: Planted) -> list[str]:
    """The second heal (never killed) must finish the job and leave nothing recoverable."""
    after_kill = {_sha(b) for b in files_under(p.tree.home).values()} | {_sha(b) for b in p.original.values()}
    code, out, err = quiet_cli("--config", str(p.config), "heal")
    expected = 1 if LEFT_AFTER_HEAL[p.kind] else 0
    bad = [] if code == expected else [f"second heal exit {code}: {out.strip()} {err.strip()[-400:]}"]
    left = {f.code for f in run_checks(Context(load(p.config))).findings}
    if left != LEFT_AFTER_HEAL[p.kind]:
        bad.append(f"findings after the second heal: {sorted(left)}, not {sorted(LEFT_AFTER_HEAL[p.kind])}")
    return bad + violations(p, finished=True, backup_shas=after_kill)


# --- running guardian and killing it -------------------------------------------------------------


def run_until(cmd: list[str], delay: float | None, env: dict[str, str] | None = None) -> bool:
    """Run ``cmd``; SIGKILL it ``delay`` seconds after it starts (None: let it finish). True if killed."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        proc.wait(timeout=delay if delay is not None else 60)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


def heal_cmd(p: Planted) -> list[str]:
    return [str(GUARDIAN), "--config", str(p.config), "heal"]


@dataclass
class Tally:
    """What a batch of runs did, for the test's assertion and the README's figures."""

    runs: int = 0
    killed: int = 0
    mid_heal: int = 0  # killed after the heal had changed something: a half-healed tree was judged
    faults: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, label: str, p: Planted, killed: bool, changed: bool, bad: list[str], *, orphan: bool) -> None:
        self.runs += 1
        self.killed += killed
        self.mid_heal += killed and changed
        self.faults += FAULTS_PER_KIND[p.kind] - (not orphan)
        self.by_kind[p.kind] += 1
        self.failures += [f"{label}: {b}" for b in bad]

    def summary(self) -> str:
        return (
            f"{self.runs} runs ({self.killed} killed, {self.mid_heal} of them mid-heal), {self.faults} faults injected, "
            f"{len(self.failures)} violations, {self.seconds:.0f}s"
        )


# Faults each kind plants: directories, the two state files, temp file, lock, two heartbeats, orphan.
FAULTS_PER_KIND = {"salvage": 9, "repair": 9, "cold": 8}


@contextlib.contextmanager
def scratch(base: Path, name: str) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def one_run(base: Path, kind: str, label: str, tally: Tally, kill: Callable[[Planted], bool], **plant_kw: Any) -> None:
    with scratch(base, kind) as root:
        p = plant(root, kind, **plant_kw)
        try:
            killed = kill(p)
            changed = files_under(p.tree.home) != p.original
            bad = violations(p, finished=False)
            bad += finish(p)
        finally:
            p.close()
        tally.add(label, p, killed, changed, bad, orphan=plant_kw.get("orphan", True))


def measure(base: Path, kind: str, cmd: Callable[[Planted], list[str]], **plant_kw: Any) -> float:
    """Wall time of an unkilled run (the mean of two); the run must also heal everything."""
    times = []
    for _ in range(2):
        with scratch(base, kind) as root:
            p = plant(root, kind, **plant_kw)
            try:
                t0 = time.monotonic()
                assert not run_until(cmd(p), None)
                times.append(time.monotonic() - t0)
                bad = violations(p, finished=True)
                assert not bad, bad
            finally:
                p.close()
    return sum(times) / len(times)


def timed_heal_kills(base: Path, runs: int, seed: int) -> Tally:
    """``runs`` heals (spread over the kinds), each SIGKILLed after a delay uniform over 0..1.2x
    the unkilled duration of its kind."""
    rng = random.Random(seed)
    tally = Tally()
    t0 = time.monotonic()
    durations = {k: measure(base, k, heal_cmd) for k in KINDS}
    for i in range(runs):
        kind = KINDS[i % len(KINDS)]
        delay = rng.uniform(0, 1.2 * durations[kind])

        def kill(p: Planted, delay: float = delay) -> bool:
            return run_until(heal_cmd(p), delay)

        one_run(base, kind, f"heal {kind} killed at {delay * 1000:.0f} ms", tally, kill)
    tally.seconds = time.monotonic() - t0
    return tally


def syscall_counts(p: Planted, cmd: list[str], log: Path) -> collections.Counter[str]:
    """How often an unkilled run makes each mutating syscall."""
    assert STRACE
    subprocess.run(
        [STRACE, "-f", "-qq", "-o", str(log), "-e", "trace=" + ",".join(MUTATING), *cmd],
        check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    calls = re.findall(r"^(?:\d+\s+)?(\w+)\(", log.read_text(), re.MULTILINE)
    return collections.Counter(c for c in calls if c in MUTATING)


def syscall_kills(base: Path, kinds: tuple[str, ...], names: tuple[str, ...] = MUTATING) -> Tally:
    """For each kind, one heal SIGKILLed on entry to the N-th call of each mutating syscall, for
    every N the unkilled run reaches: every intermediate state of the heal is looked at."""
    assert STRACE
    tally = Tally()
    t0 = time.monotonic()
    for kind in kinds:
        with scratch(base, kind) as root:
            p = plant(root, kind)
            try:
                counts = syscall_counts(p, heal_cmd(p), root / "trace.log")
            finally:
                p.close()
        for name, n in sorted(counts.items()):
            if name not in names:
                continue
            for when in range(1, n + 1):

                def kill(p: Planted, name: str = name, when: int = when) -> bool:
                    inject = f"inject={name}:signal=KILL:when={when}"
                    cmd = [STRACE, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={name}", "-e", inject, *heal_cmd(p)]
                    rc = subprocess.run(
                        cmd, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                    ).returncode
                    return rc == -signal.SIGKILL  # strace ends itself with the signal that ended its tracee

                one_run(base, kind, f"heal {kind} killed at {name} #{when}", tally, kill)
    tally.seconds = time.monotonic() - t0
    return tally


# --- the daemon ----------------------------------------------------------------------------------


@contextlib.contextmanager
def notify_socket() -> Iterator[tuple[socket.socket, dict[str, str]]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"guardian-kill-{os.getpid()}-{time.monotonic_ns()}"
    sock.bind("\0" + name)  # abstract: nothing left on disk
    env = {**os.environ, "NOTIFY_SOCKET": "@" + name}
    for k in ("WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY"):
        env.pop(k, None)
    try:
        yield sock, env
    finally:
        sock.close()


def daemon_ready_time(base: Path, kind: str) -> float:
    """Seconds from starting ``guardian run`` to READY=1: its first look and runtime heal are done."""
    with scratch(base, kind) as root, notify_socket() as (sock, env):
        p = plant(root, kind, orphan=False, daemon=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [str(GUARDIAN), "--config", str(p.config), "run"], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            sock.settimeout(30)
            while b"READY=1" not in sock.recv(65536):
                pass
            return time.monotonic() - t0
        finally:
            proc.kill()
            proc.wait()


def daemon_kills(base: Path, runs: int, seed: int) -> Tally:
    """``guardian run`` on a faulted tree, SIGKILLed after a delay uniform over 0..1.2x its time to READY."""
    rng = random.Random(seed)
    tally = Tally()
    t0 = time.monotonic()
    ready = {k: daemon_ready_time(base, k) for k in KINDS}
    for i in range(runs):
        kind = KINDS[i % len(KINDS)]
        delay = rng.uniform(0, 1.2 * ready[kind])

        def kill(p: Planted, delay: float = delay) -> bool:
            with notify_socket() as (_sock, env):
                return run_until([str(GUARDIAN), "--config", str(p.config), "run"], delay, env)

        one_run(base, kind, f"run {kind} killed at {delay * 1000:.0f} ms", tally, kill, orphan=False, daemon=True)
    tally.seconds = time.monotonic() - t0
    return tally


# --- what the kills found (each failed before its fix) -------------------------------------------


def _cold_tree(root: Path) -> tuple[BotTree, Path]:
    t = build_bot_tree(root / "bot", now=datetime.now(UTC), open_positions=[], with_wal=False)
    extra = {"guardian": {"state_dir": str(root / "state")}, "alerts": {"journald_socket": str(root / "none")}}
    return t, write_config(t, root / "guardian.yaml", extra=extra)


def _codes(result: HealResult) -> set[str]:
    return {f.code for f in result.after.findings}


def test_the_backup_of_a_stale_lock_is_not_taken_for_a_backup_of_the_portfolio_it_guards(tmp_path: Path) -> None:
    # Was: backups were matched by name prefix, so `portfolio_futures.json.lock`'s backup counted as
    # one of `portfolio_futures.json`, and an empty portfolio was refused as "balance unknown".
    t, config = _cold_tree(tmp_path)
    t.portfolio.write_bytes(b"")
    lock = t.portfolio.with_name(t.portfolio.name + ".lock")
    lock.write_text(f"{DEAD_PID}\n{socket.gethostname()}\n")
    _old(lock)
    result = heal(load(config))
    assert not _codes(result) & {"STATE_FILE_EMPTY", "STATE_UNRECOVERABLE", "LOCK_STALE"}, result.to_json()["refused"]
    assert json.loads(t.portfolio.read_text())["balance"] == 0


def test_an_empty_portfolio_kept_by_a_heal_killed_before_its_write_does_not_block_the_next_heal(tmp_path: Path) -> None:
    # Was: the heal killed between keeping the empty file and writing the new one left a backup,
    # and any backup meant "the balance is unknown": the next heal refused for ever.
    t, config = _cold_tree(tmp_path)
    t.portfolio.write_bytes(b"")
    BackupStore(t.data, t.backups).keep(t.portfolio, "empty")
    result = heal(load(config))
    assert not _codes(result) & {"STATE_FILE_EMPTY", "STATE_UNRECOVERABLE"}, result.to_json()["refused"]
    assert json.loads(t.portfolio.read_text())["open_positions_count"] == 0


def test_a_backup_that_holds_a_balance_still_refuses_an_empty_portfolio(tmp_path: Path) -> None:
    # The fix above must not turn a real balance into 0: a backup with one still blocks.
    t, config = _cold_tree(tmp_path)
    BackupStore(t.data, t.backups).keep(t.portfolio, "manual")
    t.portfolio.write_bytes(b"")
    result = heal(load(config))
    assert "STATE_UNRECOVERABLE" in _codes(result)
    assert t.portfolio.read_bytes() == b""


def test_a_stale_heartbeat_hidden_by_a_young_orphans_grace_is_reset_by_the_heal_that_ends_the_orphan(
    tmp_path: Path,
) -> None:
    # Was: a bot process younger than bot_start_grace hides stale heartbeats; the heal ended it and
    # reported success with the stale heartbeat showing, so only a second heal finished the job.
    t, config = _cold_tree(tmp_path)
    beat = t.heartbeats / "bot_cycle.json"
    _json(beat, {"component": "bot_cycle", "pid": DEAD_PID, "ts": iso_z(datetime.now(UTC) - STALE)})
    orphan = Orphan.start(t.current_slot)
    try:
        result = heal(load(config))
    finally:
        orphan.end()
    assert [a.finding.code for a in result.actions if a.outcome is Outcome.HEALED] == [
        "ORPHAN_PROCESS",
        "HEARTBEAT_STALE",
    ]
    assert "HEARTBEAT_STALE" not in _codes(result)
    assert result.success


# --- the tests -----------------------------------------------------------------------------------


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path


def _report(name: str, tally: Tally) -> None:
    print(f"\n{name}: {tally.summary()}")
    assert tally.failures == [], "\n".join(tally.failures[:40])


@pytest.mark.parametrize("kind", KINDS)
def test_an_unkilled_heal_repairs_every_planted_fault_and_keeps_every_byte(base: Path, kind: str) -> None:
    # The baseline the kills are judged against: each kind's faults are all found, all healed.
    with scratch(base, kind) as root:
        p = plant(root, kind)
        try:
            before = {f.code for f in run_checks(Context(load(p.config))).findings if f.recoverable}
            assert before == {
                "DIRECTORY_MISSING", "TEMP_FILE_LEFTOVER", "LOCK_STALE", "HEARTBEAT_STALE", "ORPHAN_PROCESS",
                *{"salvage": ("STATE_FILE_CORRUPT", "STATE_FILE_MALFORMED"),
                  "repair": ("STATE_FILE_MALFORMED", "STATE_FILE_CORRUPT"),
                  "cold": ("STATE_FILE_MISSING",)}[kind],
            }  # fmt: skip
            assert not run_until(heal_cmd(p), None)
            assert violations(p, finished=True) == []
            assert finish(p) == []  # and a second heal changes nothing that matters
        finally:
            p.close()


def test_the_checker_sees_a_torn_state_file_and_a_lost_original(base: Path) -> None:
    # The verdict must be able to fail: a half-written portfolio and a deleted temp file are caught.
    with scratch(base, "salvage") as root:
        p = plant(root, "salvage", orphan=False)
        p.tree.portfolio.write_bytes(b'{"balance": 10625.05, "open_po')
        (p.tree.data / "logs" / "positions_futures.json.tmp").unlink()
        bad = violations(p, finished=False)
        assert any("portfolio_futures.json: not valid JSON" in b for b in bad), bad
        assert any("positions_futures.json.tmp: its original bytes are nowhere" in b for b in bad), bad


def test_heal_killed_at_random_moments_never_tears_or_loses_a_file_and_a_second_heal_finishes(base: Path) -> None:
    _report("timed heal kills", timed_heal_kills(base, 600 if LONG else 60, seed=6))


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_heal_killed_before_each_rename_never_tears_or_loses_a_file(base: Path) -> None:
    # Each rename is a commit point: a kill before it sees the temp file written and fsynced, the
    # target not yet replaced (this is what caught a heal killed between keeping an empty portfolio
    # and writing it). The long version stops at every write, fsync, mkdir, unlink, chmod and kill
    # too. (strace stops the heal at every syscall: its --seccomp-bpf, which would not, does not inject.)
    tally = syscall_kills(base, KINDS, MUTATING if LONG else ("rename", "renameat", "renameat2"))
    assert tally.mid_heal > tally.runs // 2  # the kills did land inside the heal
    _report("syscall heal kills", tally)


def test_the_daemon_killed_at_random_moments_of_its_runtime_heal_never_tears_or_loses_a_file(base: Path) -> None:
    _report("timed daemon kills", daemon_kills(base, 150 if LONG else 30, seed=7))
