"""The ExecStartPre= gate: paper mode always starts; real mode starts only when it is safe."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from guardian.demo import DEAD_PID, BotTree, default_open_position, iso_z
from tests.conftest import Result, read_json, write_json

REPO = Path(__file__).resolve().parents[1]
ALERT_KEYS = {"ts", "level", "code", "subject", "message", "action_required", "event", "context"}

Builder = Callable[[BotTree, Callable[[Path], int]], None]


# --- helpers -------------------------------------------------------------------------------------


def last_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines, "nothing on stderr"
    return lines[-1]


def run_gate(config: Path) -> subprocess.CompletedProcess[str]:
    """The gate as systemd runs it: a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "guardian", "--config", str(config), "gate"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def set_positions(t: BotTree, opens: list[dict[str, Any]], closed: list[dict[str, Any]] | None = None) -> None:
    """Write the positions file and a portfolio that agrees with it."""
    write_json(t.positions, {"open_positions": opens, "closed_positions": closed or []})
    pf = read_json(t.portfolio)
    pf["open_positions_count"] = len(opens)
    write_json(t.portfolio, pf)


def now() -> datetime:
    return datetime.now(UTC)


def alert_lines(t: BotTree) -> list[dict[str, Any]]:
    return [json.loads(line) for line in t.alerts.read_text().splitlines()]


# --- the dangerous findings: each one built on a healthy tree ------------------------------------


def _state_mismatch(t: BotTree, _: Callable[[Path], int]) -> None:
    pf = read_json(t.portfolio)
    pf["open_positions_count"] = 2
    write_json(t.portfolio, pf)


def _partial_fill(t: BotTree, _: Callable[[Path], int]) -> None:
    set_positions(t, [default_open_position(now(), order={"status": "partially_filled", "qty": 0.004})])


def _position_conflict(t: BotTree, _: Callable[[Path], int]) -> None:
    a = default_open_position(now(), id="pos-a", size=0.004, order={"status": "filled", "qty": 0.004})
    b = default_open_position(now(), id="pos-b", size=0.004, order={"status": "filled", "qty": 0.004})
    set_positions(t, [a, b])


def _position_invalid(t: BotTree, _: Callable[[Path], int]) -> None:
    set_positions(t, [default_open_position(now(), entry_price=-5.0)])


def _wal_incomplete(t: BotTree, _: Callable[[Path], int]) -> None:
    entry = {"id": "wal-000002", "op": "TRADE_EXECUTE", "status": "in_progress", "ts": iso_z(now()), "data": {}}
    with t.wal.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _slot_invalid(t: BotTree, _: Callable[[Path], int]) -> None:
    t.current_link.unlink()
    t.current_link.symlink_to(Path("slots") / "purple")  # dangling


def _slot_mismatch(t: BotTree, _: Callable[[Path], int]) -> None:
    (t.home / "DEPLOYED_SLOT").write_text("blue\n")


def _stale_code(t: BotTree, run_bot: Callable[[Path], int]) -> None:
    run_bot(t.slots_dir / "blue")


def _slot_state_diverged(t: BotTree, _: Callable[[Path], int]) -> None:
    blue_logs = t.slots_dir / "blue" / "logs"
    blue_logs.mkdir()
    old = default_open_position(now(), id="pos-blue-1", symbol="ETHUSDT", entry_price=3000.0, size=0.1)
    write_json(blue_logs / "positions_futures.json", {"open_positions": [old], "closed_positions": []})


def _limit_position_size(t: BotTree, _: Callable[[Path], int]) -> None:
    set_positions(t, [default_open_position(now(), size=0.02, order={"status": "filled", "qty": 0.02})])


def _limit_open_positions(t: BotTree, _: Callable[[Path], int]) -> None:
    small = {"size": 0.001, "order": {"status": "filled", "qty": 0.001}}
    opens = [
        default_open_position(now(), id=f"pos-{i}", symbol=sym, direction=d, **small)
        for i, (sym, d) in enumerate(
            [("BTCUSDT", "LONG"), ("BTCUSDT", "SHORT"), ("ETHUSDT", "LONG"), ("ETHUSDT", "SHORT")]
        )
    ]
    set_positions(t, opens)


