"""Files the bot's user can plant things at: DEPLOYED_SLOT, PREVIOUS_SLOT, a slot's requirements.lock
and configs, a lock marker. Each is read through the hardened reader, so a FIFO, a symlink to
/dev/zero, a huge file or a directory there is a finding that says why, never a hang, a traceback
or a read of the whole thing.

``guardian check`` and the real-mode ``guardian gate`` run as fresh processes with a deadline: a
read that blocked on a FIFO would hang them, and the deadline would fail the test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from guardian.demo import DEAD_PID, BotTree, build_bot_tree, default_open_position, write_config
from tests.conftest import write_json
from tests.test_least_privilege import BotUser, bot_user_or_skip

GUARDIAN = Path(sys.executable).with_name("guardian")
DEADLINE = 60  # seconds; a hang on a FIFO would run into it

KINDS = ("fifo", "symlink-to-dev-zero", "oversized", "directory")
SAID = {
    "fifo": "is a FIFO",
    "symlink-to-dev-zero": "is a symlink",
    "oversized": f"is {1 << 30} bytes, over the limit of",
    "directory": "is a directory",
}


def plant(path: Path, kind: str) -> None:
    """Put something that is not a small regular file at ``path``."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "oversized":
        with path.open("wb") as f:  # sparse: 1 GiB to a reader, nothing on disk
            f.truncate(1 << 30)
    else:
        path.mkdir()
        (path / "inside").write_text("green\n")


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def guardian(config: Path, *args: str) -> Ran:
    r = subprocess.run(
        [str(GUARDIAN), "--config", str(config), *args], capture_output=True, text=True, timeout=DEADLINE, check=False
    )
    assert "Traceback" not in r.stderr, r.stderr
    return Ran(r.returncode, r.stdout, r.stderr)


def findings(ran: Ran) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ran.json()["findings"]
    return found


@pytest.fixture
def real(tree: BotTree, make_config: Callable[..., Path]) -> Path:
    """A real-mode config for the healthy tree: only what a test plants can refuse the start."""
    return make_config(tree, mode="real")


def test_the_healthy_tree_passes_both_check_and_the_real_mode_gate(real: Path) -> None:
    assert guardian(real, "check").code == 0
    gate = guardian(real, "gate")
    assert gate.code == 0, gate.err
    assert "ALLOWED (real mode)" in gate.err


# --- DEPLOYED_SLOT: unreadable is not "none named"; the start is refused ------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_deployed_slot_file_that_cannot_be_read_is_slot_mismatch_saying_why(
    tree: BotTree, real: Path, kind: str
) -> None:
    plant(tree.home / "DEPLOYED_SLOT", kind)
    checked = guardian(real, "check", "--json")
    assert checked.code == 2, checked.out
    (f,) = findings(checked)
    assert (f["code"], f["level"], f["subject"]) == ("SLOT_MISMATCH", "CRITICAL", "trading-bot-current")
    assert f["message"].startswith(f"DEPLOYED_SLOT cannot be read ({SAID[kind]}")
    assert "which slot was deployed cannot be proven" in f["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_real_mode_gate_refuses_when_the_deployed_slot_file_cannot_be_read(
    tree: BotTree, real: Path, kind: str
) -> None:
    plant(tree.home / "DEPLOYED_SLOT", kind)
    gate = guardian(real, "gate")
    assert gate.code == 1, gate.err
    assert "REFUSED (real mode): slot not proven: SLOT_MISMATCH trading-bot-current" in gate.err
    assert f"DEPLOYED_SLOT cannot be read ({SAID[kind]}" in gate.err


def test_an_empty_deployed_slot_file_still_names_no_slot_and_the_gate_allows(tree: BotTree, real: Path) -> None:
    (tree.home / "DEPLOYED_SLOT").write_text("\n")
    assert guardian(real, "gate").code == 0


def test_a_deployed_slot_file_of_4_kib_is_read_and_one_byte_more_is_not(tree: BotTree, real: Path) -> None:
    name = tree.home / "DEPLOYED_SLOT"
    name.write_text("green" + " " * (4096 - len("green")))
    assert guardian(real, "check").code == 0
    name.write_text("green" + " " * (4097 - len("green")))
    checked = guardian(real, "check", "--json")
    assert checked.code == 2
    assert "DEPLOYED_SLOT cannot be read (is 4097 bytes, over the limit of 4096)" in findings(checked)[0]["message"]


@pytest.fixture
def bot_user() -> Iterator[BotUser]:
    with bot_user_or_skip() as user:
        yield user


