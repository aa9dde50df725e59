"""Hostile input: any bytes in any state file, any YAML in the config, and the nasty cases (a
symlink out of the tree, a FIFO or a directory where a file should be, a 500 MB file, a file
guardian cannot read, a lock owned by another user, a heartbeat from the future, clock jumps).

guardian answers with findings (check 0-3, heal 0/1) or a config error (78), never a traceback,
and never loses the original bytes. The property tests run in-process (a fresh interpreter per
example would dominate); hypothesis keeps no database, so nothing is written outside tmp dirs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from guardian.cli import main as guardian_main
from guardian.config import EX_CONFIG, Config, load
from guardian.demo import DEAD_PID, BotTree, build_bot_tree, default_open_position, iso_z, write_config
from guardian.heal import heal
from guardian.model import Outcome
from tests.test_least_privilege import BotUser, bot_user_or_skip

GUARDIAN = Path(sys.executable).with_name("guardian")
LONG = os.environ.get("GUARDIAN_LONG") == "1"
# No example database (nothing written into the repo); the long version tries 20 times as many.
FUZZ = settings(
    max_examples=3000 if LONG else 150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
OTHER_UID = 65534  # nobody: "another user" for ownership


@dataclass
class Run:
    code: int
    out: str
    err: str


def cli(config: Path, *args: str) -> Run:
    """``guardian --config CONFIG ARGS`` in this process, output captured. An uncaught exception
    propagates and fails the test: that is the traceback an operator must never see."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = guardian_main(["--config", str(config), *args])
    return Run(code, out.getvalue(), err.getvalue())


def make_tree(root: Path, *, now: datetime | None = None, **kw: Any) -> tuple[BotTree, Path]:
    t = build_bot_tree(root / "bot", now=now or datetime.now(UTC), closed=kw.pop("closed", 3), **kw)
    t.emergency_stop.write_text(
        json.dumps({"active": False, "cleared_by": "admin", "cleared_at": iso_z(datetime.now(UTC))})
    )
    return t, config_for(t, root)


def config_for(t: BotTree, root: Path, **extra: Any) -> Path:
    merged: dict[str, Any] = {
        "guardian": {"state_dir": str(root / "guardian-state")},
        "alerts": {"journald_socket": str(root / "no-journal.socket")},
        # Nothing here is an orphan to kill: the tests' own processes are ended by the tests.
        "heal": {"kill_orphans_in_paper": False},
    }
    for k, v in extra.items():
        merged[k] = {**merged.get(k, {}), **v}
    return write_config(t, root / "guardian.yaml", extra=merged)