def _limit_daily_loss(t: BotTree, _: Callable[[Path], int]) -> None:
    lost = default_open_position(
        now() - timedelta(minutes=5), id="pos-lost", exit_price=45000.0, closed_at=iso_z(now()), pnl=-500.0
    )
    set_positions(t, [default_open_position(now())], closed=[lost])


def _stop_loss_missing(t: BotTree, _: Callable[[Path], int]) -> None:
    set_positions(t, [default_open_position(now(), stop_loss=None)])


def _emergency_stop(t: BotTree, _: Callable[[Path], int]) -> None:
    write_json(t.emergency_stop, {"active": True, "reason": "Position size violation", "since": iso_z(now())})


def _state_unrecoverable(t: BotTree, _: Callable[[Path], int]) -> None:
    raw = t.positions.read_bytes()
    t.positions.write_bytes(raw[: raw.index(b'"open_positions"') + 60])  # open positions cut: unknown


DANGEROUS: dict[str, Builder] = {
    "STATE_MISMATCH": _state_mismatch,
    "PARTIAL_FILL": _partial_fill,
    "POSITION_CONFLICT": _position_conflict,
    "POSITION_INVALID": _position_invalid,
    "WAL_INCOMPLETE": _wal_incomplete,
    "SLOT_INVALID": _slot_invalid,
    "SLOT_MISMATCH": _slot_mismatch,
    "STALE_CODE": _stale_code,
    "SLOT_STATE_DIVERGED": _slot_state_diverged,
    "LIMIT_POSITION_SIZE": _limit_position_size,
    "LIMIT_OPEN_POSITIONS": _limit_open_positions,
    "LIMIT_DAILY_LOSS": _limit_daily_loss,
    "STOP_LOSS_MISSING": _stop_loss_missing,
    "EMERGENCY_STOP_ACTIVE": _emergency_stop,
    "STATE_UNRECOVERABLE": _state_unrecoverable,
}


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["paper", "real"])
def test_a_healthy_tree_is_allowed(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result], mode: str
) -> None:
    r = cli(make_config(tree, mode=mode), "gate")
    assert r.code == 0
    assert f"ALLOWED ({mode} mode" in last_line(r.err)


@pytest.mark.parametrize("mode", ["paper", "real"])
@pytest.mark.parametrize("stale_heartbeat", [False, True], ids=["no-heartbeat", "stale-heartbeat"])
def test_a_cold_start_is_healed_and_allowed(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result], mode: str, stale_heartbeat: bool
) -> None:
    for d in ("logs", "state", "configs", "data", "feature_store"):
        shutil.rmtree(tree.data / d)
    if stale_heartbeat:
        tree.heartbeats.mkdir(parents=True)
        old = iso_z(now() - timedelta(hours=2))
        write_json(tree.heartbeats / "bot_cycle.json", {"component": "bot_cycle", "pid": DEAD_PID, "ts": old})
    r = cli(make_config(tree, mode=mode), "gate", "--json")
    assert r.code == 0, r.err
    assert f"ALLOWED ({mode} mode" in last_line(r.err)
    heal = r.json()["heal"]
    assert heal["success"] is True
    assert heal["stats"]["files_created"] == 2
    assert heal["stats"]["directories_created"] >= 5
    assert heal["stats"]["heartbeats_reset"] == (1 if stale_heartbeat else 0)
    assert read_json(tree.positions) == {"open_positions": [], "closed_positions": []}
    assert read_json(tree.portfolio)["open_positions_count"] == 0
    assert all((tree.data / d).is_dir() for d in ("logs/backups", "state/heartbeats", "configs", "feature_store"))


@pytest.mark.parametrize("code", list(DANGEROUS))
def test_a_dangerous_finding_refuses_real_mode_and_names_the_code(
    tree: BotTree,
    make_config: Callable[..., Path],
    cli: Callable[..., Result],
    run_bot: Callable[[Path], int],
    code: str,
) -> None:
    DANGEROUS[code](tree, run_bot)
    r = cli(make_config(tree, mode="real"), "gate")
    assert r.code == 1, r.err
    reason = last_line(r.err)
    assert reason.startswith("guardian gate: REFUSED (real mode)")
    assert code in reason


