"""Issue 11: the real-mode gate refuses whatever it cannot prove sound, under real hostile conditions.

Each case is made real: a full tmpfs, a read-only bind mount, ``chattr +i``, a child process holding
the bot's lock, an unmounted volume. For each, the real-mode gate refuses with a reason that names
the cause, and paper mode starts and says what real mode would refuse.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from guardian.demo import BotTree, build_bot_tree, iso_z
from tests.conftest import Result, read_json, write_json
from tests.mounts import Filesystems, tmpfs

Cli = Callable[..., Result]
MakeConfig = Callable[..., Path]
POSITIONS = "logs/positions_futures.json"


def reason(r: Result) -> str:
    lines = r.err.strip().splitlines()
    assert lines, "the gate said nothing"
    return lines[-1]


def corrupt_but_whole(t: BotTree) -> None:
    """Corrupt (trailing garbage), every record still readable: a repair could salvage it all."""
    t.positions.write_bytes(t.positions.read_bytes() + b"\x00\x00 garbage")


def gates(cli: Cli, make_config: MakeConfig, t: BotTree, **extra: dict[str, object]) -> tuple[Result, Result]:
    """The real-mode gate, then the paper-mode one, on the same traded."""
    return cli(make_config(t, mode="real", extra=extra), "gate"), cli(make_config(t, mode="paper", extra=extra), "gate")


def refused_for(real: Result, paper: Result, cause: str) -> None:
    assert real.code == 1, real.err
    assert reason(real).startswith("guardian gate: REFUSED (real mode): "), reason(real)
    assert cause in reason(real), reason(real)
    assert paper.code == 0, paper.err
    assert reason(paper).startswith("guardian gate: ALLOWED (paper mode always starts): real mode would be refused: ")
    assert cause in reason(paper), reason(paper)


@pytest.fixture
def traded(tmp_path: Path) -> BotTree:
    """A healthy tree with three closed positions."""
    return build_bot_tree(tmp_path / "bot", now=datetime.now(UTC), closed=3)


# --- a repair that cannot run --------------------------------------------------------------------


def test_a_corrupt_file_whose_repair_meets_the_bots_held_lock_refuses_naming_the_holder(
    traded: BotTree, make_config: MakeConfig, cli: Cli, hold_lock: Callable[[Path], int]
) -> None:
    corrupt_but_whole(traded)
    before = traded.positions.read_bytes()
    holder = hold_lock(traded.positions.with_name("positions_futures.json.lock"))
    real, paper = gates(cli, make_config, traded, heal={"lock_timeout": "0.2s"})
    refused_for(
        real,
        paper,
        f"positions (so portfolio, limits) not proven: repair failed: STATE_FILE_CORRUPT {POSITIONS}: "
        f"the bot's lock {POSITIONS}.lock is held by pid {holder} for over 0.2s",
    )
    assert traded.positions.read_bytes() == before


def _full(t: BotTree, fs: Filesystems) -> None:
    fs.fill(fs.tmpfs(t.data / "logs", size_kb=512))


def _read_only(t: BotTree, fs: Filesystems) -> None:
    fs.readonly_bind(t.data / "logs")


def _immutable(t: BotTree, fs: Filesystems) -> None:
    fs.immutable(t.positions)


@pytest.mark.parametrize(
    ("make_it", "cause"),
    [
        (_full, "no space left on device (ENOSPC)"),
        (_read_only, "read-only file system (EROFS)"),
        (_immutable, "operation not permitted (EPERM)"),
    ],
    ids=["full-filesystem", "read-only-mount", "immutable-file"],
)
def test_a_corrupt_file_whose_repair_the_filesystem_refuses_is_refused_naming_the_error(
    traded: BotTree,
    make_config: MakeConfig,
    cli: Cli,
    filesystems: Filesystems,
    make_it: Callable[[BotTree, Filesystems], None],
    cause: str,
) -> None:
    corrupt_but_whole(traded)
    before = traded.positions.read_bytes()
    make_it(traded, filesystems)
    real, paper = gates(cli, make_config, traded)
    refused_for(real, paper, f"repair failed: STATE_FILE_CORRUPT {POSITIONS}: {cause}")
    assert traded.positions.read_bytes() == before


def test_a_full_filesystem_is_also_named_as_disk_space_not_proven(
    traded: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    corrupt_but_whole(traded)
    _full(traded, filesystems)
    reasons = json.loads(cli(make_config(traded, mode="real"), "gate", "--json").out)["reasons"]
    assert any(r.startswith("disk space not proven: DISK_LOW logs: the filesystem of logs (") for r in reasons), reasons


def test_a_corrupt_file_with_self_heal_disabled_refuses_naming_the_setting(
    traded: BotTree, make_config: MakeConfig, cli: Cli
) -> None:
    corrupt_but_whole(traded)
    real, paper = gates(cli, make_config, traded, heal={"enabled": False})
    refused_for(real, paper, "repair refused: STATE_FILE_CORRUPT logs/positions_futures.json: self-heal is disabled")


def test_a_healthy_tree_on_a_full_filesystem_refuses_a_real_start_the_bot_could_not_save_in(
    traded: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    filesystems.fill(filesystems.tmpfs(traded.data / "state", size_kb=512))
    real, paper = gates(cli, make_config, traded)
    refused_for(real, paper, "disk space not proven: DISK_LOW state: the filesystem of state (")


def test_a_healthy_tree_on_a_read_only_logs_mount_refuses_a_real_start(
    traded: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    filesystems.readonly_bind(traded.data / "logs")
    real, paper = gates(cli, make_config, traded)
    refused_for(real, paper, "state writable not proven: STATE_NOT_WRITABLE logs: the filesystem of logs (")


# --- what does not prove a cold start -------------------------------------------------------------


def test_a_missing_positions_file_beside_a_torn_portfolio_with_a_readable_count_is_never_started_flat(
    traded: BotTree, make_config: MakeConfig, cli: Cli
) -> None:
    traded.positions.unlink()
    traded.wal.unlink()
    traded.portfolio.write_text('{"balance": 10625.05, "open_positions_count": 1, "updated_at": "2026-1')
    real, paper = gates(cli, make_config, traded)
    refused_for(real, paper, "positions (so limits) not proven: STATE_UNRECOVERABLE logs/positions_futures.json")
    assert "it counts 1 open position(s)" in real.err
    assert not traded.positions.exists()


def test_a_deleted_logs_directory_with_the_wal_recording_a_position_is_never_started_flat(
    traded: BotTree, make_config: MakeConfig, cli: Cli
) -> None:
    shutil.rmtree(traded.data / "logs")
    real, paper = gates(cli, make_config, traded)
    refused_for(
        real,
        paper,
        "positions (so limits) not proven: STATE_UNRECOVERABLE logs/positions_futures.json is missing and was not "
        "repaired: not a cold start, so not created flat: state/wal/operations.wal records 2 operation line(s)",
    )
    assert "state/wal/operations.wal records 2 operation line(s)" in real.err
    assert not traded.positions.exists()


def test_an_unmounted_data_volume_is_data_root_changed_and_nothing_is_written_in_its_mount_point(
    tmp_path: Path, make_config: MakeConfig, cli: Cli
) -> None:
    t = build_bot_tree(tmp_path / "bot", now=datetime.now(UTC), closed=3)
    volume = tmp_path / "volume"
    volume.mkdir()
    small = {"bot": {"data": str(volume)}, "thresholds": {"disk_min_free_mb": 1}}
    config = make_config(t, mode="real", extra=small)
    with tmpfs(volume, size_kb=4096):
        for rel in ("logs", "state", "config", "configs", "data", "feature_store"):
            shutil.copytree(t.current_slot / rel, volume / rel)
        first = cli(config, "gate")
        assert first.code == 0, first.err  # allowed, on the volume: its filesystem is remembered
    assert list(volume.iterdir()) == []  # the bare mount point
    r = cli(config, "gate")
    assert r.code == 1
    assert "data root not proven: DATA_ROOT_CHANGED data root: the data root " in reason(r)
    assert "is on another filesystem than at the last allowed start" in reason(r)
    assert list(volume.iterdir()) == [], "a layout was created in the bare mount point"
    accepted = cli(config, "accept-data-root", "--by", "ops")
    assert accepted.code == 0 and "accepted by ops" in accepted.out
    again = cli(config, "gate")
    assert "DATA_ROOT_CHANGED" not in reason(again)
    assert "positions (so limits) not proven: STATE_UNRECOVERABLE" in reason(again)  # still never flat


# --- a salvage that may lose today's trades ------------------------------------------------------


def test_a_salvage_that_drops_a_torn_tail_sets_the_stop_and_refuses_until_an_operator_confirms(
    traded: BotTree, make_config: MakeConfig, cli: Cli
) -> None:
    doc = read_json(traded.positions)
    today = iso_z(datetime.now(UTC) - timedelta(minutes=5))
    doc["closed_positions"].append({**doc["open_positions"][0], "id": "pos-today", "closed_at": today, "pnl": -900.0})
    write_json(traded.positions, doc)
    raw = traded.positions.read_bytes()
    traded.positions.write_bytes(raw[: raw.index(b'"pos-today"') + 40])  # today's loss is in the torn tail
    config = make_config(traded, mode="real")
    r = cli(config, "gate")
    assert r.code == 1
    assert "emergency stop not proven: EMERGENCY_STOP_ACTIVE state/emergency_stop.json" in reason(r)
    assert "the day's realised loss is unknown" in r.err
    stop = read_json(traded.emergency_stop)
    assert stop["active"] is True and stop["set_by"] == "guardian"
    assert "the list is cut off after the last record read" in stop["reason"]
    kept = [p for p in traded.backups.iterdir() if "corrupt" in p.name]
    assert [p.read_bytes() for p in kept] == [raw[: raw.index(b'"pos-today"') + 40]]  # the lost bytes are kept
    assert cli(config, "clear-stop", "--approver", "ops").code == 0
    assert cli(config, "gate").code == 0


# --- check says what the gate would do -----------------------------------------------------------


def test_check_in_real_mode_says_the_gate_would_refuse_what_it_would_refuse(
    traded: BotTree, make_config: MakeConfig, cli: Cli
) -> None:
    raw = traded.positions.read_bytes()
    traded.positions.write_bytes(raw[: raw.index(b'"open_positions"') + 40])  # its open positions are cut
    config = make_config(traded, mode="real")
    checked = cli(config, "check")
    assert checked.code == 2
    assert "  real-mode start: REFUSED" in checked.out
    assert "positions (so portfolio, limits) not proven: STATE_UNRECOVERABLE logs/positions_futures.json" in checked.out
    verdict = json.loads(cli(config, "check", "--json").out)["verdict"]
    gate = json.loads(cli(config, "gate", "--json").out)
    assert gate["allowed"] is False
    assert verdict["blockers"][0] == gate["reasons"][0]


def test_check_in_real_mode_says_a_repairable_tree_waits_on_its_repairs(
    traded: BotTree, make_config: MakeConfig, cli: Cli
) -> None:
    corrupt_but_whole(traded)
    config = make_config(traded, mode="real")
    checked = cli(config, "check")
    assert checked.code == 1  # HIGH: the gate would repair it first
    assert "  real-mode start: after the planned repairs, judged again" in checked.out
    assert cli(config, "gate").code == 0  # and it did
