"""Self-heal: every recoverable finding healed and verified, nothing lost, never unknown into flat."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from guardian.backups import BackupStore
from guardian.config import Config, load
from guardian.demo import DEAD_PID, BotTree, build_bot_tree, iso_z
from guardian.heal import STATS, HealResult, heal
from guardian.model import Level, Outcome, Report
from guardian.probes import read_lock_holders
from tests.conftest import Result, read_json, snapshot, write_json

ZERO = dict.fromkeys(STATS, 0)
POSITIONS = "logs/positions_futures.json"
PORTFOLIO = "logs/portfolio_futures.json"


# --- helpers -------------------------------------------------------------------------------------


def stats(result: HealResult, **expected: int) -> None:
    assert result.to_json()["stats"] == {**ZERO, **expected}


def codes(report: Report) -> set[str]:
    return {f.code for f in report.findings}


def keys(report: Report) -> set[tuple[str, str]]:
    return {f.key for f in report.findings}


def outcomes(result: HealResult, code: str) -> list[Outcome]:
    return [a.outcome for a in result.actions if a.finding.code == code]


def make_old(path: Path, seconds: float = 3600) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def lock_of(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def backups_named(t: BotTree, *parts: str) -> list[Path]:
    if not t.backups.is_dir():
        return []
    return sorted(p for p in t.backups.iterdir() if all(s in p.name for s in parts))


def truncate_in_closed(t: BotTree) -> bytes:
    """Cut the positions file inside closed_positions: the open_positions array is complete."""
    raw = t.positions.read_bytes()
    cut = raw[: raw.index(b'"closed_positions"') + 120]
    t.positions.write_bytes(cut)
    return cut


def corrupt_after_the_document(t: BotTree) -> bytes:
    """Garbage after a complete document (a stale tail of a longer file): corrupt, yet every record is there."""
    bad = t.positions.read_bytes() + b'\x00\x00 ions": [}'
    t.positions.write_bytes(bad)
    return bad


def stop_reason(t: BotTree) -> str:
    stop = read_json(t.emergency_stop)
    assert stop["active"] is True, stop
    assert stop["set_by"] == "guardian"
    return str(stop["reason"])


def truncate_in_open(t: BotTree) -> bytes:
    """Cut the positions file inside the first open position: its open positions are unknown."""
    raw = t.positions.read_bytes()
    cut = raw[: raw.index(b'"open_positions"') + 60]
    t.positions.write_bytes(cut)
    return cut


def stale_soft_lock(path: Path) -> Path:
    """A SoftFileLock marker left by a dead process, older than the stale threshold."""
    lock = lock_of(path)
    lock.write_text(f"{DEAD_PID}\n{socket.gethostname()}\n")
    make_old(lock)
    return lock


def stale_heartbeat(t: BotTree, component: str = "bot_cycle") -> Path:
    hb = t.heartbeats / f"{component}.json"
    write_json(hb, {"component": component, "pid": DEAD_PID, "ts": iso_z(datetime.now(UTC) - timedelta(hours=1))})
    return hb


def temp_leftover(t: BotTree) -> Path:
    tmp = t.data / "logs" / "positions_futures.json.tmp"
    tmp.write_bytes(b'{"open_positions": [{"id": "half-writ')
    make_old(tmp)
    return tmp


@pytest.fixture
def big_tree(tmp_path: Path) -> BotTree:
    """A healthy tree with closed positions too, so a truncation can fall inside closed_positions."""
    return build_bot_tree(tmp_path / "bot", now=datetime.now(UTC), closed=5)


@pytest.fixture
def conf(make_config: Callable[..., Path]) -> Callable[..., Config]:
    def make(t: BotTree, mode: str = "paper", **extra: dict[str, object]) -> Config:
        return load(make_config(t, mode=mode, extra=extra))

    return make


# --- each recoverable code -----------------------------------------------------------------------


def test_missing_directories_are_created_and_counted(tree: BotTree, conf: Callable[..., Config]) -> None:
    for d in ("feature_store", "configs", "data"):
        shutil.rmtree(tree.data / d)
    result = heal(conf(tree))
    assert {f.subject for f in result.before.findings if f.code == "DIRECTORY_MISSING"} == {
        "feature_store",
        "configs",
        "data",
    }
    assert "DIRECTORY_MISSING" not in codes(result.after)
    assert all((tree.data / d).is_dir() for d in ("feature_store", "configs", "data"))
    stats(result, directories_created=3)
    assert result.success


def test_a_cold_start_creates_the_positions_and_portfolio_files(tree: BotTree, conf: Callable[..., Config]) -> None:
    tree.positions.unlink()
    tree.portfolio.unlink()
    tree.wal.unlink()  # no trace of an earlier life anywhere: a true cold start
    result = heal(conf(tree))
    assert {("STATE_FILE_MISSING", POSITIONS), ("STATE_FILE_MISSING", PORTFOLIO)} <= keys(result.before)
    assert not codes(result.after) & {"STATE_FILE_MISSING", "STATE_UNRECOVERABLE"}
    assert read_json(tree.positions) == {"open_positions": [], "closed_positions": []}
    pf = read_json(tree.portfolio)
    assert pf["open_positions_count"] == 0
    assert pf["balance"] == 0
    stats(result, files_created=2)
    assert result.success


@pytest.mark.parametrize("content", [b"", b"{}", b"  \n"], ids=["zero-bytes", "braces", "whitespace"])
def test_an_empty_positions_file_of_a_new_bot_is_initialised(
    tmp_path: Path, conf: Callable[..., Config], content: bytes
) -> None:
    t = build_bot_tree(tmp_path / "bot", now=datetime.now(UTC), open_positions=[], with_wal=False)
    t.positions.write_bytes(content)
    t.portfolio.unlink()
    result = heal(conf(t))
    assert ("STATE_FILE_EMPTY", POSITIONS) in keys(result.before)
    assert not codes(result.after) & {"STATE_FILE_EMPTY", "STATE_FILE_MISSING", "STATE_UNRECOVERABLE"}
    assert read_json(t.positions) == {"open_positions": [], "closed_positions": []}
    assert read_json(t.portfolio)["balance"] == 0
    stats(result, files_created=2)
    (kept,) = backups_named(t, "positions_futures.json", "empty")
    assert kept.read_bytes() == content


def _trace_wal(t: BotTree) -> None:
    """The WAL records a finished POSITION_OPEN (the demo tree writes one)."""


def _trace_backup(t: BotTree) -> None:
    t.backups.mkdir(parents=True, exist_ok=True)
    (t.backups / "positions_futures.json.bak").write_text('{"open_positions": [], "closed_positions": []}')


def _trace_alert_log(t: BotTree) -> None:
    line = {"ts": iso_z(datetime.now(UTC)), "level": "INFO", "code": "GATE_ALLOWED", "subject": "x", "event": "gate"}
    t.alerts.write_text(json.dumps(line) + "\n")


def _trace_torn_portfolio(t: BotTree) -> None:
    t.portfolio.write_text('{"balance": 10625.05, "open_positions_count": 1, "upda')


def _trace_portfolio(t: BotTree) -> None:
    write_json(t.portfolio, {"balance": 10625.05, "open_positions_count": 0})


TRACES: dict[str, tuple[Callable[[BotTree], None], str]] = {
    "wal": (_trace_wal, "state/wal/operations.wal records 2 operation line(s)"),
    "backup": (_trace_backup, "1 backup(s) of logs/positions_futures.json"),
    "alert-log": (_trace_alert_log, "records GATE_ALLOWED"),
    "torn-portfolio": (_trace_torn_portfolio, "logs/portfolio_futures.json exists (corrupt; it counts 1 open"),
    "portfolio": (_trace_portfolio, "logs/portfolio_futures.json exists (ok; it counts 0 open"),
}


@pytest.mark.parametrize("trace", list(TRACES))
def test_a_missing_positions_file_is_never_created_flat_while_any_trace_of_an_earlier_life_remains(
    tree: BotTree, conf: Callable[..., Config], trace: str
) -> None:
    plant, said = TRACES[trace]
    tree.positions.unlink()
    tree.portfolio.unlink()
    if trace != "wal":
        tree.wal.unlink()
    plant(tree)
    result = heal(conf(tree))
    (action,) = [a for a in result.actions if a.finding.key == ("STATE_FILE_MISSING", POSITIONS)]
    assert action.outcome is Outcome.REFUSED
    (unrec,) = [f for f in result.after.findings if f.code == "STATE_UNRECOVERABLE" and f.subject == POSITIONS]
    assert unrec.level is Level.CRITICAL
    assert said in unrec.message
    assert not tree.positions.exists()


def test_a_missing_positions_file_is_never_created_flat_once_guardian_allowed_the_bot_to_start(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    cfg = make_config(tree, mode="real")
    assert cli(cfg, "gate").code == 0  # remembered in guardian's gate history
    shutil.rmtree(tree.data / "logs")  # the alert log goes with it
    tree.wal.unlink()
    r = cli(cfg, "gate")
    assert r.code == 1
    assert "records 1 allowed start(s)" in r.err
    assert "positions (so limits) not proven: STATE_UNRECOVERABLE" in r.err.strip().splitlines()[-1]
    assert not tree.positions.exists()


def test_a_malformed_positions_file_gets_the_missing_closed_list_keeps_its_open_positions_and_sets_the_stop(
    tree: BotTree, conf: Callable[..., Config]
) -> None:
    original = read_json(tree.positions)
    opens = original["open_positions"]
    opens[0]["custom_field"] = {"nested": [1, 2.5, "x"]}  # unknown data must survive too
    write_json(tree.positions, {"open_positions": opens, "bot_version": "7.1"})
    before_bytes = tree.positions.read_bytes()
    result = heal(conf(tree))
    assert ("STATE_FILE_MALFORMED", POSITIONS) in keys(result.before)
    assert "STATE_FILE_MALFORMED" not in codes(result.after)
    healed = read_json(tree.positions)
    assert healed["open_positions"] == opens
    assert healed["closed_positions"] == []
    assert healed["bot_version"] == "7.1"
    stats(result, files_repaired=1)
    (kept,) = backups_named(tree, "positions_futures.json", "malformed")
    assert kept.read_bytes() == before_bytes
    # Today's closed positions are unknown: the day's loss too, until an operator confirms it.
    assert "it had no closed_positions" in stop_reason(tree)
    assert "EMERGENCY_STOP_ACTIVE" in codes(result.after)
    assert not result.success


def test_a_malformed_positions_file_without_open_positions_is_never_completed_flat(
    tree: BotTree, conf: Callable[..., Config]
) -> None:
    write_json(tree.positions, {"closed_positions": []})
    _set_portfolio_count(tree, 0)
    before = tree.positions.read_bytes()
    result = heal(conf(tree))
    _assert_refused_unrecoverable(result, "STATE_FILE_MALFORMED")
    assert tree.positions.read_bytes() == before


def test_a_truncated_positions_file_keeps_its_open_positions_and_sets_the_stop_for_the_lost_closed_ones(
    big_tree: BotTree, conf: Callable[..., Config]
) -> None:
    opens = read_json(big_tree.positions)["open_positions"]
    cut = truncate_in_closed(big_tree)
    result = heal(conf(big_tree))
    assert ("STATE_FILE_CORRUPT", POSITIONS) in keys(result.before)
    assert not codes(result.after) & {"STATE_FILE_CORRUPT", "STATE_UNRECOVERABLE"}
    assert read_json(big_tree.positions)["open_positions"] == opens
    stats(result, files_repaired=1)
    (kept,) = backups_named(big_tree, "positions_futures.json", "corrupt")
    assert kept.read_bytes() == cut
    reason = stop_reason(big_tree)
    assert "the list is cut off after the last record read" in reason
    assert kept.name in reason  # where the lost bytes are
    assert "EMERGENCY_STOP_ACTIVE" in codes(result.after)
    assert not result.success


def test_a_corrupt_positions_file_whose_records_are_all_readable_is_salvaged_whole_with_no_stop(
    big_tree: BotTree, conf: Callable[..., Config]
) -> None:
    doc = read_json(big_tree.positions)
    bad = corrupt_after_the_document(big_tree)
    result = heal(conf(big_tree))
    assert ("STATE_FILE_CORRUPT", POSITIONS) in keys(result.before)
    assert read_json(big_tree.positions) == doc
    (kept,) = backups_named(big_tree, "positions_futures.json", "corrupt")
    assert kept.read_bytes() == bad
    assert not big_tree.emergency_stop.exists()
    assert result.success


def test_salvage_reads_on_past_a_garbled_closed_record_and_counts_what_it_skipped(
    big_tree: BotTree, conf: Callable[..., Config]
) -> None:
    raw = big_tree.positions.read_bytes()
    third = raw.index(b'{"id": "pos-000000003"')
    garbled = raw[:third] + b'{"id": "pos-0000\x00\x00 garbage ' + raw[third + 40 :]
    big_tree.positions.write_bytes(garbled)
    result = heal(conf(big_tree))
    closed_ids = [c["id"] for c in read_json(big_tree.positions)["closed_positions"]]
    assert closed_ids == ["pos-000000001", "pos-000000002", "pos-000000004", "pos-000000005"]
    assert "unreadable byte(s) in 1 place(s) between records" in stop_reason(big_tree)
    assert not result.success


def test_a_truncated_positions_file_whose_open_positions_are_cut_is_refused_and_left_byte_identical(
    big_tree: BotTree, conf: Callable[..., Config]
) -> None:
    cut = truncate_in_open(big_tree)
    result = heal(conf(big_tree))
    assert outcomes(result, "STATE_FILE_CORRUPT") == [Outcome.REFUSED]
    unrec = [f for f in result.after.findings if f.code == "STATE_UNRECOVERABLE"]
    assert [(f.subject, f.level) for f in unrec] == [(POSITIONS, Level.CRITICAL)]
    assert big_tree.positions.read_bytes() == cut
    assert not result.success
    stats(result)


def test_a_stale_soft_lock_of_a_dead_process_is_removed(tree: BotTree, conf: Callable[..., Config]) -> None:
    lock = stale_soft_lock(tree.positions)
    marker = lock.read_bytes()
    result = heal(conf(tree))
    assert ("LOCK_STALE", POSITIONS + ".lock") in keys(result.before)
    assert "LOCK_STALE" not in codes(result.after)
    assert not lock.exists()
    stats(result, locks_cleared=1)
    (kept,) = backups_named(tree, "positions_futures.json.lock", "stale-lock")
    assert kept.read_bytes() == marker


@pytest.mark.parametrize("lock_style", ["flock", "soft"])
def test_a_lock_held_by_a_live_process_is_never_removed(
    tree: BotTree, conf: Callable[..., Config], hold_lock: Callable[[Path], int], lock_style: str
) -> None:
    lock = lock_of(tree.positions)
    holder = hold_lock(lock)
    # Make it look as stale as possible: a dead pid's marker, an hour old. Only the live holder counts.
    lock.write_text(f"{DEAD_PID}\n{socket.gethostname()}\n")
    make_old(lock)
    content = lock.read_bytes()
    # The holder is a python process with a path in the home: an orphan bot, which paper mode would kill.
    result = heal(conf(tree, bot={"lock_style": lock_style}, heal={"kill_orphans_in_paper": False}))
    assert alive(holder)
    assert "LOCK_STALE" not in codes(result.before)
    assert "LOCK_STALE" not in codes(result.after)
    assert lock.read_bytes() == content
    st = lock.stat()
    assert holder in read_lock_holders().get((st.st_dev, st.st_ino), [])
    stats(result)


def test_a_stale_heartbeat_is_reset_when_no_bot_runs(tree: BotTree, conf: Callable[..., Config]) -> None:
    hb = stale_heartbeat(tree)
    old = hb.read_bytes()
    result = heal(conf(tree))
    assert ("HEARTBEAT_STALE", "heartbeat:bot_cycle") in keys(result.before)
    assert "HEARTBEAT_STALE" not in codes(result.after)
    ts = datetime.fromisoformat(read_json(hb)["ts"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - ts).total_seconds()) < 60
    stats(result, heartbeats_reset=1)
    (kept,) = backups_named(tree, "bot_cycle.json", "heartbeat-reset")
    assert kept.read_bytes() == old


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("real", {"thresholds": {"bot_start_grace": 0}}),
        ("paper", {"heal": {"kill_orphans_in_paper": False}, "thresholds": {"bot_start_grace": 0}}),
    ],
    ids=["real", "paper-no-kill"],
)
def test_a_stale_heartbeat_is_not_reset_while_a_bot_process_runs_from_the_slot(
    tree: BotTree,
    conf: Callable[..., Config],
    run_bot: Callable[[Path], int],
    mode: str,
    extra: dict[str, dict[str, object]],
) -> None:
    hb = stale_heartbeat(tree)
    old = hb.read_bytes()
    pid = run_bot(tree.current_slot)
    result = heal(conf(tree, mode, **extra))
    assert outcomes(result, "HEARTBEAT_STALE") == [Outcome.REFUSED]
    assert ("HEARTBEAT_STALE", "heartbeat:bot_cycle") in keys(result.after)
    assert hb.read_bytes() == old
    assert alive(pid)
    assert result.to_json()["stats"]["heartbeats_reset"] == 0


def test_a_temp_file_leftover_is_moved_into_the_backups_with_its_bytes(
    tree: BotTree, conf: Callable[..., Config]
) -> None:
    tmp = temp_leftover(tree)
    content = tmp.read_bytes()
    result = heal(conf(tree))
    assert ("TEMP_FILE_LEFTOVER", "logs/positions_futures.json.tmp") in keys(result.before)
    assert "TEMP_FILE_LEFTOVER" not in codes(result.after)
    assert not tmp.exists()
    (kept,) = backups_named(tree, "positions_futures.json.tmp", "temp-leftover")
    assert kept.read_bytes() == content
    stats(result, files_repaired=1)


def test_an_orphan_bot_process_is_terminated_in_paper_mode(
    tree: BotTree, conf: Callable[..., Config], run_bot: Callable[[Path], int]
) -> None:
    pid = run_bot(tree.current_slot)
    result = heal(conf(tree, "paper"))
    assert ("ORPHAN_PROCESS", f"pid:{pid}") in keys(result.before)
    assert outcomes(result, "ORPHAN_PROCESS") == [Outcome.HEALED]
    assert not alive(pid)
    assert "ORPHAN_PROCESS" not in codes(result.after)
    stats(result, orphans_killed=1)


def test_an_orphan_bot_process_is_reported_critical_and_never_killed_in_real_mode(
    tree: BotTree, conf: Callable[..., Config], run_bot: Callable[[Path], int]
) -> None:
    pid = run_bot(tree.current_slot)
    result = heal(conf(tree, "real"))
    assert outcomes(result, "ORPHAN_PROCESS") == [Outcome.REFUSED]
    assert alive(pid)
    orphan = [f for f in result.after.findings if f.key == ("ORPHAN_PROCESS", f"pid:{pid}")]
    assert [f.level for f in orphan] == [Level.CRITICAL]
    assert not result.success
    stats(result)


# --- never turn unknown into flat ----------------------------------------------------------------


def _set_portfolio_count(t: BotTree, count: int) -> None:
    pf = read_json(t.portfolio)
    pf["open_positions_count"] = count
    write_json(t.portfolio, pf)


def _assert_refused_unrecoverable(result: HealResult, code: str) -> None:
    assert outcomes(result, code) == [Outcome.REFUSED]
    unrec = [f for f in result.after.findings if f.code == "STATE_UNRECOVERABLE"]
    assert [(f.subject, f.level) for f in unrec] == [(POSITIONS, Level.CRITICAL)]
    assert not result.success


def test_a_deleted_positions_file_is_not_recreated_flat_while_the_portfolio_counts_an_open_position(
    tree: BotTree, conf: Callable[..., Config]
) -> None:
    tree.positions.unlink()
    result = heal(conf(tree))
    _assert_refused_unrecoverable(result, "STATE_FILE_MISSING")
    assert not tree.positions.exists()


def test_a_deleted_positions_file_is_not_recreated_flat_while_a_backup_holds_an_open_position(
    tree: BotTree, conf: Callable[..., Config]
) -> None:
    BackupStore(tree.data, tree.backups).keep(tree.positions, "manual")
    tree.positions.unlink()
    _set_portfolio_count(tree, 0)  # the backup alone is the evidence
    result = heal(conf(tree))
    _assert_refused_unrecoverable(result, "STATE_FILE_MISSING")
    assert not tree.positions.exists()


def test_a_deleted_positions_file_is_not_recreated_flat_after_a_salvage_kept_the_corrupt_original(
    big_tree: BotTree, conf: Callable[..., Config]
) -> None:
    truncate_in_closed(big_tree)
    first = heal(conf(big_tree))
    assert outcomes(first, "STATE_FILE_CORRUPT") == [Outcome.HEALED]
    big_tree.positions.unlink()
    result = heal(conf(big_tree))
    _assert_refused_unrecoverable(result, "STATE_FILE_MISSING")
    assert not big_tree.positions.exists()


def test_a_deleted_positions_file_and_portfolio_are_not_recreated_flat_when_only_a_salvage_backup_remains(
    big_tree: BotTree, conf: Callable[..., Config]
) -> None:
    truncate_in_closed(big_tree)
    assert outcomes(heal(conf(big_tree)), "STATE_FILE_CORRUPT") == [Outcome.HEALED]
    big_tree.positions.unlink()
    big_tree.portfolio.unlink()  # only the corrupt original the salvage kept shows the open position
    result = heal(conf(big_tree))
    assert outcomes(result, "STATE_FILE_MISSING") == [Outcome.REFUSED, Outcome.REFUSED]
    unrec = {f.subject: f.level for f in result.after.findings if f.code == "STATE_UNRECOVERABLE"}
    assert unrec == {POSITIONS: Level.CRITICAL, PORTFOLIO: Level.CRITICAL}
    assert not big_tree.positions.exists()
    assert not big_tree.portfolio.exists()


def test_an_emptied_positions_file_is_not_initialised_flat_while_a_backup_holds_an_open_position(
    tree: BotTree, conf: Callable[..., Config]
) -> None:
    BackupStore(tree.data, tree.backups).keep(tree.positions, "manual")
    tree.positions.write_bytes(b"")
    _set_portfolio_count(tree, 0)
    result = heal(conf(tree))
    _assert_refused_unrecoverable(result, "STATE_FILE_EMPTY")
    assert tree.positions.read_bytes() == b""


def test_an_emptied_positions_file_is_not_initialised_flat_while_the_portfolio_counts_an_open_position(
    tree: BotTree, conf: Callable[..., Config]
) -> None:
    tree.positions.write_bytes(b"{}")
    result = heal(conf(tree))
    _assert_refused_unrecoverable(result, "STATE_FILE_EMPTY")
    assert tree.positions.read_bytes() == b"{}"


# --- nothing lost --------------------------------------------------------------------------------


def plant_many_faults(t: BotTree) -> dict[str, str]:
    """Several faults at once; return the files (relative to the home) heal must change, with the reason."""
    corrupt_after_the_document(t)
    pf = read_json(t.portfolio)
    del pf["open_positions_count"]
    write_json(t.portfolio, pf)
    hb = stale_heartbeat(t)
    tmp = temp_leftover(t)
    lock = stale_soft_lock(t.positions)
    rel = {p: str(p.resolve().relative_to(t.home)) for p in (t.positions, t.portfolio, hb, tmp, lock)}
    return {
        rel[t.positions]: "corrupt",
        rel[t.portfolio]: "malformed",
        rel[hb]: "heartbeat-reset",
        rel[tmp]: "temp-leftover",
        rel[lock]: "stale-lock",
    }


def _all_bytes_still_there(before: dict[str, bytes | str], after: dict[str, bytes | str]) -> None:
    present = {v for v in after.values() if isinstance(v, bytes)}
    lost = [rel for rel, v in before.items() if isinstance(v, bytes) and v not in present]
    assert lost == [], f"bytes of {lost} are nowhere in the tree after healing"


def test_healing_several_faults_at_once_loses_no_bytes_and_heals_them_all(
    big_tree: BotTree, conf: Callable[..., Config]
) -> None:
    plant_many_faults(big_tree)
    before = snapshot(big_tree.home)
    result = heal(conf(big_tree))
    _all_bytes_still_there(before, snapshot(big_tree.home))
    assert not codes(result.after) & {
        "STATE_FILE_CORRUPT",
        "STATE_FILE_MALFORMED",
        "HEARTBEAT_STALE",
        "TEMP_FILE_LEFTOVER",
        "LOCK_STALE",
        "STATE_UNRECOVERABLE",
    }, result.to_json()["refused"]
    assert read_json(big_tree.portfolio)["open_positions_count"] == 1
    assert read_json(big_tree.portfolio)["balance"] == 10625.05
    stats(result, files_repaired=3, heartbeats_reset=1, locks_cleared=1)
    assert result.success


def _fault_dirs(t: BotTree) -> None:
    shutil.rmtree(t.data / "state")


def _fault_empty_portfolio(t: BotTree) -> None:
    t.portfolio.write_bytes(b"{}")


def _fault_malformed_positions(t: BotTree) -> None:
    write_json(t.positions, {"open_positions": read_json(t.positions)["open_positions"]})


def _fault_malformed_portfolio(t: BotTree) -> None:
    write_json(t.portfolio, {"balance": 10625.05})


def _fault_unsalvageable(t: BotTree) -> None:
    truncate_in_open(t)


def _fault_salvageable(t: BotTree) -> None:
    truncate_in_closed(t)


def _fault_salvageable_whole(t: BotTree) -> None:
    corrupt_after_the_document(t)


def _fault_heartbeat(t: BotTree) -> None:
    stale_heartbeat(t)


def _fault_temp(t: BotTree) -> None:
    temp_leftover(t)


def _fault_lock(t: BotTree) -> None:
    stale_soft_lock(t.portfolio)


def _fault_deleted_positions(t: BotTree) -> None:
    t.positions.unlink()


FAULTS: dict[str, Callable[[BotTree], None]] = {
    "directories": _fault_dirs,
    "empty-portfolio": _fault_empty_portfolio,
    "malformed-positions": _fault_malformed_positions,
    "malformed-portfolio": _fault_malformed_portfolio,
    "corrupt-salvageable": _fault_salvageable,
    "corrupt-salvageable-whole": _fault_salvageable_whole,
    "corrupt-unsalvageable": _fault_unsalvageable,
    "deleted-positions": _fault_deleted_positions,
    "stale-heartbeat": _fault_heartbeat,
    "temp-leftover": _fault_temp,
    "stale-lock": _fault_lock,
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_healing_one_fault_loses_no_bytes(big_tree: BotTree, conf: Callable[..., Config], fault: str) -> None:
    FAULTS[fault](big_tree)
    before = snapshot(big_tree.home)
    result = heal(conf(big_tree))
    assert result.before.findings, "the fault was not even found"
    _all_bytes_still_there(before, snapshot(big_tree.home))


# --- backups -------------------------------------------------------------------------------------


def test_every_changed_or_removed_file_has_a_backup_named_for_it_and_the_reason(
    big_tree: BotTree, conf: Callable[..., Config], make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    expected = plant_many_faults(big_tree)
    before = snapshot(big_tree.home)
    heal(conf(big_tree))
    after = snapshot(big_tree.home)
    changed = {rel for rel, v in before.items() if isinstance(v, bytes) and after.get(rel) != v}
    assert changed == set(expected)
    listed = cli(make_config(big_tree), "backups", "list", "--json")
    assert listed.code == 0
    entries = listed.json()
    data_prefix = str(big_tree.current_slot.relative_to(big_tree.home)) + "/"
    for rel, reason in expected.items():
        name = Path(rel).name
        files = backups_named(big_tree, name, reason)
        assert files, f"no backup of {rel} with reason {reason}"
        assert any(f.read_bytes() == before[rel] for f in files)
        original = rel.removeprefix(data_prefix)
        assert any(e["original"] == original and e["reason"] == reason and name in e["id"] for e in entries), entries


def test_restoring_a_backup_puts_the_old_bytes_back_and_keeps_the_replaced_file(
    big_tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    cut = corrupt_after_the_document(big_tree)
    cfg = make_config(big_tree)
    assert cli(cfg, "heal").code == 0
    healed = big_tree.positions.read_bytes()
    assert healed != cut
    entries = cli(cfg, "backups", "list", "--json").json()
    (entry,) = [e for e in entries if e["original"] == POSITIONS and e["reason"] == "corrupt"]
    restored = cli(cfg, "backups", "restore", entry["id"], "--json")
    assert restored.code == 0, restored.err
    assert big_tree.positions.read_bytes() == cut
    previous = restored.json()["previous_kept_as"]
    assert "positions_futures.json" in previous
    assert (big_tree.backups / previous).read_bytes() == healed
    after = cli(cfg, "backups", "list", "--json").json()
    assert any(e["id"] == previous and e["reason"] == "pre-restore" and e["original"] == POSITIONS for e in after)


def test_restoring_an_unknown_backup_fails_and_changes_nothing(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    before = snapshot(tree.home)
    r = cli(make_config(tree), "backups", "restore", "no-such-backup.bak")
    assert r.code == 1
    assert "no backup" in r.err
    assert snapshot(tree.home) == before


# --- dry run, idempotence, the slot guard, the bot's lock ----------------------------------------


def test_a_dry_run_changes_nothing_at_all_and_prints_the_plan(
    tmp_path: Path, big_tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    plant_many_faults(big_tree)
    shutil.rmtree(big_tree.data / "feature_store")
    cfg = make_config(big_tree)
    before = snapshot(tmp_path)
    r = cli(cfg, "heal", "--dry-run")
    assert r.code == 0
    assert snapshot(tmp_path) == before
    planned = [line for line in r.out.splitlines() if line.strip().startswith("PLANNED")]
    for code in ("DIRECTORY_MISSING", "TEMP_FILE_LEFTOVER", "LOCK_STALE", "STATE_FILE_CORRUPT", "HEARTBEAT_STALE"):
        assert any(code in line for line in planned), r.out


def test_a_dry_run_reports_as_json_what_it_would_do(
    big_tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    truncate_in_closed(big_tree)
    out = cli(make_config(big_tree), "heal", "--dry-run", "--json").json()
    assert out["dry_run"] is True
    assert out["healed"] == []
    assert any(p.startswith(f"STATE_FILE_CORRUPT {POSITIONS}") for p in out["planned"])
    assert out["stats"] == ZERO


def test_a_second_heal_changes_nothing_but_the_alert_log(
    big_tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    plant_many_faults(big_tree)
    cfg = make_config(big_tree)
    first = cli(cfg, "heal", "--json")
    assert first.json()["healed"], first.out
    assert first.code == 0, first.out
    alerts = str(big_tree.alerts.resolve().relative_to(big_tree.home))
    before = snapshot(big_tree.home)
    second = cli(cfg, "heal", "--json")
    assert second.code == 0
    out = second.json()
    assert out["healed"] == []
    assert out["stats"] == ZERO
    after = snapshot(big_tree.home)
    assert {k: v for k, v in after.items() if k != alerts} == {k: v for k, v in before.items() if k != alerts}
    old_log, new_log = before[alerts], after[alerts]
    assert isinstance(old_log, bytes)
    assert isinstance(new_log, bytes)
    assert new_log.startswith(old_log)  # appended, never rewritten


def test_nothing_is_healed_inside_a_slot_that_is_not_the_deployed_one(
    tree: BotTree, conf: Callable[..., Config]
) -> None:
    (tree.home / "DEPLOYED_SLOT").write_text("blue\n")
    tree.portfolio.unlink()
    before = snapshot(tree.home)
    result = heal(conf(tree))
    assert "SLOT_MISMATCH" in codes(result.before)
    assert outcomes(result, "STATE_FILE_MISSING") == [Outcome.REFUSED]
    assert not [a for a in result.actions if a.outcome is Outcome.HEALED]
    assert snapshot(tree.home) == before
    stats(result)
    assert not result.success


def test_a_corrupt_file_whose_lock_the_bot_holds_is_not_written(
    big_tree: BotTree, conf: Callable[..., Config], hold_lock: Callable[[Path], int]
) -> None:
    cut = truncate_in_closed(big_tree)
    holder = hold_lock(lock_of(big_tree.positions))
    started = time.monotonic()
    result = heal(conf(big_tree, heal={"lock_timeout": 0.2, "kill_orphans_in_paper": False}))
    assert time.monotonic() - started < 10
    (action,) = [a for a in result.actions if a.finding.code == "STATE_FILE_CORRUPT"]
    assert action.outcome is Outcome.FAILED
    assert action.detail == (f"the bot's lock {POSITIONS}.lock is held by pid {holder} for over 0.2s: not written")
    assert big_tree.positions.read_bytes() == cut
    assert alive(holder)
    assert not result.success
    stats(result)


def test_heal_json_prints_the_seeds_result_object(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    stale_heartbeat(tree)
    r = cli(make_config(tree), "heal", "--json")
    assert r.code == 0
    out = r.json()
    assert {"success", "healed", "failed", "critical", "stats"} <= out.keys()
    assert out["success"] is True
    assert out["failed"] == []
    assert out["critical"] == []
    assert set(out["stats"]) == {
        "files_created",
        "files_repaired",
        "directories_created",
        "heartbeats_reset",
        "locks_cleared",
        "orphans_killed",
    }
    assert out["stats"]["heartbeats_reset"] == 1
    assert [h for h in out["healed"] if h.startswith("HEARTBEAT_STALE heartbeat:bot_cycle")]