@pytest.mark.parametrize("code", list(DANGEROUS))
def test_a_dangerous_finding_still_allows_paper_mode(
    tree: BotTree,
    make_config: Callable[..., Path],
    cli: Callable[..., Result],
    run_bot: Callable[[Path], int],
    code: str,
) -> None:
    DANGEROUS[code](tree, run_bot)
    r = cli(make_config(tree, mode="paper"), "gate")
    assert r.code == 0, r.err
    assert last_line(r.err).startswith("guardian gate: ALLOWED (paper mode always starts)")


def test_the_gate_as_a_separate_process_allows_a_healthy_tree_and_says_so_last(
    tree: BotTree, make_config: Callable[..., Path]
) -> None:
    p = run_gate(make_config(tree, mode="real"))
    assert p.returncode == 0, p.stderr
    assert last_line(p.stderr).startswith("guardian gate: ALLOWED (real mode)")
    assert "Traceback" not in p.stderr


def test_the_gate_as_a_separate_process_refuses_a_state_mismatch_and_says_why_last(
    tree: BotTree, make_config: Callable[..., Path]
) -> None:
    _state_mismatch(tree, lambda _: 0)
    p = run_gate(make_config(tree, mode="real"))
    assert p.returncode == 1, p.stderr
    reason = last_line(p.stderr)
    assert reason.startswith("guardian gate: REFUSED (real mode)")
    assert "STATE_MISMATCH" in reason


