"""``guardian backups restore`` writes only inside the data root.

The bot's user can write the backups folder and its manifest; the operator restoring may be root
(these tests run as root). A forged manifest line, a planted backup name or a symlinked directory
must not make guardian write outside the data root: each is refused with the reason and exit 1,
before anything at all is written (no lock file, no pre-restore backup).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from guardian.demo import BotTree
from guardian.fsutil import pinned_dir
from tests.conftest import Result, snapshot

FORGED = b"root::0:0:owned:/root:/bin/sh\n"
VICTIM = b"root:x:0:0:root:/root:/bin/bash\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the bot's tree that stands for /etc/passwd."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_bytes(VICTIM)
    return etc / "passwd"


@pytest.fixture
def config(tree: BotTree, make_config: Callable[..., Path]) -> Path:
    return make_config(tree)


def forge(
    tree: BotTree, original: str, *, data: bytes = FORGED, name: str = "passwd.20261121T000000Z.manual.bak"
) -> str:
    """Plant a backup file and a manifest line naming ``original``, as the bot's user could."""
    (tree.backups / name).write_bytes(data)
    entry = {
        "id": name,
        "original": original,
        "reason": "manual",
        "ts": "2026-11-21T00:00:00Z",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    with (tree.backups / "manifest.jsonl").open("a") as f:
        f.write(json.dumps(entry) + "\n")
    return name


def refused(cli: Callable[..., Result], config: Path, tree: BotTree, backup_id: str, victim: Path) -> str:
    """Run the restore; assert it exits 1 and wrote nothing anywhere; return what it said."""
    before = snapshot(tree.home), snapshot(victim.parent)
    r = cli(config, "backups", "restore", backup_id)
    assert r.code == 1, (r.out, r.err)
    assert r.out == ""
    assert (snapshot(tree.home), snapshot(victim.parent)) == before
    assert victim.read_bytes() == VICTIM
    return r.err


def test_an_honest_manifest_line_is_restored(tree: BotTree, config: Path, cli: Callable[..., Result]) -> None:
    """The contrast case: a forged line naming a file inside the data root is restored like any other."""
    backup = forge(tree, "logs/positions_futures.json", data=b'{"open_positions": [], "closed_positions": []}')
    r = cli(config, "backups", "restore", backup)
    assert r.code == 0, r.err
    assert tree.positions.read_bytes() == b'{"open_positions": [], "closed_positions": []}'
    assert "the file it replaced is kept as logs__positions_futures.json." in r.out


def test_a_manifest_line_with_an_absolute_path_is_refused(
    tree: BotTree, config: Path, cli: Callable[..., Result], victim: Path
) -> None:
    backup = forge(tree, str(victim))
    err = refused(cli, config, tree, backup, victim)
    assert f"backup {backup} is of {victim}, an absolute path: restore writes only inside the data root" in err


@pytest.mark.parametrize("climb", ["../../../etc/passwd", "logs/../../../../etc/passwd"])
def test_a_manifest_line_climbing_out_with_dot_dot_is_refused(
    tree: BotTree, config: Path, cli: Callable[..., Result], victim: Path, climb: str
) -> None:
    assert (tree.data / climb).resolve() == victim.resolve()  # the data root is bot/slots/green
    backup = forge(tree, climb)
    err = refused(cli, config, tree, backup, victim)
    assert f"backup {backup} is of {climb}, which climbs out with '..': restore writes only inside the data root" in err


def test_a_manifest_line_through_a_symlinked_directory_out_of_the_root_is_refused(
    tree: BotTree, config: Path, cli: Callable[..., Result], victim: Path
) -> None:
    (tree.data / "logs" / "archive").symlink_to(victim.parent)
    backup = forge(tree, "logs/archive/passwd")
    err = refused(cli, config, tree, backup, victim)
    assert f"is of logs/archive/passwd, which resolves to {victim}, outside the data root" in err


def test_a_symlinked_directory_that_stays_inside_the_root_is_followed(
    tree: BotTree, config: Path, cli: Callable[..., Result]
) -> None:
    (tree.data / "state-link").symlink_to("state")
    backup = forge(tree, "state-link/emergency_stop.json", data=b'{"active": false}')
    assert cli(config, "backups", "restore", backup).code == 0
    assert (tree.data / "state" / "emergency_stop.json").read_bytes() == b'{"active": false}'


def test_a_backup_file_named_to_climb_out_is_refused(
    tree: BotTree, config: Path, cli: Callable[..., Result], victim: Path
) -> None:
    # No manifest line: the name alone says where it came from (`/` spelled `__`).
    name = "..__..__..__etc__passwd.20261121T000000Z.manual.bak"
    (tree.backups / name).write_bytes(FORGED)
    err = refused(cli, config, tree, name, victim)
    assert "is of ../../../etc/passwd, which climbs out with '..'" in err


@pytest.mark.parametrize("backup_id", ["../etc/passwd", "sub/x.bak", "manifest.jsonl", ".."])
def test_a_backup_id_that_is_not_a_file_name_in_the_backups_folder_is_refused(
    tree: BotTree, config: Path, cli: Callable[..., Result], victim: Path, backup_id: str
) -> None:
    err = refused(cli, config, tree, backup_id, victim)
    assert f"{backup_id!r} is not the name of a backup file in {tree.backups}" in err


def test_a_backup_that_is_a_symlink_is_refused(
    tree: BotTree, config: Path, cli: Callable[..., Result], victim: Path
) -> None:
    """A symlink in the backups folder to a file the bot's user cannot read must not be copied
    into the bot's tree by root."""
    name = forge(tree, "logs/copied.json")
    (tree.backups / name).unlink()
    (tree.backups / name).symlink_to(victim)
    err = refused(cli, config, tree, name, victim)
    assert f"backup {name} is a symlink, not a backup file" in err
    assert not (tree.data / "logs" / "copied.json").exists()


def test_a_backups_folder_symlinked_out_of_the_root_is_refused(
    tree: BotTree, config: Path, cli: Callable[..., Result], victim: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    tree.backups.rename(elsewhere)
    tree.backups.symlink_to(elsewhere)
    name = "secret.20261121T000000Z.manual.bak"
    (elsewhere / name).write_bytes(b"not the bot's\n")
    (elsewhere / "manifest.jsonl").write_text(
        json.dumps({"id": name, "original": "logs/leak.json", "reason": "manual", "ts": "x", "size": 14}) + "\n"
    )
    err = refused(cli, config, tree, name, victim)
    assert f"resolves to {elsewhere}, outside the data root" in err
    assert not (tree.data / "logs" / "leak.json").exists()


def test_a_restore_while_the_deployment_link_points_out_of_the_slots_is_refused(
    tree: BotTree, config: Path, cli: Callable[..., Result], victim: Path
) -> None:
    """The data root is wherever the link points: pointed at /etc, 'passwd' would be inside it."""
    (victim.parent / "logs" / "backups").mkdir(parents=True)
    tree.current_link.unlink()
    tree.current_link.symlink_to(victim.parent)
    err = refused(cli, config, tree, "passwd.20261121T000000Z.manual.bak", victim)
    assert f"not restoring: deployment link {tree.current_link} points to {victim.parent}, which is not a slot" in err


def test_a_manifest_line_of_the_wrong_types_is_skipped_not_a_traceback(
    tree: BotTree, config: Path, cli: Callable[..., Result]
) -> None:
    name = forge(tree, "logs/positions_futures.json")
    with (tree.backups / "manifest.jsonl").open("a") as f:
        f.write(json.dumps({"id": 7, "original": ["x"], "reason": None, "ts": 1, "size": "big"}) + "\n")
        f.write("[1, 2]\n")
    listed = cli(config, "backups", "list", "--json")
    assert listed.code == 0, listed.err
    assert [b["id"] for b in listed.json()] == [name]


def test_a_manifest_that_is_a_fifo_is_reported_and_backups_are_still_listed(
    tree: BotTree, config: Path, cli: Callable[..., Result]
) -> None:
    name = forge(tree, "logs/positions_futures.json")
    (tree.backups / "manifest.jsonl").unlink()
    os.mkfifo(tree.backups / "manifest.jsonl")
    listed = cli(config, "backups", "list", "--json")
    assert listed.code == 0
    assert [b["id"] for b in listed.json()] == [name]  # known by its name, its checksum not
    assert f"{tree.backups / 'manifest.jsonl'} cannot be read (is a FIFO); checksums unknown" in listed.err


def test_a_pinned_directory_swapped_for_a_symlink_is_still_the_one_written(tmp_path: Path) -> None:
    """Why restore writes through the directory it opened: a directory renamed away and replaced by a
    symlink to elsewhere, after it was checked, does not redirect the write."""
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    with pinned_dir(inside) as (where, real):
        assert real == inside
        inside.rename(tmp_path / "moved")
        inside.symlink_to(outside)
        (where / "file").write_bytes(b"written")
    assert (tmp_path / "moved" / "file").read_bytes() == b"written"
    assert list(outside.iterdir()) == []
