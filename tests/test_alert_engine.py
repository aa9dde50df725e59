"""Alert semantics: fire once, remind per level, resolve once, flapping, silences, inhibition, the
heal budget, and state shared across runs through the state directory."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from guardian.alerts import Alert
from guardian.alerts.engine import AlertState, Engine, locked_state, new_silence
from guardian.config import AlertsConfig, load
from guardian.demo import BotTree
from guardian.history import state_dir
from guardian.model import Finding, Level
from tests.conftest import NOW, Result, read_json, write_json

CFG = AlertsConfig()
CONFLICT = Finding("POSITION_CONFLICT", Level.CRITICAL, "BTCUSDT/LONG", "2 open LONG positions on BTCUSDT")
HEARTBEAT = Finding("HEARTBEAT_STALE", Level.HIGH, "heartbeat:bot_cycle", "bot_cycle last beat 20 min ago", True)


def look(state: AlertState, findings: list[Finding], minutes: float = 0, cfg: AlertsConfig = CFG) -> list[Alert]:
    return Engine(cfg, state, NOW + timedelta(minutes=minutes)).evaluate(findings)


def events(alerts: list[Alert]) -> list[tuple[str, str]]:
    return [(a.code, a.event) for a in alerts]


def test_a_new_finding_fires_once_and_is_not_repeated_on_the_next_look() -> None:
    state = AlertState()
    assert events(look(state, [CONFLICT])) == [("POSITION_CONFLICT", "firing")]
    assert look(state, [CONFLICT], minutes=1) == []
    assert look(state, [CONFLICT], minutes=14) == []


@pytest.mark.parametrize(("finding", "remind_min"), [(CONFLICT, 15), (HEARTBEAT, 60)])
def test_a_finding_still_firing_is_reminded_after_its_levels_interval(finding: Finding, remind_min: int) -> None:
    state = AlertState()
    look(state, [finding])
    assert look(state, [finding], minutes=remind_min - 1) == []
    reminder = look(state, [finding], minutes=remind_min)
    assert events(reminder) == [(finding.code, "firing")]
    assert reminder[0].context["reminder"] is True


def test_a_finding_that_goes_away_is_closed_by_one_resolved_event() -> None:
    state = AlertState()
    look(state, [CONFLICT])
    assert events(look(state, [], minutes=1)) == [("POSITION_CONFLICT", "resolved")]
    assert look(state, [], minutes=2) == []
    assert not state.records["POSITION_CONFLICT:BTCUSDT/LONG"].firing  # kept a while, to count flapping
    assert look(state, [], minutes=70) == []
    assert state.records == {}


def test_an_incomplete_look_does_not_resolve_what_it_did_not_check() -> None:
    state = AlertState()
    look(state, [CONFLICT])
    assert Engine(CFG, state, NOW).evaluate([], complete=False) == []
    assert state.records["POSITION_CONFLICT:BTCUSDT/LONG"].firing


def test_a_finding_that_escalates_is_sent_at_once() -> None:
    state = AlertState()
    look(state, [HEARTBEAT])
    worse = Finding(HEARTBEAT.code, Level.CRITICAL, HEARTBEAT.subject, "now critical", True)
    assert events(look(state, [worse], minutes=1)) == [("HEARTBEAT_STALE", "firing")]


def test_a_flapping_finding_is_reported_once_as_flapping_then_held_until_stable() -> None:
    cfg = AlertsConfig(flap_changes=4, flap_window=3600.0)
    state = AlertState()
    sent: list[tuple[str, str]] = []
    for i in range(10):  # on, off, on, off ... once a minute
        sent += events(look(state, [CONFLICT] if i % 2 == 0 else [], minutes=i, cfg=cfg))
    assert sent.count(("FLAPPING", "firing")) == 1
    assert sent[:4] == [("POSITION_CONFLICT", "firing"), ("POSITION_CONFLICT", "resolved")] * 2
    assert sent[-1] == ("FLAPPING", "firing")  # nothing about the fingerprint itself after that
    # Stable for a whole window: it is sent again, normally.
    assert events(look(state, [CONFLICT], minutes=10 + 61, cfg=cfg)) == [("POSITION_CONFLICT", "firing")]


def test_a_silenced_finding_is_not_sent_until_the_silence_ends() -> None:
    state = AlertState()
    state.silences.append(new_silence("POSITION_CONFLICT", None, seconds=7200, reason="reconciling", now=NOW))
    assert look(state, [CONFLICT]) == []
    assert look(state, [CONFLICT], minutes=119) == []
    assert events(look(state, [CONFLICT], minutes=121)) == [("POSITION_CONFLICT", "firing")]
    assert state.silences == []  # expired, so dropped


def test_a_silence_on_one_subject_leaves_the_others_loud() -> None:
    state = AlertState()
    state.silences.append(new_silence("POSITION_CONFLICT", "ETHUSDT/SHORT", seconds=3600, reason="x", now=NOW))
    other = Finding("POSITION_CONFLICT", Level.CRITICAL, "ETHUSDT/SHORT", "dup")
    assert events(look(state, [CONFLICT, other])) == [("POSITION_CONFLICT", "firing")]


def test_a_resolved_finding_that_was_muted_sends_no_resolved_event() -> None:
    state = AlertState()
    state.silences.append(new_silence("POSITION_CONFLICT", None, seconds=3600, reason="x", now=NOW))
    look(state, [CONFLICT])
    assert look(state, [], minutes=1) == []


def test_stale_heartbeats_are_held_back_while_the_bot_is_down() -> None:
    state = AlertState()
    down = Finding("BOT_DOWN", Level.CRITICAL, "tradingbot.service", "no bot process")
    assert events(look(state, [down, HEARTBEAT])) == [("BOT_DOWN", "firing")]
    assert sorted(events(look(state, [HEARTBEAT], minutes=1))) == [
        ("BOT_DOWN", "resolved"),
        ("HEARTBEAT_STALE", "firing"),
    ]


def test_the_heal_budget_allows_the_budget_then_stops_within_the_window() -> None:
    state = AlertState()
    for i in range(3):
        e = Engine(CFG, state, NOW + timedelta(minutes=i))
        assert e.heal_allowed("LOCK_STALE", "x.lock")
        e.note_heal("LOCK_STALE", "x.lock")
    assert not Engine(CFG, state, NOW + timedelta(minutes=4)).heal_allowed("LOCK_STALE", "x.lock")
    assert Engine(CFG, state, NOW + timedelta(minutes=4)).heal_allowed("LOCK_STALE", "other.lock")
    assert Engine(CFG, state, NOW + timedelta(minutes=63)).heal_allowed("LOCK_STALE", "x.lock")


def test_the_state_survives_between_runs_and_a_corrupt_state_file_is_kept_aside(tmp_path: Path) -> None:
    with locked_state(tmp_path) as state:
        look(state, [CONFLICT])
    with locked_state(tmp_path) as state:
        assert look(state, [CONFLICT], minutes=1) == []
    (tmp_path / "alerts.json").write_text("{not json")
    with locked_state(tmp_path) as state:
        assert state.records == {}
    assert [p.name for p in tmp_path.glob("alerts.json.corrupt-*")]


def test_systemd_state_directory_wins_over_the_config(
    tree: BotTree, make_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = load(make_config(tree))
    assert state_dir(cfg) == tmp_path / "guardian-state"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/sd:{tmp_path}/other")
    assert state_dir(cfg) == tmp_path / "sd"


def _log(tree: BotTree) -> list[dict[str, object]]:
    return [json.loads(line) for line in tree.alerts.read_text().splitlines()]


def _plant_conflict(tree: BotTree) -> None:
    doc = read_json(tree.positions)
    doc["open_positions"].append(dict(doc["open_positions"][0], id="dup-1"))
    write_json(tree.positions, doc)
    pf = read_json(tree.portfolio)
    pf["open_positions_count"] = 2
    write_json(tree.portfolio, pf)


def test_repeated_gates_alert_a_finding_once_and_record_every_decision(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    cfg = make_config(tree, mode="real")
    _plant_conflict(tree)
    for _ in range(3):
        assert cli(cfg, "gate").code == 1
    codes = [(a["code"], a["event"]) for a in _log(tree)]
    assert codes.count(("POSITION_CONFLICT", "firing")) == 1
    assert codes.count(("GATE_REFUSED", "gate")) == 3


def test_fixing_a_finding_writes_one_resolved_event(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    cfg = make_config(tree, mode="real")
    before = read_json(tree.positions), read_json(tree.portfolio)
    _plant_conflict(tree)
    assert cli(cfg, "gate").code == 1
    write_json(tree.positions, before[0])
    write_json(tree.portfolio, before[1])
    assert cli(cfg, "gate").code == 0
    assert cli(cfg, "gate").code == 0
    codes = [(a["code"], a["event"]) for a in _log(tree)]
    assert codes.count(("POSITION_CONFLICT", "resolved")) == 1


def test_a_silenced_critical_still_blocks_the_gate_in_real_mode(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    cfg = make_config(tree, mode="real")
    added = cli(cfg, "silence", "add", "POSITION_CONFLICT", "--for", "2h", "--reason", "reconciling", "--json")
    assert added.code == 0
    sid = added.json()["id"]
    _plant_conflict(tree)
    gate = cli(cfg, "gate")
    assert gate.code == 1
    assert "POSITION_CONFLICT" in gate.err.strip().splitlines()[-1]
    assert ("POSITION_CONFLICT", "firing") not in [(a["code"], a["event"]) for a in _log(tree)]
    listed = cli(cfg, "silence", "list", "--json").json()
    assert [s["id"] for s in listed] == [sid]
    assert cli(cfg, "silence", "remove", sid).code == 0
    assert cli(cfg, "silence", "list", "--json").json() == []
    assert cli(cfg, "silence", "remove", sid).code == 1
    cli(cfg, "gate")
    assert ("POSITION_CONFLICT", "firing") in [(a["code"], a["event"]) for a in _log(tree)]


def test_a_remedy_that_keeps_being_needed_stops_with_a_heal_loop(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    cfg = make_config(tree)
    leftover = tree.data / "logs" / ".positions_futures.json.tmp"
    results = []
    for _ in range(4):  # something keeps leaving a temp file behind
        leftover.write_text("{}")
        old = leftover.stat().st_mtime - 3600
        os.utime(leftover, (old, old))
        results.append(cli(cfg, "heal", "--json").json())
    assert [r["stats"]["files_repaired"] for r in results] == [1, 1, 1, 0]
    assert any(
        c.startswith("HEAL_LOOP TEMP_FILE_LEFTOVER:logs/.positions_futures.json.tmp") for c in results[3]["critical"]
    )
    assert leftover.exists()  # left alone once the budget is spent


@pytest.mark.parametrize(
    "content",
    [
        {
            "records": {
                "X:y": {"code": "X", "subject": "y", "level": "HIGH", "firing": True, "since": 1, "changes": "abc"}
            }
        },
        {"records": [], "heals": {}, "silences": []},
        {"silences": [{"id": "s"}]},
    ],
    ids=["changes-a-string", "records-a-list", "silence-missing-fields"],
)
def test_an_alert_state_of_the_wrong_shape_is_set_aside_and_the_real_gate_still_decides(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result], content: object
) -> None:
    config = make_config(tree, mode="real")
    directory = state_dir(load(config))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "alerts.json").write_text(json.dumps(content))
    r = cli(config, "gate")
    assert r.code == 0, r.err  # a healthy tree: the broken state is guardian's own, not the bot's
    assert "guardian failed" not in r.err and "TypeError" not in r.err
    (aside,) = directory.glob("alerts.json.corrupt-*")
    assert json.loads(aside.read_text()) == content
    assert isinstance(read_json(directory / "alerts.json")["records"], dict)


def test_a_stopped_process_holding_the_alert_state_lock_does_not_hang_the_gate(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result], hold_lock: Callable[[Path], int]
) -> None:
    config = make_config(tree, mode="real")
    directory = state_dir(load(config))
    directory.mkdir(parents=True, exist_ok=True)
    holder = hold_lock(directory / "alerts.json.lock")  # an flock, as guardian takes it
    os.kill(holder, signal.SIGSTOP)  # alive, holding the lock, never letting go
    try:
        r = cli(config, "gate")
    finally:
        os.kill(holder, signal.SIGCONT)  # so that the fixture's kill is reaped
    assert r.code == 0, r.err
    assert "alerts are not deduplicated" in r.err
    assert "held by another process for over 5s" in r.err