def test_one_high_finding_under_a_strict_score_threshold_refuses_real_mode(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    # The slots' asset universes differ: CONFIG_DRIFT (HIGH), which heal cannot fix. Score 85.
    write_json(tree.current_slot / "config" / "asset_universe.json", ["BTCUSDT"])
    strict = {"thresholds": {"min_health_score": 90}}
    r = cli(make_config(tree, mode="real", extra=strict), "gate", "--json")
    assert r.code == 1
    out = r.json()
    assert out["score"] == 85
    assert out["heal"]["critical"] == []
    assert "health score 85 below 90: HIGH CONFIG_DRIFT config:config/asset_universe.json" in last_line(r.err)
    assert out["reasons"] == ["health score 85 below 90: HIGH CONFIG_DRIFT config:config/asset_universe.json"]
    paper = cli(make_config(tree, mode="paper", extra=strict), "gate")
    assert paper.code == 0
    relaxed = cli(make_config(tree, mode="real"), "gate")
    assert relaxed.code == 0, relaxed.err


def test_enough_high_findings_refuse_real_mode_without_any_critical(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    slot = tree.current_slot
    write_json(slot / "config" / "asset_universe.json", ["BTCUSDT"])  # CONFIG_DRIFT (must_match)
    (slot / "config" / "live_config.json").write_text('{"mode": "paper",')  # CONFIG_DRIFT (must_parse)
    (slot / "requirements.lock").write_text("msgspec==0.18.6\n")  # no virtualenv to check: UNKNOWN (HIGH)
    huge = {"thresholds": {"disk_min_free_mb": 10**12}}  # DISK_LOW (HIGH)
    r = cli(make_config(tree, mode="real", extra=huge), "gate", "--json")
    out = r.json()
    levels = {f["level"] for f in out["heal"]["findings"]}
    assert levels == {"HIGH"}, out["heal"]["findings"]
    assert out["score"] == 40
    assert r.code == 1
    assert out["allowed"] is False
    # A bot that cannot save its positions must not trade: DISK_LOW blocks on its own, whatever the score.
    assert "disk space not proven: DISK_LOW data root" in last_line(r.err)
    assert cli(make_config(tree, mode="paper", extra=huge), "gate").code == 0


@pytest.mark.parametrize("mode", ["paper", "real"])
def test_an_invalid_config_exits_78_without_a_traceback(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result], mode: str
) -> None:
    bad = make_config(tree, mode=mode, extra={"thresholds": {"min_health_score": "lots"}, "bot": {"colour": "x"}})
    r = cli(bad, "gate")
    assert r.code == 78
    assert "invalid config" in r.err
    assert "thresholds.min_health_score" in r.err
    assert "bot.colour" in r.err
    assert "Traceback" not in r.err
    assert "invalid config" in last_line(r.err)


def test_an_invalid_config_exits_78_from_a_separate_process(tree: BotTree, make_config: Callable[..., Path]) -> None:
    bad = make_config(tree, mode="real", extra={"bot": {"mode": "live"}})
    p = run_gate(bad)
    assert p.returncode == 78
    assert "invalid config" in p.stderr
    assert "Traceback" not in p.stderr
    assert "invalid config" in last_line(p.stderr)


def test_a_missing_config_file_exits_78(tmp_path: Path, cli: Callable[..., Result]) -> None:
    r = cli(tmp_path / "nope.yaml", "gate")
    assert r.code == 78
    assert "invalid config" in r.err
    assert "Traceback" not in r.err


def test_each_decision_is_recorded_in_the_alert_log(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    cfg = make_config(tree, mode="real")
    assert cli(cfg, "gate").code == 0
    _state_mismatch(tree, lambda _: 0)
    assert cli(cfg, "gate").code == 1
    lines = alert_lines(tree)
    for line in lines:
        assert isinstance(line, dict)
        assert set(line) == ALERT_KEYS, line
        assert isinstance(line["context"], dict)
        assert isinstance(line["action_required"], bool)
    gates = [line for line in lines if line["event"] == "gate"]
    assert [g["code"] for g in gates] == ["GATE_ALLOWED", "GATE_REFUSED"]
    allowed, refused = gates
    assert allowed["context"]["reasons"] == []
    assert allowed["action_required"] is False
    assert refused["level"] == "CRITICAL"
    assert refused["action_required"] is True
    assert any(r.startswith("portfolio not proven: STATE_MISMATCH") for r in refused["context"]["reasons"])
    assert "STATE_MISMATCH" in refused["message"]
    assert [line["code"] for line in lines if line["event"] == "firing"] == ["STATE_MISMATCH"]


def test_gate_json_prints_the_decision(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    _stop_loss_missing(tree, lambda _: 0)
    r = cli(make_config(tree, mode="real"), "gate", "--json")
    out = r.json()
    assert {"allowed", "exit_code", "reason", "score", "heal"} <= out.keys()
    assert out["allowed"] is False
    assert out["exit_code"] == r.code == 1
    assert out["reason"] == last_line(r.err)
    assert out["score"] == 50
    assert {"success", "healed", "failed", "critical", "stats"} <= out["heal"].keys()
    assert any(c.startswith("STOP_LOSS_MISSING") for c in out["heal"]["critical"])


def test_an_emergency_stop_refuses_real_mode_until_it_is_cleared(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    real = make_config(tree, mode="real")
    stop = cli(real, "emergency-stop", "--reason", "exchange outage")
    assert stop.code == 0, stop.err
    doc = read_json(tree.emergency_stop)
    assert doc["active"] is True
    assert doc["reason"] == "exchange outage"
    assert "since" in doc
    refused = cli(real, "gate")
    assert refused.code == 1
    assert "EMERGENCY_STOP_ACTIVE" in last_line(refused.err)
    assert cli(make_config(tree, mode="paper"), "gate").code == 0
    cleared = cli(real, "clear-stop", "--approver", "alice")
    assert cleared.code == 0, cleared.err
    doc = read_json(tree.emergency_stop)
    assert doc["active"] is False
    assert doc["cleared_by"] == "alice"
    assert "cleared_at" in doc
    allowed = cli(real, "gate")
    assert allowed.code == 0, allowed.err
    assert last_line(allowed.err).startswith("guardian gate: ALLOWED (real mode)")
    codes = [line["code"] for line in alert_lines(tree)]
    assert "EMERGENCY_STOP_SET" in codes
    assert "EMERGENCY_STOP_CLEARED" in codes


def test_an_orphan_started_from_the_current_slot_refuses_real_mode_and_is_left_running(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result], run_bot: Callable[[Path], int]
) -> None:
    import psutil

    pid = run_bot(tree.current_slot)
    started = time.monotonic()
    r = cli(make_config(tree, mode="real"), "gate")
    assert time.monotonic() - started < 15
    assert r.code == 1
    assert f"ORPHAN_PROCESS pid:{pid}" in last_line(r.err)
    assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