def shas(root: Path) -> set[str]:
    """The checksum of every regular file under ``root`` (symlinks not followed)."""
    out = set()
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            with contextlib.suppress(OSError):
                if stat.S_ISREG(p.lstat().st_mode):
                    out.add(hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def every_file(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if stat.S_ISREG(p.lstat().st_mode):
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


@contextlib.contextmanager
def fresh_dir() -> Iterator[Path]:
    """A new temp dir per hypothesis example (function-scoped fixtures are shared across examples)."""
    d = Path(tempfile.mkdtemp(prefix="guardian-hostile-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- strategies ----------------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
TARGETS = ("positions", "portfolio", "heartbeat", "wal", "emergency_stop")


def target_path(t: BotTree, target: str) -> Path:
    return {
        "positions": t.positions,
        "portfolio": t.portfolio,
        "heartbeat": t.heartbeats / "bot_cycle.json",
        "wal": t.wal,
        "emergency_stop": t.emergency_stop,
    }[target]


def _mutate_doc(draw: st.DrawFn, doc: Any, depth: int = 0) -> Any:
    """Replace, drop or retype one part of a valid document, walking down a random path."""
    if isinstance(doc, dict) and doc and depth < 4:
        key = draw(st.sampled_from(sorted(doc)))
        how = draw(st.sampled_from(["descend", "replace", "drop"]))
        if how == "drop":
            return {k: v for k, v in doc.items() if k != key}
        new = _mutate_doc(draw, doc[key], depth + 1) if how == "descend" else draw(VALUES)
        return {**doc, key: new}
    if isinstance(doc, list) and doc and depth < 4:
        i = draw(st.integers(0, len(doc) - 1))
        return [*doc[:i], _mutate_doc(draw, doc[i], depth + 1), *doc[i + 1 :]]
    return draw(VALUES)


def _byte_damage(draw: st.DrawFn, raw: bytes) -> bytes:
    how = draw(st.sampled_from(["none", "truncate", "bom", "bad-utf8", "dup-key", "deep", "huge", "splice"]))
    if how == "truncate":
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "bad-utf8":
        i = draw(st.integers(0, len(raw)))
        return raw[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + raw[i:]
    if how == "dup-key" and raw.startswith(b"{"):
        return b'{"open_positions": [], "balance": 0, "active": true, ' + raw[1:]
    if how == "deep":
        n = draw(st.sampled_from([100, 2_000, 100_000]))
        return raw.replace(b"[", b"[" + b"[" * n + b"]" * n + b",", 1) if b"[" in raw else b"[" * n + b"]" * n
    if how == "huge":
        token = draw(st.sampled_from([b"1e999", b"-1e999", b"NaN", b"Infinity", b"1" * 400, b"-0", b"1e-400"]))
        return raw.replace(b"10625.05", token).replace(b"50000.0", token).replace(b"0.01", token, 1)
    if how == "splice":
        i = draw(st.integers(0, len(raw)))
        return raw[:i] + draw(st.binary(max_size=16)) + raw[i:]
    return raw


@st.composite
def hostile_bytes(draw: st.DrawFn, valid: bytes) -> bytes:
    """Any bytes at all, or a near miss of the file's valid content."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=600))
    lines = valid.splitlines(keepends=True)
    if len(lines) > 1 and valid.count(b"\n") == len(lines) and b'"op"' in valid:  # the WAL: JSON lines
        i = draw(st.integers(0, len(lines) - 1))
        doc = _mutate_doc(draw, json.loads(lines[i]))
        lines[i] = json.dumps(doc).encode() + b"\n"
        return _byte_damage(draw, b"".join(lines))
    doc = _mutate_doc(draw, json.loads(valid))
    return _byte_damage(draw, json.dumps(doc).encode())


def _held_open_ids(raw: bytes) -> set[str] | None:
    """The ids of the open positions a positions file plainly holds, as Python's json reads it."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("open_positions"), list):
        return None
    return {str(p["id"]) for p in doc["open_positions"] if isinstance(p, dict) and p.get("id") is not None}


# --- any bytes in any state file -----------------------------------------------------------------


def survives(target: str, content: Callable[[bytes], bytes]) -> None:
    """Put hostile bytes in one state file of a fresh tree; check and heal must answer with findings,
    and lose nothing. ``content`` gets the file's valid bytes and returns what to write instead."""
    with fresh_dir() as root:
        t, config = make_tree(root)
        path = target_path(t, target)
        raw = content(path.read_bytes())
        path.write_bytes(raw)
        before = every_file(t.home)
        checked = cli(config, "check", "--json")
        assert checked.code in (0, 1, 2, 3), checked.err
        crashed = [f["message"] for f in json.loads(checked.out)["findings"] if f["subject"].startswith("check:")]
        assert crashed == [], "a check raised (caught, but a bug)"
        healed = cli(config, "heal", "--json")
        assert healed.code in (0, 1), healed.err
        result = json.loads(healed.out)
        assert [f["message"] for f in result["findings"] if f["subject"].startswith("check:")] == []
        present = shas(t.home)
        lost = [rel for rel, b in before.items() if hashlib.sha256(b).hexdigest() not in present]
        assert lost == [], f"original bytes of {lost} are gone"
        now = path.read_bytes()
        if target == "positions" and now != raw:
            # Never turn unknown into flat: what the file plainly held open is still open.
            assert (_held_open_ids(raw) or set()) <= (_held_open_ids(now) or set()), result["healed"]
        if target == "portfolio" and now != raw:
            old = json.loads(raw) if _parses(raw) else None
            if isinstance(old, dict) and isinstance(old.get("balance"), int | float):
                assert json.loads(now)["balance"] == old["balance"], result["healed"]  # NaN != NaN: refused, or lost
        if target in ("wal", "emergency_stop"):
            assert now == raw  # guardian never rewrites these


@pytest.mark.parametrize("target", TARGETS)
@FUZZ
@given(data=st.data())
def test_any_bytes_in_a_state_file_give_findings_never_a_traceback_and_lose_nothing(
    target: str, data: st.DataObject
) -> None:
    survives(target, lambda valid: data.draw(hostile_bytes(valid), label="content"))


DEEP = b"[" * 5000 + b"]" * 5000
HUGE = b"1" * 400
# What the fuzzing found, kept as fixed cases (each failed before its fix).
FOUND: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "invalid UTF-8 in a key (heal raised)": ("positions", lambda v: v.replace(b'{"open', b'{"\xffopen', 1)),
    "invalid UTF-8 in a value": ("positions", lambda v: v.replace(b'"BTCUSDT"', b'"\xff"', 1)),
    "a list as a direction": ("positions", lambda v: v.replace(b'"LONG"', b"[]", 1)),
    "nested 5000 deep": ("positions", lambda v: v.replace(b'"order"', b'"deep": ' + DEEP + b', "order"', 1)),
    "a 400-digit price": ("positions", lambda v: v.replace(b"50000.0", HUGE, 1)),
    "a portfolio nested 5000 deep": ("portfolio", lambda v: DEEP),
    "a 400-digit balance": ("portfolio", lambda v: v.replace(b"10625.05", HUGE)),
    "an infinite balance, count missing": ("portfolio", lambda v: b'{"balance": 1e999}'),
    "a heartbeat nested 5000 deep": ("heartbeat", lambda v: DEEP),
    "a list as a WAL status": ("wal", lambda v: v.replace(b'"completed"', b"[]")),
    "a WAL line nested 5000 deep": ("wal", lambda v: v + DEEP + b"\n"),
    "a kill switch nested 5000 deep": ("emergency_stop", lambda v: DEEP),
    # Found by the long run: the salvage decoded with "replace" and rewrote the id as U+FFFD.
    "invalid UTF-8 in an open position's id": (
        "positions",
        lambda v: v.replace(b'"pos-open-000001"', b'"\xed\xa0\x80pos-open-000001"', 1),
    ),
    "an escaped lone surrogate in an open position's id": (
        "positions",
        lambda v: v.replace(b'"pos-open-000001"', b'"\\ud800pos-open-000001"', 1),
    ),
}


@pytest.mark.parametrize("case", list(FOUND))
def test_the_hostile_files_fuzzing_found_give_findings_and_lose_nothing(case: str) -> None:
    survives(*FOUND[case])


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


# --- any YAML in the config ----------------------------------------------------------------------

YAML_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["~nosuchuser/x", "2001-13-45", "5m", "-1s", "1e999", "0x1F", ".inf", "-.nan", "", "/"])
)
YAML_VALUES = st.recursive(
    YAML_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)


def _sections() -> dict[str, list[str]]:
    import dataclasses
    import typing

    hints = typing.get_type_hints(Config)
    return {name: [g.name for g in dataclasses.fields(tp)] for name, tp in hints.items()}


@st.composite
def near_configs(draw: st.DrawFn) -> Any:
    """A config with guardian's own sections and keys, each value anything YAML can say."""
    doc: dict[str, Any] = {
        "bot": {"home": draw(st.sampled_from(["/srv/bot", "~nosuchuser/bot", "rel", ""])), "mode": "paper"}
    }
    for section, keys in _sections().items():
        for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
            doc.setdefault(section, {})[key] = draw(YAML_VALUES)
    return doc


def validate(text: str) -> Run:
    with fresh_dir() as tmp:
        path = tmp / "guardian.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        return cli(path, "validate-config")


@FUZZ
@given(text=st.text(max_size=300))
@example(text="thresholds: {min_health_score: .inf}\nbot: {home: /x, mode: paper}")
@example(text="limits: {max_open_positions: .nan}\nbot: {home: /x, mode: paper}")
@example(text="limits: {max_position_pct: " + "9" * 400 + "}\nbot: {home: /x, mode: paper}")
@example(text="bot: {home: ~nosuchuser/bot, mode: paper}")
@example(text="bot: {home: /x, mode: paper}\nx: 2001-13-45")
@example(text="bot: {home: /x, mode: paper}\nx: !!float abc")
@example(text="[" * 5000 + "]" * 5000)
@example(text="bot: {home: '/x\x00y', mode: paper}")
def test_any_yaml_text_is_a_valid_config_or_a_config_error_78_never_a_traceback(text: str) -> None:
    r = validate(text)
    assert r.code in (0, EX_CONFIG), r.err
    if r.code == EX_CONFIG:
        assert "invalid config" in r.err and "Traceback" not in r.err


@FUZZ
@given(doc=near_configs() | YAML_VALUES)
def test_any_yaml_structure_is_a_valid_config_or_a_config_error_78_never_a_traceback(doc: Any) -> None:
    r = validate(yaml.safe_dump(doc, allow_unicode=True))
    assert r.code in (0, EX_CONFIG), r.err


# --- the nasty cases -----------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> BotTree:
    return make_tree(tmp_path)[0]


@pytest.fixture
def config(tree: BotTree, tmp_path: Path) -> Path:
    return tmp_path / "guardian.yaml"


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir(exist_ok=True)
    return out


def _stamp(path: Path) -> tuple[bytes, int, int]:
    st_ = path.stat()
    return path.read_bytes(), st_.st_mtime_ns, st_.st_ino


SYMLINKABLE = ("positions", "portfolio", "heartbeat", "wal", "emergency_stop")


@pytest.mark.parametrize("target", SYMLINKABLE)
def test_a_state_file_that_is_a_symlink_out_of_the_tree_is_reported_and_never_written_through(
    tree: BotTree, config: Path, tmp_path: Path, target: str
) -> None:
    path = target_path(tree, target)
    victim = _outside(tmp_path) / f"{target}.json"
    victim.write_bytes(b"{}")  # empty-looking: exactly what a remedy would rewrite
    os.utime(victim, (1_000_000_000, 1_000_000_000))  # old: a heartbeat or temp-file rule would fire
    before = _stamp(victim)
    path.unlink()
    path.symlink_to(victim)
    checked = cli(config, "check", "--json")
    subjects = {(f["code"], f["subject"]) for f in json.loads(checked.out)["findings"]}
    rel = str(path.relative_to(tree.data)) if target != "heartbeat" else "heartbeat:bot_cycle"
    assert ("UNKNOWN", rel) in subjects, subjects
    healed = cli(config, "heal")
    assert healed.code in (0, 1)
    assert _stamp(victim) == before
    assert path.is_symlink()


@pytest.mark.parametrize("target", ["positions", "portfolio", "heartbeat", "wal", "emergency_stop"])
def test_a_fifo_where_a_state_file_should_be_is_reported_without_hanging(
    tree: BotTree, config: Path, target: str
) -> None:
    path = target_path(tree, target)
    path.unlink()
    os.mkfifo(path)
    findings = []
    for args in (["check", "--json"], ["heal", "--json"]):
        # A fresh process with a deadline: an open() that blocks on the FIFO would hang it for ever.
        cmd = [str(GUARDIAN), "--config", str(config), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        assert r.returncode in (0, 1, 2, 3), r.stderr
        assert "Traceback" not in r.stderr
        findings += json.loads(r.stdout)["findings"]
    assert stat.S_ISFIFO(path.lstat().st_mode)
    said = ("a FIFO", "is a FIFO or socket", "not a regular file")
    assert any(f["code"] == "UNKNOWN" and any(w in f["message"] for w in said) for f in findings), findings


@pytest.mark.parametrize("target", ["positions", "portfolio", "heartbeat", "emergency_stop"])
def test_a_directory_where_a_state_file_should_be_is_reported_and_left_alone(
    tree: BotTree, config: Path, target: str
) -> None:
    path = target_path(tree, target)
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("keep me")
    checked = cli(config, "check", "--json")
    assert checked.code in (2, 3)
    said = ("a directory", "not a regular file")
    assert any(
        f["code"] == "UNKNOWN" and any(w in f["message"] for w in said) for f in json.loads(checked.out)["findings"]
    )
    assert cli(config, "heal").code in (0, 1)
    assert path.is_dir() and (path / "inside").read_text() == "keep me"


# Starts the command and writes its peak RSS (KiB) to argv[1]. A child forked straight from pytest
# counts pytest's own pages (hundreds of MB after the fuzzing) in its ru_maxrss until it execs; forked
# from this small process, the figure is guardian's own.
_MEASURE = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def _run_measured(cmd: list[str]) -> tuple[int, str, int]:
    """Exit code, stdout and peak RSS (bytes) of a child run to completion."""
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as peak:
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, peak.name, *cmd], stdout=out, stderr=subprocess.DEVNULL, check=False
        )
        out.seek(0)
        return proc.returncode, out.read().decode(), int(Path(peak.name).read_text()) * 1024


MB = 1 << 20


def test_a_500_mb_positions_file_over_the_limit_is_reported_without_being_read(tree: BotTree, tmp_path: Path) -> None:
    with tree.positions.open("r+b") as f:
        f.truncate(500 * MB)  # sparse: the JSON, then 500 MB of NULs
    config = config_for(tree, tmp_path, files={"max_state_mb": 100})
    code, out, rss = _run_measured([str(GUARDIAN), "--config", str(config), "check", "--json"])
    assert code == 3
    assert any(f["code"] == "UNKNOWN" and "over the limit" in f["message"] for f in json.loads(out)["findings"])
    assert rss < 150 * MB, f"peak RSS {rss // MB} MB: the file was read"
    code, _out, rss = _run_measured([str(GUARDIAN), "--config", str(config), "heal"])
    assert code in (0, 1) and rss < 150 * MB
    assert tree.positions.stat().st_size == 500 * MB


def test_a_500_mb_corrupt_positions_file_under_the_default_limit_does_not_exhaust_memory(
    tree: BotTree, tmp_path: Path
) -> None:
    opens = json.loads(tree.positions.read_text())["open_positions"]
    with tree.positions.open("r+b") as f:
        f.truncate(500 * MB)  # the JSON, then 500 MB of NULs: corrupt, but its arrays are whole
    config = config_for(tree, tmp_path)
    # check holds the file's bytes once; heal's salvage also holds their decoded text.
    for args, factor in ((["check", "--json"], 1.0), (["heal"], 2.0)):
        code, _out, rss = _run_measured([str(GUARDIAN), "--config", str(config), *args])
        assert code in (0, 1, 2, 3)
        assert rss < factor * 500 * MB + 120 * MB, f"{args[0]}: peak RSS {rss // MB} MB for a 500 MB file"
    assert json.loads(tree.positions.read_text())["open_positions"] == opens  # salvaged
    kept = [p for p in tree.backups.iterdir() if "corrupt" in p.name]
    assert [p.stat().st_size for p in kept] == [500 * MB]  # and the 500 MB kept as they were


@pytest.fixture
def runner() -> Iterator[BotUser]:
    """guardian as the bot's (unprivileged) user: as root, a mode-000 file would not stop it."""
    with bot_user_or_skip() as user:
        yield user


def test_a_state_file_guardian_cannot_read_is_reported_unknown_and_left_alone(runner: BotUser) -> None:
    t, config = make_tree(runner.home)
    runner.hand_over(runner.home)
    t.positions.chmod(0)
    r = runner.guardian(config, "check", "--json")
    assert r.returncode == 3, r.stderr
    assert any(f["code"] == "UNKNOWN" and "permission denied" in f["message"] for f in json.loads(r.stdout)["findings"])
    r = runner.guardian(config, "heal")
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    assert stat.S_IMODE(t.positions.stat().st_mode) == 0


def test_a_lock_owned_by_another_user_that_the_bots_user_cannot_open_fails_the_write_cleanly(runner: BotUser) -> None:
    # guardian as the bot's user; the positions lock belongs to someone else and is mode 0600.
    t, config = make_tree(runner.home, closed=3)
    raw = t.positions.read_bytes()
    cut = raw[: raw.index(b'"closed_positions"') + 80]
    t.positions.write_bytes(cut)  # CORRUPT: heal must take the lock to write it
    runner.hand_over(runner.home)
    lock = t.positions.with_name(t.positions.name + ".lock")
    lock.touch(mode=0o600)
    os.chown(lock, runner.uid + 1, runner.gid + 1)
    started = time.monotonic()
    r = runner.guardian(config, "heal", "--json")
    assert time.monotonic() - started < 30
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    (action,) = [a for a in json.loads(r.stdout)["actions"] if a["code"] == "STATE_FILE_CORRUPT"]
    assert action["outcome"] == "failed", action
    assert t.positions.read_bytes() == cut


def test_a_heartbeat_from_the_future_is_reported_and_reset_with_its_bytes_kept(tree: BotTree, config: Path) -> None:
    beat = tree.heartbeats / "bot_cycle.json"
    beat.write_text(
        json.dumps({"component": "bot_cycle", "pid": DEAD_PID, "ts": iso_z(datetime.now(UTC) + timedelta(days=3))})
    )
    original = beat.read_bytes()
    checked = json.loads(cli(config, "check", "--json").out)["findings"]
    (f,) = [f for f in checked if f["code"] == "HEARTBEAT_STALE"]
    assert "in the future" in f["message"]
    assert cli(config, "heal").code == 0
    assert json.loads(beat.read_text())["ts"] != json.loads(original)["ts"]
    assert hashlib.sha256(original).hexdigest() in shas(tree.backups)


def _assert_nothing_lost(t: BotTree, before: dict[str, bytes], opens: Any) -> None:
    present = shas(t.home)
    assert [r for r, b in before.items() if hashlib.sha256(b).hexdigest() not in present] == []
    assert json.loads(t.positions.read_text())["open_positions"] == opens
    assert json.loads(t.portfolio.read_text())["balance"] == 10625.05


@pytest.mark.parametrize(
    "jump", [-3650, -1, 1, 3650], ids=["tree-10y-old", "tree-1d-old", "tree-1d-ahead", "tree-10y-ahead"]
)
def test_a_tree_written_under_a_jumped_clock_loses_no_data_to_a_heal(tmp_path: Path, jump: int) -> None:
    # The bot's clock was off (or ours is): every timestamp and mtime in the tree is `jump` days away.
    then = datetime.now(UTC) + timedelta(days=jump)
    t, config = make_tree(tmp_path, now=then, open_positions=[default_open_position(then)])
    tmp = t.data / "logs" / "positions_futures.json.tmp"
    tmp.write_bytes(b'{"open_positions": [')
    lock = t.positions.with_name(t.positions.name + ".lock")
    lock.write_text(f"{DEAD_PID}\n{socket.gethostname()}\n")
    for p in (tmp, lock):
        os.utime(p, (then.timestamp(), then.timestamp()))
    opens = json.loads(t.positions.read_text())["open_positions"]
    before = every_file(t.home)
    result = heal(load(config))
    _assert_nothing_lost(t, before, opens)
    changed = {a.finding.code for a in result.actions if a.outcome is Outcome.HEALED}
    # A file from the future is not old: no temp file is moved and no lock removed on its account.
    if jump > 0:
        assert tmp.read_bytes() == before[str(tmp.resolve().relative_to(t.home))] and lock.exists()
        assert changed <= {"HEARTBEAT_STALE"}


@pytest.mark.parametrize(
    "jump", [-3650, -1, 1, 3650], ids=["clock-10y-back", "clock-1d-back", "clock-1d-ahead", "clock-10y-ahead"]
)
def test_guardians_clock_jumping_loses_no_data_to_a_heal(tmp_path: Path, jump: int) -> None:
    # A healthy tree written now; guardian's clock reads `jump` days away (NTP step, bad RTC).
    t, config = make_tree(tmp_path)
    young_tmp = t.data / "logs" / "positions_futures.json.tmp"  # a save in progress, a second old
    young_tmp.write_bytes(b'{"open_positions": [')
    opens = json.loads(t.positions.read_text())["open_positions"]
    before = every_file(t.home)
    result = heal(load(config), now=datetime.now(UTC) + timedelta(days=jump))
    _assert_nothing_lost(t, before, opens)
    healed = {a.finding.code for a in result.actions if a.outcome is Outcome.HEALED}
    assert healed <= {"HEARTBEAT_STALE", "TEMP_FILE_LEFTOVER"}, healed
    assert {a.finding.code for a in result.actions if a.outcome is Outcome.FAILED} == set()