def test_a_deployed_slot_file_the_guardian_user_may_not_read_refuses_the_start_saying_permission_denied(
    bot_user: BotUser,
) -> None:
    t = build_bot_tree(bot_user.home / "bot")
    config = write_config(
        t,
        bot_user.home / "guardian.yaml",
        mode="real",
        extra={
            "guardian": {"state_dir": str(bot_user.home / "guardian-state")},
            "alerts": {"journald_socket": str(bot_user.home / "no-journal.socket")},
        },
    )
    bot_user.hand_over(bot_user.home)
    deployed = t.home / "DEPLOYED_SLOT"
    os.chown(deployed, 0, 0)  # root's, mode 0600: guardian, running as the bot's user, cannot read it
    deployed.chmod(0o600)
    gate = bot_user.guardian(config, "gate")
    assert gate.returncode == 1, gate.stderr
    assert "DEPLOYED_SLOT cannot be read (permission denied)" in gate.stderr
    assert "REFUSED (real mode): slot not proven: SLOT_MISMATCH" in gate.stderr


# --- PREVIOUS_SLOT: a HIGH UNKNOWN, and the previous slot is still looked for --------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_previous_slot_file_that_cannot_be_read_is_a_high_unknown_and_the_gate_still_finishes(
    tree: BotTree, real: Path, kind: str
) -> None:
    plant(tree.home / "PREVIOUS_SLOT", kind)
    checked = guardian(real, "check", "--json")
    assert checked.code == 3, checked.out  # UNKNOWN
    (f,) = findings(checked)
    assert (f["code"], f["level"], f["subject"]) == ("UNKNOWN", "HIGH", "PREVIOUS_SLOT")
    assert f["message"].startswith(f"PREVIOUS_SLOT cannot be read ({SAID[kind]}")
    assert "the previous slot is guessed instead" in f["message"] and "'blue'" in f["message"]
    # Which slot came before steers only which one is compared; the guess is compared instead.
    gate = guardian(real, "gate")
    assert gate.code == 0, gate.err
    assert "ALLOWED (real mode): state proven sound" in gate.err


def test_with_previous_slot_unreadable_an_open_position_left_in_the_other_slot_still_refuses_the_start(
    tree: BotTree, real: Path
) -> None:
    plant(tree.home / "PREVIOUS_SLOT", "fifo")
    blue = tree.slots_dir / "blue" / "logs"
    blue.mkdir()
    left = default_open_position(datetime.now(UTC), id="pos-blue-1", symbol="ETHUSDT", entry_price=3000.0, size=0.1)
    write_json(blue / "positions_futures.json", {"open_positions": [left], "closed_positions": []})
    gate = guardian(real, "gate")
    assert gate.code == 1, gate.err
    assert "SLOT_STATE_DIVERGED position:pos-blue-1" in gate.err


def test_a_previous_slot_file_naming_a_path_out_of_the_slots_is_a_high_unknown(tree: BotTree, real: Path) -> None:
    (tree.home / "PREVIOUS_SLOT").write_text("../../etc\n")
    (f,) = findings(guardian(real, "check", "--json"))
    assert (f["code"], f["level"]) == ("UNKNOWN", "HIGH")
    assert f["message"].startswith("PREVIOUS_SLOT names '../../etc', which is not a slot in")


# --- requirements.lock: a HIGH UNKNOWN ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_requirements_lock_that_cannot_be_read_is_a_high_unknown_saying_why(
    tree: BotTree, real: Path, kind: str
) -> None:
    plant(tree.current_slot / "requirements.lock", kind)
    checked = guardian(real, "check", "--json")
    assert checked.code == 3, checked.out  # UNKNOWN
    (f,) = findings(checked)
    assert (f["code"], f["level"], f["subject"]) == ("UNKNOWN", "HIGH", "deps:requirements.lock")
    assert f["message"].startswith(f"green/requirements.lock cannot be read ({SAID[kind]}")
    gate = guardian(real, "gate")
    assert gate.code == 0, gate.err
    assert "ALLOWED (real mode): state proven sound" in gate.err


