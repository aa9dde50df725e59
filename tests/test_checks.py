"""Every check on a real tree: plant one fault, run the checks, and expect exactly its finding.

Clock-relative checks run with ``now=NOW`` on a tree built at NOW; the CLI tests use the real clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from guardian.checks import run_checks
from guardian.config import load
from guardian.context import Context
from guardian.demo import DEAD_PID, BotTree, build_bot_tree, default_open_position, iso_z
from guardian.heal import heal
from guardian.model import Level, Report
from tests.conftest import NOW, Result, read_json, write_json

Seen = set[tuple[str, Level, str]]
Build = Callable[..., BotTree]
Check = Callable[..., Report]

LINK = "trading-bot-current"
POS = "logs/positions_futures.json"
PF = "logs/portfolio_futures.json"
STOP = "state/emergency_stop.json"
POS_LOCK = "logs/positions_futures.json.lock"
POS_ID = "pos-open-000001"  # the id of default_open_position
OLD = (NOW - timedelta(minutes=10)).timestamp()  # older than every 5-minute threshold
NOBODY = 65534  # a non-root uid, to play the bot's service user when the tests run as root


@pytest.fixture
def build(tmp_path: Path) -> Build:
    """Build a tree at ``tmp_path/bot`` whose clock (heartbeats, mtimes) is NOW."""

    def make(**kw: Any) -> BotTree:
        return build_bot_tree(tmp_path / "bot", now=NOW, **kw)

    return make


@pytest.fixture
def bot(build: Build) -> BotTree:
    """A healthy tree built at NOW: green current and deployed, one open BTCUSDT LONG position."""
    return build()


@pytest.fixture
def check(make_config: Callable[..., Path]) -> Check:
    """Run every check on a tree, as `guardian check` does, with the clock at ``now``."""

    def run(t: BotTree, *, now: datetime = NOW, mode: str = "paper", extra: Mapping[str, Any] | None = None) -> Report:
        return run_checks(Context(load(make_config(t, mode=mode, extra=extra)), now=now))

    return run


def seen(report: Report) -> Seen:
    return {(f.code, f.level, f.subject) for f in report.findings}


def position(pid: str, symbol: str = "BTCUSDT", **overrides: Any) -> dict[str, Any]:
    return default_open_position(NOW, id=pid, symbol=symbol, **overrides)


def eth_short(pid: str) -> dict[str, Any]:
    return position(
        pid,
        "ETHUSDT",
        direction="SHORT",
        entry_price=3000.0,
        size=0.1,
        stop_loss=3100.0,
        order={"status": "filled", "qty": 0.1},
    )


def closed_position(pid: str, closed_at: str | float, pnl: float) -> dict[str, Any]:
    return {
        **position(pid, opened_at=iso_z(NOW - timedelta(days=2))),
        "exit_price": 49000.0,
        "closed_at": closed_at,
        "pnl": pnl,
    }


def add_closed(t: BotTree, *closed: dict[str, Any]) -> None:
    doc = read_json(t.positions)
    doc["closed_positions"].extend(closed)
    write_json(t.positions, doc)


# --- a healthy tree -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["paper", "real"])
def test_a_healthy_tree_reports_nothing(build: Build, check: Check, mode: str) -> None:
    t = build(closed=200)
    report = check(t, mode=mode)
    assert seen(report) == set()
    assert report.score == 100


# --- the deployment link and the slots ------------------------------------------------------------


def test_a_missing_deployment_link_is_slot_invalid_and_nothing_else_is_read(bot: BotTree, check: Check) -> None:
    bot.current_link.unlink()
    report = check(bot)
    assert seen(report) == {("SLOT_INVALID", Level.CRITICAL, LINK)}
    assert "does not exist" in report.findings[0].message


def test_a_dangling_deployment_link_is_slot_invalid(bot: BotTree, check: Check) -> None:
    bot.current_link.unlink()
    bot.current_link.symlink_to(Path("slots") / "purple")
    report = check(bot)
    assert seen(report) == {("SLOT_INVALID", Level.CRITICAL, LINK)}
    assert "dangling" in report.findings[0].message


@pytest.mark.parametrize("target", ["elsewhere", "slots/green/src"])
def test_a_link_to_a_directory_that_is_not_a_slot_is_slot_invalid(bot: BotTree, check: Check, target: str) -> None:
    if target == "elsewhere":  # a full copy of a slot, but outside slots/
        shutil.copytree(bot.slots_dir / "green", bot.home / "elsewhere", symlinks=True)
    bot.current_link.unlink()
    bot.current_link.symlink_to(Path(target))
    assert seen(check(bot)) == {("SLOT_INVALID", Level.CRITICAL, LINK)}


def test_a_directory_in_place_of_the_link_is_slot_invalid(bot: BotTree, check: Check) -> None:
    bot.current_link.unlink()
    shutil.copytree(bot.slots_dir / "green", bot.current_link, symlinks=True)
    report = check(bot)
    assert seen(report) == {("SLOT_INVALID", Level.CRITICAL, LINK)}
    assert "not a symlink" in report.findings[0].message


def test_a_deployed_slot_file_naming_another_slot_is_slot_mismatch(bot: BotTree, check: Check) -> None:
    (bot.home / "DEPLOYED_SLOT").write_text("blue\n")
    report = check(bot)
    assert seen(report) == {("SLOT_MISMATCH", Level.CRITICAL, LINK)}
    assert report.findings[0].context == {"linked": "green", "deployed": "blue"}


def test_the_configs_deployed_slot_overrides_the_file(bot: BotTree, check: Check) -> None:
    assert (bot.home / "DEPLOYED_SLOT").read_text().strip() == "green"
    assert seen(check(bot, extra={"bot": {"deployed_slot": "blue"}})) == {("SLOT_MISMATCH", Level.CRITICAL, LINK)}


def test_a_bot_process_running_from_the_other_slot_is_stale_code(
    bot: BotTree, check: Check, run_bot: Callable[[Path], int]
) -> None:
    pid = run_bot(bot.slots_dir / "blue")
    report = check(bot)
    # Started by a test, not by tradingbot.service: it is an orphan too.
    assert seen(report) == {
        ("STALE_CODE", Level.CRITICAL, f"pid:{pid}"),
        ("ORPHAN_PROCESS", Level.HIGH, f"pid:{pid}"),
    }
    stale = next(f for f in report.findings if f.code == "STALE_CODE")
    assert stale.context["slot"] == "blue"


def _write_blue_positions(t: BotTree, opens: Sequence[Any]) -> None:
    logs = t.slots_dir / "blue" / "logs"
    logs.mkdir()
    write_json(logs / "positions_futures.json", {"open_positions": list(opens), "closed_positions": []})


def test_an_open_position_only_the_previous_slot_holds_is_slot_state_diverged(bot: BotTree, check: Check) -> None:
    _write_blue_positions(bot, [eth_short("pos-blue-7")])
    report = check(bot)
    assert seen(report) == {("SLOT_STATE_DIVERGED", Level.CRITICAL, "position:pos-blue-7")}
    assert report.findings[0].context["previous_slot"] == "blue"


def test_a_junk_entry_in_the_previous_slot_does_not_hide_a_diverged_position(bot: BotTree, check: Check) -> None:
    _write_blue_positions(bot, [eth_short("pos-blue-7"), ["junk"]])
    assert seen(check(bot)) == {("SLOT_STATE_DIVERGED", Level.CRITICAL, "position:pos-blue-7")}


def test_a_previous_slots_position_closed_in_the_current_slot_is_not_diverged(bot: BotTree, check: Check) -> None:
    _write_blue_positions(bot, [eth_short("pos-blue-7")])
    add_closed(bot, closed_position("pos-blue-7", iso_z(NOW - timedelta(days=1)), 12.5))
    assert seen(check(bot)) == set()


def test_an_open_position_both_slots_hold_is_not_diverged(bot: BotTree, check: Check) -> None:
    _write_blue_positions(bot, [position(POS_ID)])
    assert seen(check(bot)) == set()


def test_an_asset_universe_differing_from_the_previous_slot_is_config_drift(bot: BotTree, check: Check) -> None:
    write_json(bot.slots_dir / "blue" / "config" / "asset_universe.json", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    assert seen(check(bot)) == {("CONFIG_DRIFT", Level.HIGH, "config:config/asset_universe.json")}


def test_a_live_config_that_does_not_parse_is_config_drift(bot: BotTree, check: Check) -> None:
    (bot.current_slot / "config" / "live_config.json").write_text('{"mode": "paper", "max_posi')
    report = check(bot)
    assert seen(report) == {("CONFIG_DRIFT", Level.HIGH, "config:config/live_config.json")}
    assert "does not parse" in report.findings[0].message


def _fake_venv(slot: Path, *dists: str) -> Path:
    site = slot / ".venv" / "lib" / "python3.11" / "site-packages"
    for d in dists:
        (site / d).mkdir(parents=True)
    return slot.resolve() / ".venv"


def test_an_installed_version_differing_from_the_lock_is_dependency_mismatch(bot: BotTree, check: Check) -> None:
    (bot.current_slot / "requirements.lock").write_text("# pinned\nfoo==2.0\n")
    venv = _fake_venv(bot.current_slot, "foo-1.0.dist-info")
    report = check(bot)
    assert seen(report) == {("DEPENDENCY_MISMATCH", Level.HIGH, f"deps:{venv}")}
    assert "foo 1.0 (want 2.0)" in report.findings[0].message


def test_a_venv_matching_the_lock_is_not_reported(bot: BotTree, check: Check) -> None:
    (bot.current_slot / "requirements.lock").write_text("Foo_Bar==2.0\n")
    _fake_venv(bot.current_slot, "foo_bar-2.0.dist-info")
    assert seen(check(bot)) == set()


# --- the state files ------------------------------------------------------------------------------

STATE_FILES = [pytest.param("positions", POS, id="positions"), pytest.param("portfolio", PF, id="portfolio")]


@pytest.mark.parametrize(("which", "subject"), STATE_FILES)
def test_a_missing_state_file_is_reported(bot: BotTree, check: Check, which: str, subject: str) -> None:
    getattr(bot, which).unlink()
    assert seen(check(bot)) == {("STATE_FILE_MISSING", Level.MEDIUM, subject)}


@pytest.mark.parametrize("content", [b"", b"{}", b"  {  }\n"], ids=["zero-bytes", "empty-object", "spaced"])
@pytest.mark.parametrize(("which", "subject"), STATE_FILES)
def test_an_empty_state_file_is_reported(bot: BotTree, check: Check, which: str, subject: str, content: bytes) -> None:
    getattr(bot, which).write_bytes(content)
    assert seen(check(bot)) == {("STATE_FILE_EMPTY", Level.MEDIUM, subject)}


@pytest.mark.parametrize(("which", "subject"), STATE_FILES)
def test_a_truncated_state_file_is_corrupt(bot: BotTree, check: Check, which: str, subject: str) -> None:
    path: Path = getattr(bot, which)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    assert seen(check(bot)) == {("STATE_FILE_CORRUPT", Level.HIGH, subject)}


@pytest.mark.parametrize(
    ("which", "subject", "drop", "missing"),
    [
        ("positions", POS, "closed_positions", "closed_positions"),
        ("positions", POS, "open_positions", "open_positions"),
        ("portfolio", PF, "balance", "balance"),
        ("portfolio", PF, "open_positions_count", "open_positions_count"),
    ],
)
def test_a_state_file_lacking_a_required_key_is_malformed(
    bot: BotTree, check: Check, which: str, subject: str, drop: str, missing: str
) -> None:
    path: Path = getattr(bot, which)
    doc = read_json(path)
    del doc[drop]
    write_json(path, doc)
    report = check(bot)
    assert seen(report) == {("STATE_FILE_MALFORMED", Level.HIGH, subject)}
    assert report.findings[0].context == {"missing_keys": missing}


@pytest.mark.parametrize(
    ("which", "subject", "doc"),
    [
        ("positions", POS, {"open_positions": {}, "closed_positions": []}),
        ("positions", POS, [1, 2, 3]),
        ("portfolio", PF, ["balance", 1]),
    ],
    ids=["open-not-a-list", "positions-a-list", "portfolio-a-list"],
)
def test_a_state_file_of_the_wrong_shape_is_malformed(
    bot: BotTree, check: Check, which: str, subject: str, doc: Any
) -> None:
    write_json(getattr(bot, which), doc)
    assert seen(check(bot)) == {("STATE_FILE_MALFORMED", Level.HIGH, subject)}


def _plant_non_regular(path: Path, kind: str) -> None:
    saved = path.read_bytes()
    path.unlink()
    if kind == "symlink":  # to a sound copy: guardian still refuses to follow it
        elsewhere = path.parent.parent / "elsewhere.json"
        elsewhere.write_bytes(saved)
        path.symlink_to(elsewhere)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
@pytest.mark.parametrize(("which", "subject"), STATE_FILES)
def test_a_state_file_that_is_not_a_regular_file_is_unknown_critical(
    bot: BotTree, check: Check, which: str, subject: str, kind: str
) -> None:
    _plant_non_regular(getattr(bot, which), kind)
    report = check(bot)  # a FIFO with no writer must not block the check
    assert seen(report) == {("UNKNOWN", Level.CRITICAL, subject)}
    assert not report.findings[0].recoverable


def test_an_unreadable_positions_file_is_unknown_critical(bot: BotTree, check: Check) -> None:
    if os.geteuid() == 0:
        pytest.skip("runs as root, which reads a mode-000 file anyway: this case cannot be planted")
    bot.positions.chmod(0)
    try:
        report = check(bot)
    finally:
        bot.positions.chmod(0o644)
    assert seen(report) == {("UNKNOWN", Level.CRITICAL, POS)}
    assert "permission denied" in report.findings[0].message


@pytest.mark.parametrize("rel", ["feature_store", "configs", "logs/backups", "state/heartbeats"])
def test_a_missing_required_directory_is_reported(bot: BotTree, check: Check, rel: str) -> None:
    shutil.rmtree(bot.data / rel)
    assert seen(check(bot)) == {("DIRECTORY_MISSING", Level.MEDIUM, rel)}


def test_a_file_where_a_required_directory_should_be_is_unknown(bot: BotTree, check: Check) -> None:
    (bot.data / "feature_store").rmdir()
    (bot.data / "feature_store").write_text("not a directory\n")
    assert seen(check(bot)) == {("UNKNOWN", Level.HIGH, "feature_store")}


@pytest.mark.parametrize(
    "rel", ["logs/.positions_futures.json.tmp", "logs/positions_futures.json.tmp", "state/tmpk2x9q1.json"]
)
def test_an_old_temp_file_is_a_leftover(bot: BotTree, check: Check, rel: str) -> None:
    tmp = bot.data / rel
    tmp.write_text('{"open_positions": [')
    hour_ago = (NOW - timedelta(hours=1)).timestamp()
    os.utime(tmp, (hour_ago, hour_ago))
    report = check(bot)
    assert seen(report) == {("TEMP_FILE_LEFTOVER", Level.LOW, rel)}
    assert report.findings[0].context == {"age_s": 3600}


def test_a_fresh_temp_file_may_be_a_save_in_progress_and_is_not_reported(bot: BotTree, check: Check) -> None:
    tmp = bot.data / "logs" / ".positions_futures.json.tmp"
    tmp.write_text('{"open_positions": [')
    recent = (NOW - timedelta(seconds=30)).timestamp()
    os.utime(tmp, (recent, recent))
    assert seen(check(bot)) == set()


def test_a_logs_directory_the_bots_user_cannot_write_is_state_not_writable(bot: BotTree, check: Check) -> None:
    logs = bot.data / "logs"
    if os.geteuid() == 0:
        # As root, chmod alone proves nothing: guardian judges for the data root's owner, and uid 0
        # can write anything. So give the data root and logs/ to a service user, as in production.
        os.chown(bot.current_slot, NOBODY, NOBODY)
        os.chown(logs, NOBODY, NOBODY)
    logs.chmod(0o555)
    try:
        report = check(bot)
    finally:
        logs.chmod(0o755)
    assert ("STATE_NOT_WRITABLE", Level.HIGH, "logs") in seen(report)
    # As root, the root-owned files and state/wal are not the service user's either: same code.
    assert {f.code for f in report.findings} == {"STATE_NOT_WRITABLE"}


def test_less_free_disk_than_the_threshold_is_disk_low(bot: BotTree, check: Check) -> None:
    report = check(bot, extra={"thresholds": {"disk_min_free_mb": 10**9}})
    assert seen(report) == {("DISK_LOW", Level.HIGH, "data root")}


# --- the open positions ---------------------------------------------------------------------------


def test_a_portfolio_count_differing_from_the_open_positions_is_state_mismatch(bot: BotTree, check: Check) -> None:
    pf = read_json(bot.portfolio)
    pf["open_positions_count"] = 2
    write_json(bot.portfolio, pf)
    report = check(bot)
    assert seen(report) == {("STATE_MISMATCH", Level.CRITICAL, PF)}
    assert report.findings[0].context == {"portfolio_count": 2, "positions_count": 1}


@pytest.mark.parametrize(
    "order",
    [{"status": "partially_filled", "qty": 0.004}, {"status": "filled", "qty": 0.005}],
    ids=["partially-filled", "filled-short-of-size"],
)
def test_a_partially_filled_order_is_partial_fill(build: Build, check: Check, order: dict[str, Any]) -> None:
    t = build(open_positions=[position(POS_ID, order=order)])
    assert seen(check(t)) == {("PARTIAL_FILL", Level.CRITICAL, f"position:{POS_ID}")}


def test_two_open_positions_on_the_same_symbol_and_direction_conflict(build: Build, check: Check) -> None:
    t = build(open_positions=[position("pos-a"), position("pos-b")])
    report = check(t)
    assert seen(report) == {("POSITION_CONFLICT", Level.CRITICAL, "BTCUSDT/LONG")}
    assert report.findings[0].context == {"positions": "position:pos-a,position:pos-b"}


def test_a_long_and_a_short_on_the_same_symbol_do_not_conflict(build: Build, check: Check) -> None:
    short = position("pos-b", direction="SHORT", stop_loss=51000.0)
    assert seen(check(build(open_positions=[position("pos-a"), short]))) == set()


def test_two_open_positions_sharing_an_id_conflict(build: Build, check: Check) -> None:
    t = build(open_positions=[position("dup"), eth_short("dup")])
    assert seen(check(t)) == {("POSITION_CONFLICT", Level.CRITICAL, "position:dup")}


@pytest.mark.parametrize(
    ("key", "value"),
    [("entry_price", 0), ("size", -1), ("size", "abc"), ("direction", "BUY"), ("leverage", 0.5), ("symbol", "")],
)
def test_an_open_position_with_an_impossible_field_is_invalid(build: Build, check: Check, key: str, value: Any) -> None:
    t = build(open_positions=[position(POS_ID, **{key: value})])
    report = check(t)
    assert seen(report) == {("POSITION_INVALID", Level.CRITICAL, f"position:{POS_ID}")}
    assert report.findings[0].context == {"fields": key}


def test_a_nan_size_written_by_a_python_bot_is_an_invalid_position(build: Build, check: Check) -> None:
    t = build(open_positions=[position(POS_ID, size=float("nan"))], with_wal=False)
    assert "NaN" in t.positions.read_text()
    assert seen(check(t)) == {("POSITION_INVALID", Level.CRITICAL, f"position:{POS_ID}")}


def test_a_nan_is_never_healed_by_rewriting_the_positions_file(build: Build, make_config: Callable[..., Path]) -> None:
    # Read as corrupt, the file would be "salvaged" with NaN turned into null: a dangerous finding hidden.
    t = build(open_positions=[position(POS_ID, size=float("nan"))], with_wal=False)
    before = t.positions.read_bytes()
    result = heal(load(make_config(t)), now=NOW)
    assert t.positions.read_bytes() == before
    assert ("POSITION_INVALID", f"position:{POS_ID}") in {f.key for f in result.after.critical()}


def test_a_nan_in_a_wal_entry_does_not_hide_its_status(build: Build, check: Check) -> None:
    t = build()
    with t.wal.open("a") as f:
        f.write('{"id": "op-nan", "op": "BALANCE_ADD", "status": "pending", "data": {"amount": NaN}}\n')
    assert seen(check(t)) == {("WAL_INCOMPLETE", Level.CRITICAL, "wal:op-nan")}


def test_an_open_position_that_is_not_an_object_is_invalid_and_hides_nothing_else(build: Build, check: Check) -> None:
    # Guardian once decoded open_positions as a list of objects: one junk entry made the whole file
    # MALFORMED (HIGH) and skipped every position check, hiding the missing stop loss beside it.
    t = build(open_positions=[position(POS_ID, stop_loss=None)])
    doc = read_json(t.positions)
    doc["open_positions"].append("BTCUSDT LONG 0.01")
    write_json(t.positions, doc)
    pf = read_json(t.portfolio)
    pf["open_positions_count"] = 2
    write_json(t.portfolio, pf)
    assert seen(check(t)) == {
        ("POSITION_INVALID", Level.CRITICAL, "position:#1"),
        ("STOP_LOSS_MISSING", Level.CRITICAL, f"position:{POS_ID}"),
    }


@pytest.mark.parametrize("stop_loss", [None, 0, "none", "absent"])
def test_an_open_position_without_a_stop_loss_is_reported(build: Build, check: Check, stop_loss: Any) -> None:
    p = position(POS_ID, stop_loss=stop_loss)
    if stop_loss == "absent":
        del p["stop_loss"]
    assert seen(check(build(open_positions=[p]))) == {("STOP_LOSS_MISSING", Level.CRITICAL, f"position:{POS_ID}")}


def test_a_position_over_five_percent_of_the_balance_breaks_the_size_limit(build: Build, check: Check) -> None:
    # $1,000 notional against 5% of $10,625.05 = $531.25
    t = build(open_positions=[position(POS_ID, size=0.02, order={"status": "filled", "qty": 0.02})])
    report = check(t)
    assert seen(report) == {("LIMIT_POSITION_SIZE", Level.CRITICAL, f"position:{POS_ID}")}
    assert report.findings[0].context == {"notional": 1000.0, "limit": 531.25}


def test_a_position_of_exactly_five_percent_is_within_the_limit(build: Build, check: Check) -> None:
    assert seen(check(build(balance=10000.0))) == set()  # $500 of $10,000


def test_the_size_limit_scales_with_the_balance(build: Build, check: Check) -> None:
    report = check(build(balance=5000.0))  # the same $500 position is 10% of $5,000
    assert seen(report) == {("LIMIT_POSITION_SIZE", Level.CRITICAL, f"position:{POS_ID}")}


SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


def _small(i: int, symbol: str) -> dict[str, Any]:
    return position(
        f"pos-{i}", symbol, entry_price=100.0, size=1.0, stop_loss=95.0, order={"status": "filled", "qty": 1.0}
    )


def test_four_open_positions_break_the_open_positions_limit(build: Build, check: Check) -> None:
    t = build(open_positions=[_small(i, s) for i, s in enumerate(SYMBOLS)])
    assert seen(check(t)) == {("LIMIT_OPEN_POSITIONS", Level.CRITICAL, POS)}


def test_three_open_positions_are_within_the_limit(build: Build, check: Check) -> None:
    assert seen(check(build(open_positions=[_small(i, s) for i, s in enumerate(SYMBOLS[:3])]))) == set()


def test_a_realised_loss_today_over_two_percent_breaks_the_daily_loss_limit(build: Build, check: Check) -> None:
    t = build(closed=50)  # generated history closes before today
    add_closed(t, closed_position("pos-loss-1", iso_z(NOW - timedelta(hours=2)), -150.0))
    add_closed(t, closed_position("pos-loss-2", iso_z(NOW - timedelta(hours=1)), -100.0))
    report = check(t)
    assert seen(report) == {("LIMIT_DAILY_LOSS", Level.CRITICAL, POS)}
    assert report.findings[0].context == {"loss": 250.0, "limit": 212.5}


@pytest.mark.parametrize(
    "closed_at",
    [
        iso_z(NOW.replace(hour=0, minute=0) - timedelta(minutes=1)),  # 23:59 UTC yesterday
        "2026-11-21T01:30:00+02:00",  # 23:30 UTC yesterday, in another zone
    ],
)
def test_a_loss_from_yesterday_does_not_count_toward_the_daily_limit(
    build: Build, check: Check, closed_at: str
) -> None:
    t = build()
    add_closed(t, closed_position("pos-loss-1", closed_at, -500.0))
    assert seen(check(t)) == set()


@pytest.mark.parametrize(
    "closed_at",
    [
        "2026-11-20T23:30:00-02:00",  # 01:30 UTC today
        (NOW - timedelta(hours=3)).timestamp(),  # Unix seconds
        "2026-11-21T00:00:00Z",  # midnight opens the day
    ],
    ids=["offset", "unix-seconds", "midnight"],
)
def test_a_loss_closed_today_in_utc_counts_however_its_time_is_written(
    build: Build, check: Check, closed_at: str | float
) -> None:
    t = build()
    add_closed(t, closed_position("pos-loss-1", closed_at, -500.0))
    assert seen(check(t)) == {("LIMIT_DAILY_LOSS", Level.CRITICAL, POS)}


def test_an_active_emergency_stop_is_reported(bot: BotTree, check: Check) -> None:
    write_json(bot.emergency_stop, {"active": True, "reason": "Position size violation", "since": iso_z(NOW)})
    report = check(bot)
    assert seen(report) == {("EMERGENCY_STOP_ACTIVE", Level.CRITICAL, STOP)}
    assert report.findings[0].context["reason"] == "Position size violation"


def test_a_cleared_emergency_stop_is_not_reported(bot: BotTree, check: Check) -> None:
    write_json(bot.emergency_stop, {"active": False, "cleared_by": "admin", "cleared_at": iso_z(NOW)})
    assert seen(check(bot)) == set()


@pytest.mark.parametrize("content", ['{"active": tr', '{"active": "yes"}', '{"reason": "x"}', ""])
def test_an_emergency_stop_that_cannot_be_read_is_unknown_critical(bot: BotTree, check: Check, content: str) -> None:
    bot.emergency_stop.write_text(content)
    assert seen(check(bot)) == {("UNKNOWN", Level.CRITICAL, STOP)}


# --- the write-ahead log --------------------------------------------------------------------------


def _append_wal(t: BotTree, op_id: str, *statuses: str, op: str = "BALANCE_DEDUCT") -> None:
    with t.wal.open("a") as wal:
        for s in statuses:
            wal.write(json.dumps({"id": op_id, "op": op, "status": s, "ts": iso_z(NOW), "data": {}}) + "\n")


@pytest.mark.parametrize(
    "statuses", [("pending",), ("pending", "in_progress"), ("pending", "in_progress", "failed")], ids=lambda s: s[-1]
)
def test_an_operation_left_unfinished_in_the_wal_is_incomplete(
    bot: BotTree, check: Check, statuses: tuple[str, ...]
) -> None:
    _append_wal(bot, "wal-000002", *statuses)
    report = check(bot)
    assert seen(report) == {("WAL_INCOMPLETE", Level.CRITICAL, "wal:wal-000002")}
    assert report.findings[0].context["status"] == statuses[-1]


@pytest.mark.parametrize("final", ["completed", "rolled_back"])
def test_a_finished_operation_in_the_wal_is_not_reported(bot: BotTree, check: Check, final: str) -> None:
    _append_wal(bot, "wal-000002", "pending", "in_progress", final)
    assert seen(check(bot)) == set()


def test_a_torn_last_wal_line_is_incomplete(bot: BotTree, check: Check) -> None:
    assert len(bot.wal.read_text().splitlines()) == 2
    with bot.wal.open("a") as wal:
        wal.write('{"id": "wal-000002", "op": "BALANCE_DEDUCT", "sta')  # the bot died mid-append
    assert seen(check(bot)) == {("WAL_INCOMPLETE", Level.CRITICAL, "wal:line3")}


# --- heartbeats -----------------------------------------------------------------------------------

NO_TS = object()


@pytest.mark.parametrize(
    ("ts", "mtime", "stale"),
    [
        pytest.param(iso_z(NOW - timedelta(minutes=11)), NOW, True, id="iso-11-min-old"),
        pytest.param(iso_z(NOW - timedelta(minutes=9)), NOW, False, id="iso-9-min-old"),
        pytest.param((NOW - timedelta(minutes=11)).timestamp(), NOW, True, id="unix-11-min-old"),
        pytest.param(int((NOW - timedelta(minutes=1)).timestamp()), NOW, False, id="unix-1-min-old"),
        pytest.param(NO_TS, NOW - timedelta(minutes=20), True, id="no-ts-old-mtime"),
        pytest.param(NO_TS, NOW - timedelta(minutes=1), False, id="no-ts-fresh-mtime"),
        pytest.param(iso_z(NOW - timedelta(minutes=30)), NOW, True, id="old-ts-beats-fresh-mtime"),
        pytest.param(iso_z(NOW + timedelta(minutes=5)), NOW, True, id="5-min-in-the-future"),
        pytest.param(iso_z(NOW + timedelta(seconds=30)), NOW, False, id="30s-ahead-within-skew"),
    ],
)
def test_a_heartbeat_is_stale_when_old_or_from_the_future(
    bot: BotTree, check: Check, ts: object, mtime: datetime, stale: bool
) -> None:
    beat: dict[str, Any] = {"component": "bot_cycle", "pid": DEAD_PID}
    if ts is not NO_TS:
        beat["ts"] = ts
    path = bot.heartbeats / "bot_cycle.json"
    write_json(path, beat)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    expected = {("HEARTBEAT_STALE", Level.HIGH, "heartbeat:bot_cycle")} if stale else set()
    assert seen(check(bot)) == expected


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_a_heartbeat_that_is_not_a_regular_file_is_unknown(bot: BotTree, check: Check, kind: str) -> None:
    _plant_non_regular(bot.heartbeats / "bot_cycle.json", kind)
    assert seen(check(bot)) == {("UNKNOWN", Level.HIGH, "heartbeat:bot_cycle")}


def test_each_component_heartbeat_is_judged_on_its_own(build: Build, check: Check) -> None:
    t = build(heartbeat_components=("bot_cycle", "risk_monitor"))
    write_json(t.heartbeats / "risk_monitor.json", {"component": "risk_monitor", "ts": iso_z(NOW - timedelta(hours=1))})
    assert seen(check(t)) == {("HEARTBEAT_STALE", Level.HIGH, "heartbeat:risk_monitor")}


# --- locks ----------------------------------------------------------------------------------------


def _lock(t: BotTree) -> Path:
    return t.positions.with_name(t.positions.name + ".lock")


def _age(path: Path, stamp: float = OLD) -> None:
    os.utime(path, (stamp, stamp))


def test_a_soft_lock_naming_a_dead_pid_is_stale(bot: BotTree, check: Check) -> None:
    lock = _lock(bot)
    lock.write_text(f"{DEAD_PID}\n{socket.gethostname()}\n")
    _age(lock)
    report = check(bot)
    assert seen(report) == {("LOCK_STALE", Level.MEDIUM, POS_LOCK)}
    assert str(DEAD_PID) in report.findings[0].message


def test_a_young_soft_lock_naming_a_dead_pid_is_not_yet_stale(bot: BotTree, check: Check) -> None:
    lock = _lock(bot)
    lock.write_text(f"{DEAD_PID}\n{socket.gethostname()}\n")
    _age(lock, (NOW - timedelta(minutes=2)).timestamp())
    assert seen(check(bot)) == set()


def test_an_old_soft_lock_naming_a_live_pid_is_not_stale(bot: BotTree, check: Check) -> None:
    lock = _lock(bot)
    lock.write_text(f"{os.getpid()}\n{socket.gethostname()}\n")
    _age(lock)
    assert seen(check(bot)) == set()  # the positions file itself is fresh: not contended either


def test_an_old_lock_a_live_process_holds_is_not_stale(
    bot: BotTree, check: Check, hold_lock: Callable[[Path], int]
) -> None:
    lock = _lock(bot)
    hold_lock(lock)
    _age(lock)  # after the child took it: taking a filelock truncates the file and renews its mtime
    # Even with lock_style soft, where an unheld old lock is stale. The holder (`python -c` naming the
    # lock file) runs no code from the home: a tool, not a bot process, so no orphan either.
    report = check(bot, extra={"bot": {"lock_style": "soft"}})
    assert seen(report) == set()


def test_an_idle_flock_style_lock_file_is_not_stale_by_default(bot: BotTree, check: Check) -> None:
    lock = _lock(bot)
    lock.touch()
    _age(lock)
    assert seen(check(bot)) == set()


def test_an_idle_old_lock_file_is_stale_when_the_bot_uses_soft_locks(bot: BotTree, check: Check) -> None:
    lock = _lock(bot)
    lock.touch()
    _age(lock)
    assert seen(check(bot, extra={"bot": {"lock_style": "soft"}})) == {("LOCK_STALE", Level.MEDIUM, POS_LOCK)}


def test_a_lock_held_while_its_file_stays_unchanged_is_contended(
    bot: BotTree, check: Check, hold_lock: Callable[[Path], int]
) -> None:
    lock = _lock(bot)
    pid = hold_lock(lock)
    _age(lock)
    _age(bot.positions)
    report = check(bot)
    assert seen(report) == {("LOCK_CONTENDED", Level.HIGH, POS_LOCK)}
    contended = next(f for f in report.findings if f.code == "LOCK_CONTENDED")
    assert contended.context == {"pids": str(pid)}


def test_a_held_lock_whose_file_changed_recently_is_not_contended(
    bot: BotTree, check: Check, hold_lock: Callable[[Path], int]
) -> None:
    lock = _lock(bot)
    hold_lock(lock)
    _age(lock)
    _age(bot.positions, (NOW - timedelta(minutes=1)).timestamp())
    assert seen(check(bot)) == set()


# --- processes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "level"), [("paper", Level.HIGH), ("real", Level.CRITICAL)])
def test_a_bot_process_outside_the_bot_unit_is_an_orphan(
    bot: BotTree, check: Check, run_bot: Callable[[Path], int], mode: str, level: Level
) -> None:
    pid = run_bot(bot.current_slot)
    report = check(bot, mode=mode)
    assert seen(report) == {("ORPHAN_PROCESS", level, f"pid:{pid}")}
    if mode == "real":
        assert "never kills" in (report.findings[0].action or "")


# --- the SQLite trade store -----------------------------------------------------------------------

JSON_IDS = [f"pos-{i:09d}" for i in range(1, 6)]  # the ids build_bot_tree(closed=5) writes


def _trade_store(t: BotTree, ids: Sequence[str]) -> None:
    with contextlib.closing(sqlite3.connect(t.data / "data" / "trades.db")) as con, con:
        con.execute("CREATE TABLE closed_positions (id TEXT PRIMARY KEY, pnl REAL)")
        con.executemany("INSERT INTO closed_positions (id) VALUES (?)", [(i,) for i in ids])


SQLITE = {"trade_store": {"sqlite": "data/trades.db"}}


def test_a_trade_store_whose_closed_positions_differ_from_the_json_has_diverged(build: Build, check: Check) -> None:
    t = build(closed=5)
    assert [p["id"] for p in read_json(t.positions)["closed_positions"]] == JSON_IDS
    _trade_store(t, [*JSON_IDS[:4], "pos-999999999"])
    report = check(t, extra=SQLITE)
    assert seen(report) == {("SQLITE_JSON_DIVERGED", Level.CRITICAL, "data/trades.db")}
    assert report.findings[0].context == {"only_json": 1, "only_sqlite": 1}


def test_a_trade_store_holding_the_same_closed_positions_is_not_reported(build: Build, check: Check) -> None:
    t = build(closed=5)
    _trade_store(t, list(reversed(JSON_IDS)))
    assert seen(check(t, extra=SQLITE)) == set()


def test_a_missing_trade_store_is_unknown(build: Build, check: Check) -> None:
    t = build(closed=5)
    assert seen(check(t, extra=SQLITE)) == {("UNKNOWN", Level.HIGH, "data/trades.db")}


# --- `guardian check` exit codes ------------------------------------------------------------------


def _codes(result: Result) -> set[tuple[str, str, str]]:
    return {(f["code"], f["level"], f["subject"]) for f in result.json()["findings"]}


def test_check_exits_0_on_a_healthy_tree(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    result = cli(make_config(tree), "check", "--json")
    assert result.code == 0, result.out
    assert result.json()["status"] == "OK"
    assert _codes(result) == set()


def test_check_exits_1_for_a_warning_level_finding_only(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    tmp = tree.data / "logs" / ".positions_futures.json.tmp"
    tmp.write_text("{")
    hour_ago = time.time() - 3600
    os.utime(tmp, (hour_ago, hour_ago))
    result = cli(make_config(tree), "check", "--json")
    assert result.code == 1, result.out
    assert _codes(result) == {("TEMP_FILE_LEFTOVER", "LOW", "logs/.positions_futures.json.tmp")}


def test_check_exits_1_for_a_high_but_not_critical_finding(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    write_json(tree.heartbeats / "bot_cycle.json", {"component": "bot_cycle", "ts": time.time() - 3600})
    result = cli(make_config(tree), "check", "--json")
    assert result.code == 1, result.out
    assert _codes(result) == {("HEARTBEAT_STALE", "HIGH", "heartbeat:bot_cycle")}


def test_check_exits_2_for_a_critical_finding(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    doc = read_json(tree.positions)
    doc["open_positions"][0]["stop_loss"] = None
    write_json(tree.positions, doc)
    result = cli(make_config(tree), "check", "--json")
    assert result.code == 2, result.out
    assert _codes(result) == {("STOP_LOSS_MISSING", "CRITICAL", f"position:{POS_ID}")}


def test_check_exits_2_when_a_critical_finding_comes_with_an_unknown(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    doc = read_json(tree.positions)
    doc["open_positions"][0]["stop_loss"] = None
    write_json(tree.positions, doc)
    tree.emergency_stop.write_text('{"active": tr')
    result = cli(make_config(tree), "check", "--json")
    assert result.code == 2, result.out
    assert _codes(result) == {
        ("STOP_LOSS_MISSING", "CRITICAL", f"position:{POS_ID}"),
        ("UNKNOWN", "CRITICAL", STOP),
    }


def test_check_exits_3_when_the_only_findings_are_unknown(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    tree.emergency_stop.write_text('{"active": tr')
    result = cli(make_config(tree), "check", "--json")
    assert result.code == 3, result.out
    assert _codes(result) == {("UNKNOWN", "CRITICAL", STOP)}


def test_check_without_json_prints_a_summary_and_one_row_per_finding(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    (tree.home / "DEPLOYED_SLOT").write_text("blue\n")
    result = cli(make_config(tree), "check")
    assert result.code == 2
    lines = result.out.strip().splitlines()
    assert lines[0].startswith("guardian check: CRITICAL - score 50/100, 1 finding(s)")
    assert "SLOT_MISMATCH" in lines[1]
    assert LINK in lines[1]


# --- timestamps without a zone ----------------------------------------------------------------------


@pytest.fixture
def local_tz_ahead_of_utc() -> Iterator[None]:
    """Run with the process's local time zone at UTC+05:30, as on a server not set to UTC."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"  # POSIX form: needs no tzdata
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.mark.usefixtures("local_tz_ahead_of_utc")
def test_a_heartbeat_ts_without_a_zone_is_read_as_utc_not_local_time(bot: BotTree, check: Check) -> None:
    # The layout's times are UTC; datetime.utcnow().isoformat() writes them without a zone.
    naive = (NOW - timedelta(minutes=1)).replace(tzinfo=None).isoformat()
    write_json(bot.heartbeats / "bot_cycle.json", {"component": "bot_cycle", "ts": naive})
    assert seen(check(bot)) == set()


@pytest.mark.usefixtures("local_tz_ahead_of_utc")
def test_a_closed_at_without_a_zone_is_read_as_utc_not_local_time(build: Build, check: Check) -> None:
    t = build()
    add_closed(t, closed_position("pos-loss-1", "2026-11-21T01:30:00", -500.0))  # today, UTC
    assert seen(check(t)) == {("LIMIT_DAILY_LOSS", Level.CRITICAL, POS)}
