"""Can the bot save? DISK_LOW and STATE_NOT_WRITABLE judged for the filesystem of every directory the
bot or guardian writes, on real mounts: a tmpfs for ``logs/`` or ``state/``, filled or out of inodes,
read-only bind mounts, chattr +i/+a. As root only (see tests/mounts.py); each test unmounts what it
mounted, and the ``filesystems`` fixture fails it if anything is left mounted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from guardian.demo import BotTree, build_bot_tree
from tests.conftest import Result
from tests.mounts import Filesystems, append_only, fill, immutable, mount_points_under, tmpfs

Cli = Callable[..., Result]
MakeConfig = Callable[..., Path]
MIB = 1 << 20
# A 1 MiB floor, so that a tmpfs of a few MiB is roomy unless a test fills it.
ROOMY = {"thresholds": {"disk_min_free_mb": 1}}
LOGS_SAVES = (
    "the bot cannot save logs/positions_futures.json, logs/portfolio_futures.json; "
    "guardian cannot write logs/backups/*, logs/operator_alerts.jsonl"
)


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of ``path``, as findmnt(8) reads them: not guardian's reading."""
    out = subprocess.run(
        ["findmnt", "--json", "-o", "TARGET,FSTYPE", "--target", str(path.resolve())],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fs = json.loads(out)["filesystems"][0]
    return fs["target"], fs["fstype"]


def finding(code: str, subject: str, message: str, action: str, **context: Any) -> dict[str, Any]:
    """A finding as ``guardian check --json`` prints it (these are all HIGH and need an operator; each
    leaves unproven the fact its check proves, so each blocks a real-mode start)."""
    concern = "disk space" if code == "DISK_LOW" else "state writable"
    return {
        "code": code,
        "level": "HIGH",
        "subject": subject,
        "message": message,
        "recoverable": False,
        "action_required": True,
        "action": action,
        "context": context,
        "concern": concern,
    }


def check(cli: Cli, config: Path) -> tuple[int, list[dict[str, Any]]]:
    r = cli(config, "check", "--json")
    findings: list[dict[str, Any]] = r.json()["findings"]
    return r.code, findings


@pytest.fixture(autouse=True)
def nothing_left_mounted(tmp_path: Path) -> Iterator[None]:
    yield
    assert mount_points_under(tmp_path) == []


# --- full and out of inodes ---------------------------------------------------------------------


def test_a_full_logs_volume_is_disk_low_even_when_the_data_root_has_space(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    logs = filesystems.tmpfs(tree.data / "logs", size_kb=4096)
    filesystems.fill(logs)
    assert shutil.disk_usage(tree.data).free > MIB  # the data root's own filesystem has room
    code, findings = check(cli, make_config(tree, extra=ROOMY))
    assert findings == [
        finding(
            "DISK_LOW",
            "logs",
            f"the filesystem of logs ({logs}, tmpfs) has 0 MiB free, below the 1 MiB kept free "
            "(thresholds.disk_min_free_mb)",
            f"free space on {logs}",
            dirs="logs,logs/backups",
            mount=str(logs),
            fs="tmpfs",
            free_mb=0,
            need_mb=1,
        )
    ]
    assert code == 1


def test_a_logs_volume_out_of_inodes_is_disk_low_though_it_has_space(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    logs = filesystems.tmpfs(tree.data / "logs", size_kb=4096, nr_inodes=64)
    assert filesystems.exhaust_inodes(logs) > 0
    free_mb = shutil.disk_usage(logs).free // MIB
    assert free_mb >= 1  # only the inodes ran out
    code, findings = check(cli, make_config(tree, extra=ROOMY))
    assert findings == [
        finding(
            "DISK_LOW",
            "logs",
            f"the filesystem of logs ({logs}, tmpfs) has no free inode: a save creates its temp file first, "
            f"so {LOGS_SAVES}",
            f"free space and inodes on {logs}",
            dirs="logs,logs/backups",
            mount=str(logs),
            fs="tmpfs",
            free_mb=free_mb,
            need_mb=1,
            free_inodes=0,
        )
    ]
    assert code == 1


def test_the_positions_volume_needs_room_for_a_second_copy_of_the_positions(
    tmp_path: Path, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    big = build_bot_tree(tmp_path / "big", closed=5000)
    size = big.positions.stat().st_size
    assert 2 * MIB < size < 3 * MIB
    logs = filesystems.tmpfs(big.data / "logs", size_kb=4096 + 512)
    free = shutil.disk_usage(logs).free
    assert MIB < free < 2 * size  # above the floor, short of a second copy
    code, findings = check(cli, make_config(big, extra=ROOMY))
    need_mb = -(-2 * size // MIB)
    assert findings == [
        finding(
            "DISK_LOW",
            "logs",
            f"the filesystem of logs ({logs}, tmpfs) has {free // MIB} MiB free, below the {need_mb} MiB an "
            "atomic save of logs/positions_futures.json needs (twice its size)",
            f"free space on {logs}",
            dirs="logs,logs/backups",
            mount=str(logs),
            fs="tmpfs",
            free_mb=free // MIB,
            need_mb=need_mb,
        )
    ]
    assert code == 1


def test_a_directory_not_yet_created_is_judged_by_the_filesystem_it_will_be_created_on(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    (tree.data / "logs" / "backups").rmdir()
    logs = filesystems.tmpfs(tree.data / "logs", size_kb=4096)
    filesystems.fill(logs)
    _, findings = check(cli, make_config(tree, extra=ROOMY))
    disk = [f for f in findings if f["code"] == "DISK_LOW"]
    assert [(f["subject"], f["context"]["dirs"]) for f in disk] == [("logs", "logs,logs/backups")]
    assert {(f["code"], f["subject"]) for f in findings} == {
        ("DISK_LOW", "logs"),
        ("DIRECTORY_MISSING", "logs/backups"),
    }


# --- read-only ----------------------------------------------------------------------------------


def test_a_read_only_bind_mount_of_logs_is_state_not_writable(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    logs = filesystems.readonly_bind(tree.data / "logs")
    point, fstype = mount_of(logs)
    assert point == str(logs)
    code, findings = check(cli, make_config(tree, extra=ROOMY))
    assert findings == [
        finding(
            "STATE_NOT_WRITABLE",
            "logs",
            f"the filesystem of logs ({logs}, {fstype}) is read-only: {LOGS_SAVES}",
            f"remount {logs} read-write",
            dirs="logs,logs/backups",
            mount=str(logs),
            fs=fstype,
        )
    ]
    assert code == 1


def test_a_read_only_state_directory_stops_the_wal_the_heartbeats_and_the_kill_switch(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    state = filesystems.readonly_bind(tree.data / "state")
    _, fstype = mount_of(state)
    code, findings = check(cli, make_config(tree, extra=ROOMY))
    assert findings == [
        finding(
            "STATE_NOT_WRITABLE",
            "state",
            f"the filesystem of state ({state}, {fstype}) is read-only: the bot cannot save "
            "state/wal/operations.wal, state/emergency_stop.json, state/heartbeats/*.json",
            f"remount {state} read-write",
            dirs="state,state/heartbeats,state/wal",
            mount=str(state),
            fs=fstype,
        )
    ]
    assert code == 1


def test_one_read_only_volume_is_one_finding_naming_every_directory_on_it(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    root = filesystems.readonly_bind(tree.current_slot)
    _, fstype = mount_of(root)
    _, findings = check(cli, make_config(tree, extra=ROOMY))
    assert findings == [
        finding(
            "STATE_NOT_WRITABLE",
            "data root",
            f"the filesystem of the data root ({root}, {fstype}) is read-only: the bot cannot save "
            "logs/positions_futures.json, logs/portfolio_futures.json, state/wal/operations.wal, "
            "state/emergency_stop.json, state/heartbeats/*.json; "
            "guardian cannot write logs/backups/*, logs/operator_alerts.jsonl",
            f"remount {root} read-write",
            dirs="data root,logs,state,logs/backups,state/heartbeats,state/wal",
            mount=str(root),
            fs=fstype,
        )
    ]


def test_an_alert_log_on_its_own_read_only_volume_is_state_not_writable(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    (tree.data / "alerts").mkdir()
    alerts = filesystems.tmpfs(tree.data / "alerts", size_kb=4096)
    filesystems.readonly_bind(alerts)
    config = make_config(tree, extra={**ROOMY, "alerts": {"jsonl": "alerts/operator_alerts.jsonl"}})
    code, findings = check(cli, config)
    assert findings == [
        finding(
            "STATE_NOT_WRITABLE",
            "alerts",
            f"the filesystem of alerts ({alerts}, tmpfs) is read-only: guardian cannot write "
            "alerts/operator_alerts.jsonl",
            f"remount {alerts} read-write",
            dirs="alerts",
            mount=str(alerts),
            fs="tmpfs",
        )
    ]
    assert code == 1


def test_a_healthy_tree_over_several_filesystems_has_no_finding(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    (tree.data / "alerts").mkdir()
    for rel in ("logs", "state", "alerts"):
        filesystems.tmpfs(tree.data / rel, size_kb=8192)
    filesystems.tmpfs(tree.data / "state" / "wal", size_kb=4096)
    devices = {os.stat(tree.data / rel).st_dev for rel in (".", "logs", "state", "state/wal", "alerts")}
    assert len(devices) == 5
    config = make_config(tree, extra={**ROOMY, "alerts": {"jsonl": "alerts/operator_alerts.jsonl"}})
    r = cli(config, "check", "--json")
    assert r.json()["findings"] == []
    assert r.code == 0


def test_a_filesystem_that_reports_neither_space_nor_chattr_flags_is_no_finding(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    logs = filesystems.ramfs(tree.data / "logs")
    vfs = os.statvfs(logs)
    assert (vfs.f_blocks, vfs.f_bavail, vfs.f_files) == (0, 0, 0)  # "0 free" of no limit at all
    r = cli(make_config(tree, extra=ROOMY), "check", "--json")
    assert r.json()["findings"] == []
    assert r.code == 0


# --- chattr +i / +a -----------------------------------------------------------------------------


def test_an_immutable_positions_file_is_state_not_writable(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    filesystems.immutable(tree.positions)
    code, findings = check(cli, make_config(tree, extra=ROOMY))
    assert findings == [
        finding(
            "STATE_NOT_WRITABLE",
            "logs/positions_futures.json",
            "logs/positions_futures.json is immutable (chattr +i): it cannot be written or replaced, "
            "so every save of it fails",
            f"chattr -i {tree.positions}",
            flags="immutable",
        )
    ]
    assert code == 1


def test_an_immutable_wal_directory_is_state_not_writable(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    filesystems.immutable(tree.wal.parent)
    code, findings = check(cli, make_config(tree, extra=ROOMY))
    assert findings == [
        finding(
            "STATE_NOT_WRITABLE",
            "state/wal",
            "state/wal is immutable (chattr +i): no file can be created, renamed or removed in it, "
            "so every save of state/wal/operations.wal fails",
            f"chattr -i {tree.wal.parent}",
            flags="immutable",
        )
    ]
    assert code == 1


def test_an_append_only_positions_file_cannot_be_replaced_by_an_atomic_save(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    filesystems.append_only(tree.positions)
    _, findings = check(cli, make_config(tree, extra=ROOMY))
    assert findings == [
        finding(
            "STATE_NOT_WRITABLE",
            "logs/positions_futures.json",
            "logs/positions_futures.json is append-only (chattr +a): it cannot be replaced, so every save of it fails",
            f"chattr -a {tree.positions}",
            flags="append-only",
        )
    ]


def test_an_append_only_wal_is_no_finding_as_the_bot_only_appends_to_it(
    tree: BotTree, make_config: MakeConfig, cli: Cli, filesystems: Filesystems
) -> None:
    filesystems.append_only(tree.wal)
    filesystems.append_only(tree.wal.parent)
    with tree.wal.open("a") as f:  # what the bot does to it still works
        f.write("")
    r = cli(make_config(tree, extra=ROOMY), "check", "--json")
    assert r.json()["findings"] == []


def test_a_tmpfs_holds_a_copy_of_the_directory_and_unmounting_brings_the_original_back(tree: BotTree) -> None:
    logs = tree.data / "logs"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in logs.iterdir() if p.is_file()}
    original_dev = os.stat(logs).st_dev
    with tmpfs(logs, size_kb=4096) as mounted:
        assert os.stat(logs).st_dev != original_dev
        assert mount_of(logs) == (str(mounted), "tmpfs")
        copied = {
            p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in logs.iterdir() if p.is_file()
        }
        assert copied == before
        assert (logs / "backups").is_dir()
        (logs / "written-on-the-tmpfs").write_text("x")
        with fill(logs, leave_kb=512):
            assert 512 * 1024 <= shutil.disk_usage(logs).free < 520 * 1024
        assert shutil.disk_usage(logs).free > 3 * MIB
    assert os.stat(logs).st_dev == original_dev
    assert not (logs / "written-on-the-tmpfs").exists()
    assert {p.name for p in logs.iterdir() if p.is_file()} == set(before)


def test_the_chattr_helpers_undo_their_flags_on_exit(tree: BotTree) -> None:
    with immutable(tree.positions), pytest.raises(PermissionError):
        tree.positions.open("a")
    with append_only(tree.positions), pytest.raises(PermissionError):
        tree.positions.write_text("{}")
    tree.positions.write_text(tree.positions.read_text())


# --- what cannot be probed ----------------------------------------------------------------------


def test_a_data_root_that_cannot_be_stat_ed_is_one_unknown_not_one_per_directory(
    tmp_path: Path, tree: BotTree, make_config: MakeConfig, cli: Cli
) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)  # stat: ELOOP, an error other than "not found"
    code, findings = check(cli, make_config(tree, extra={**ROOMY, "bot": {"data": str(loop)}}))
    mine = [f for f in findings if f["code"] in ("DISK_LOW", "STATE_NOT_WRITABLE") or "can save" in f["message"]]
    assert mine == [
        finding(
            "UNKNOWN",
            "data root",
            f"cannot stat the data root {loop} (Too many levels of symbolic links): whether the bot can "
            "save its state is not proven",
            f"make {loop} reachable by guardian's user, then re-run `guardian check`",
            error="ELOOP",
        )
    ]
    assert code == 3


def check_without_capabilities(config: Path) -> tuple[int, list[dict[str, Any]]]:
    """``guardian check --json`` run as root's uid with no capability at all: the kernel then checks
    permissions as for any user (mode 000 keeps it out), while pytest's root-only temp directories
    stay reachable, as they would not be for another uid."""
    if os.geteuid() != 0:
        pytest.skip("dropping capabilities needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    drop = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
    r = subprocess.run(
        [*drop, sys.executable, "-m", "guardian", "--config", str(config), "check", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if r.returncode != 0 and not r.stdout:
        pytest.skip(f"cannot run guardian without capabilities: {r.stderr.strip()}")
    findings: list[dict[str, Any]] = json.loads(r.stdout)["findings"]
    return r.returncode, findings


def test_a_directory_guardian_cannot_stat_is_unknown_not_a_silent_pass(tree: BotTree, make_config: MakeConfig) -> None:
    vault = tree.data / "vault"
    (vault / "backups").mkdir(parents=True)
    config = make_config(tree, extra={**ROOMY, "files": {"backups": "vault/backups"}})
    vault.chmod(0)
    try:
        code, findings = check_without_capabilities(config)
    finally:
        vault.chmod(0o755)
    assert findings == [
        finding(
            "UNKNOWN",
            "vault/backups",
            "cannot stat vault/backups (Permission denied): whether the bot can save in vault/backups is not proven",
            f"make {vault / 'backups'} reachable by guardian's user, then re-run `guardian check`",
            dirs="vault/backups",
            error="EACCES",
        )
    ]
    assert code == 3


def test_a_directory_whose_chattr_flags_guardian_cannot_read_is_unknown(tree: BotTree, make_config: MakeConfig) -> None:
    backups = tree.data / "logs" / "backups"
    backups.chmod(0o333)  # writable and searchable, not readable: stat works, opening it does not
    try:
        code, findings = check_without_capabilities(make_config(tree, extra=ROOMY))
    finally:
        backups.chmod(0o755)
    assert findings == [
        finding(
            "UNKNOWN",
            "logs/backups",
            "cannot read the attributes (chattr flags) of logs/backups (Permission denied): whether the bot "
            "can save in it is not proven",
            f"let guardian's user open {backups} for reading, then re-run `guardian check`",
            error="EACCES",
        )
    ]
    assert code == 3