def test_a_requirements_lock_of_1_mib_is_parsed_and_one_byte_more_is_not(tree: BotTree, real: Path) -> None:
    lock = tree.current_slot / "requirements.lock"
    line = b"# padding\n"
    lock.write_bytes(b"foo==1.0\n" + line * ((1 << 20) // len(line) - 1) + b"\n" * ((1 << 20) % len(line) + 1))
    assert lock.stat().st_size == 1 << 20
    (f,) = findings(guardian(real, "check", "--json"))
    assert "pins 1 packages but no virtualenv was found" in f["message"]  # read and parsed
    with lock.open("ab") as out:
        out.write(b"\n")
    (f,) = findings(guardian(real, "check", "--json"))
    assert f"over the limit of {1 << 20}" in f["message"]


# --- a slot's configs -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_current_slot_config_that_cannot_be_read_is_config_drift_saying_why(
    tree: BotTree, real: Path, kind: str
) -> None:
    plant(tree.current_slot / "config" / "live_config.json", kind)
    checked = guardian(real, "check", "--json")
    assert checked.code == 1, checked.out
    (f,) = findings(checked)
    assert (f["code"], f["level"]) == ("CONFIG_DRIFT", "HIGH")
    assert f["message"].startswith(f"config/live_config.json in slot 'green' cannot be read ({SAID[kind]}")


@pytest.mark.parametrize("kind", KINDS)
def test_a_previous_slot_config_that_cannot_be_read_is_config_drift_that_says_so_not_a_difference(
    tree: BotTree, real: Path, kind: str
) -> None:
    plant(tree.slots_dir / "blue" / "config" / "asset_universe.json", kind)
    (f,) = findings(guardian(real, "check", "--json"))
    assert (f["code"], f["level"]) == ("CONFIG_DRIFT", "HIGH")
    assert f["message"] == (
        f"config/asset_universe.json in slot 'blue' cannot be read ({SAID[kind]}{_limit(kind, 16 << 20)}), "
        "so it cannot be compared"
    )


def _limit(kind: str, cap: int) -> str:
    return f" {cap}" if kind == "oversized" else ""


# --- lock markers ---------------------------------------------------------------------------------


def _old_soft_lock(tree: BotTree, size: int) -> Path:
    lock = tree.portfolio.with_name(tree.portfolio.name + ".lock")
    marker = f"{DEAD_PID}\n{socket.gethostname()}\n".encode()
    lock.write_bytes(marker + b"\0" * (size - len(marker)))
    os.utime(lock, (0, 0))
    return lock


def test_a_soft_lock_marker_of_4_kib_with_a_dead_owner_is_stale(tree: BotTree, real: Path) -> None:
    _old_soft_lock(tree, 4096)
    (f,) = findings(guardian(real, "check", "--json"))
    assert (f["code"], f["subject"]) == ("LOCK_STALE", "logs/portfolio_futures.json.lock")
    assert f"owner pid {DEAD_PID} is dead" in f["message"]


def test_a_lock_file_over_4_kib_is_not_read_judged_or_removed(tree: BotTree, real: Path) -> None:
    lock = _old_soft_lock(tree, 4097)
    checked = guardian(real, "check", "--json")
    assert (checked.code, findings(checked)) == (0, [])
    assert guardian(real, "heal").code == 0
    assert lock.stat().st_size == 4097  # not removed: what it holds, guardian did not read


# --- guardian's own alert state -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_alert_state_that_is_not_a_regular_file_is_set_aside_and_the_gate_still_answers(
    real: Path, tmp_path: Path, kind: str
) -> None:
    state = tmp_path / "guardian-state"  # where make_config puts guardian's state
    state.mkdir()
    plant(state / "alerts.json", kind)
    gate = guardian(real, "gate")
    assert gate.code == 0, gate.err
    assert "ALLOWED (real mode)" in gate.err
    assert json.loads((state / "alerts.json").read_text())["records"] is not None  # a fresh state, saved
    (aside,) = state.glob("alerts.json.corrupt-*")
    assert aside.is_symlink() if kind == "symlink-to-dev-zero" else aside.exists()


# --- a configured SQLite trade store ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dev-zero", "directory"])
def test_a_trade_store_that_is_not_a_regular_file_is_a_high_unknown_and_the_gate_still_answers(
    tree: BotTree, make_config: Callable[..., Path], kind: str
) -> None:
    config = make_config(tree, mode="real", extra={"trade_store": {"sqlite": "data/trades.db"}})
    db = tree.data / "data" / "trades.db"
    db.touch()
    plant(db, kind)
    checked = guardian(config, "check", "--json")
    assert checked.code == 3, checked.out
    (f,) = findings(checked)
    assert (f["code"], f["level"], f["subject"]) == ("UNKNOWN", "HIGH", "data/trades.db")
    assert f["message"] == f"cannot read the trade store ({SAID[kind]})"
    assert guardian(config, "gate").code == 0
