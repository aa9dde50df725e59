"""Prometheus metrics: the textfile node_exporter reads, the HTTP endpoint, the gate's decision counts
and the example alerting rules."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from guardian.daemon.metrics import FLUSH_INTERVAL, Metrics
from guardian.history import GateHistory, LastDecision, read_decisions, read_history, record_decision
from guardian.model import Finding, HealAction, Level, Outcome

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "contrib" / "prometheus" / "guardian.rules.yml"
BOT = "tradingbot@alpha.service"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- helpers -------------------------------------------------------------------------------------


def parse(text: str) -> Samples:
    """Every sample of an exposition text, keyed by name and labels. Raises if the text is malformed."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset({"bot": BOT, **labels}.items())))


def finding(code: str, level: Level, subject: str = "logs/positions_futures.json") -> Finding:
    return Finding(code, level, subject, f"{code} on {subject}", recoverable=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body: bytes = r.read()
        return body.decode()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "guardian-state"


@pytest.fixture
def textfile(tmp_path: Path) -> Path:
    d = tmp_path / "node-exporter"
    d.mkdir()
    return d / "guardian.prom"


@pytest.fixture
def metrics(textfile: Path, state_dir: Path) -> Iterator[Metrics]:
    m = Metrics(bot=BOT, mode="real", textfile=textfile, listen=None, state_dir=state_dir)
    yield m
    m.close()


def flushed(m: Metrics, textfile: Path) -> Samples:
    m.flush(time.monotonic(), force=True)
    return parse(textfile.read_text())


def exercise(m: Metrics) -> None:
    """Call every method once, so that every series the module exports exists."""
    m.set_ready(True)
    m.set_findings([finding("STATE_FILE_CORRUPT", Level.CRITICAL)], score=50)
    m.heal([HealAction(finding("LOCK_STALE", Level.HIGH), Outcome.HEALED, "removed")])
    m.alert_sent("CRITICAL", "firing")
    m.check_ran("state_files", 0.002, ok=False)
    m.event_lag(0.01)
    m.sweep_done(time.time())


# --- the textfile --------------------------------------------------------------------------------


def test_the_textfile_holds_findings_by_code_and_level_and_the_score(metrics: Metrics, textfile: Path) -> None:
    metrics.set_findings(
        [
            finding("STATE_FILE_CORRUPT", Level.CRITICAL, "logs/positions_futures.json"),
            finding("STATE_FILE_CORRUPT", Level.CRITICAL, "logs/portfolio_futures.json"),
            finding("LOCK_STALE", Level.HIGH, "logs/positions_futures.json.lock"),
        ],
        score=0,  # 100 - 50 - 50 - 15, floored
    )
    s = flushed(metrics, textfile)
    assert value(s, "guardian_findings", code="STATE_FILE_CORRUPT", level="CRITICAL") == 2
    assert value(s, "guardian_findings", code="LOCK_STALE", level="HIGH") == 1
    assert value(s, "guardian_health_score") == 0
    assert value(s, "guardian_up", mode="real") == 1
    assert value(s, "guardian_ready") == 0
    assert 0 < (value(s, "guardian_daemon_start_time_seconds") or 0) <= time.time()
    # Every series names the bot: a fleet's textfiles stay apart.
    assert all(dict(labels).get("bot") == BOT for _name, labels in s)


def test_a_finding_that_went_away_reads_zero_so_alerts_resolve(metrics: Metrics, textfile: Path) -> None:
    metrics.set_findings([finding("HEARTBEAT_STALE", Level.HIGH)], score=85)
    assert value(flushed(metrics, textfile), "guardian_findings", code="HEARTBEAT_STALE", level="HIGH") == 1
    # Escalated: the HIGH series drops to 0 while the CRITICAL one appears.
    metrics.set_findings([finding("HEARTBEAT_STALE", Level.CRITICAL)], score=50)
    s = flushed(metrics, textfile)
    assert value(s, "guardian_findings", code="HEARTBEAT_STALE", level="HIGH") == 0
    assert value(s, "guardian_findings", code="HEARTBEAT_STALE", level="CRITICAL") == 1
    metrics.set_findings([], score=100)
    s = flushed(metrics, textfile)
    assert value(s, "guardian_findings", code="HEARTBEAT_STALE", level="CRITICAL") == 0
    assert value(s, "guardian_health_score") == 100


def test_heals_are_counted_by_code_and_outcome_from_zero(metrics: Metrics, textfile: Path) -> None:
    before = flushed(metrics, textfile)
    # Present at 0 before any heal, so the first failure is an increase() a rule sees.
    assert value(before, "guardian_heals_total", code="LOCK_STALE", outcome="failed") == 0
    lock, temp = finding("LOCK_STALE", Level.HIGH), finding("TEMP_FILE_LEFTOVER", Level.LOW, "logs/x.tmp")
    metrics.heal([HealAction(lock, Outcome.HEALED, "removed"), HealAction(temp, Outcome.FAILED, "EACCES")])
    metrics.heal([HealAction(lock, Outcome.HEALED, "removed"), HealAction(temp, Outcome.REFUSED, "budget")])
    s = flushed(metrics, textfile)
    assert value(s, "guardian_heals_total", code="LOCK_STALE", outcome="healed") == 2
    assert value(s, "guardian_heals_total", code="LOCK_STALE", outcome="failed") == 0
    assert value(s, "guardian_heals_total", code="TEMP_FILE_LEFTOVER", outcome="failed") == 1
    assert value(s, "guardian_heals_total", code="TEMP_FILE_LEFTOVER", outcome="refused") == 1


def test_check_durations_errors_alerts_and_event_lag_are_exported(metrics: Metrics, textfile: Path) -> None:
    metrics.check_ran("heartbeats", 0.003, ok=True)
    s = flushed(metrics, textfile)
    assert value(s, "guardian_check_errors_total", check="heartbeats") == 0
    metrics.check_ran("heartbeats", 0.3, ok=False)
    metrics.event_lag(0.0007)
    metrics.event_lag(3.0)
    metrics.alert_sent("CRITICAL", "firing")
    metrics.alert_sent("CRITICAL", "firing")
    metrics.alert_sent("CRITICAL", "resolved")
    metrics.sweep_done(1_790_000_000.5)
    s = flushed(metrics, textfile)
    assert value(s, "guardian_check_errors_total", check="heartbeats") == 1
    assert value(s, "guardian_check_duration_seconds_count", check="heartbeats") == 2
    assert value(s, "guardian_check_duration_seconds_bucket", check="heartbeats", le="0.005") == 1
    assert value(s, "guardian_check_duration_seconds_bucket", check="heartbeats", le="5.0") == 2
    assert value(s, "guardian_event_lag_seconds_bucket", le="0.001") == 1
    assert value(s, "guardian_event_lag_seconds_bucket", le="2.0") == 1
    assert value(s, "guardian_event_lag_seconds_count") == 2
    assert value(s, "guardian_alerts_total", level="CRITICAL", event="firing") == 2
    assert value(s, "guardian_alerts_total", level="CRITICAL", event="resolved") == 1
    assert value(s, "guardian_last_sweep_timestamp_seconds") == 1_790_000_000.5
    assert not [name for name, _ in s if name.endswith("_created")]


def test_the_last_sweep_is_absent_until_the_first_sweep(metrics: Metrics, textfile: Path) -> None:
    # A 0 would make "time() - last sweep > 180" fire while the daemon starts.
    assert not [name for name, _ in flushed(metrics, textfile) if name == "guardian_last_sweep_timestamp_seconds"]


def test_the_textfile_is_replaced_whole_readable_by_node_exporter_and_no_temp_file_is_left(
    metrics: Metrics, textfile: Path
) -> None:
    metrics.set_findings([], score=100)
    old_umask = os.umask(0o077)  # the daemon's umask must not hide the file from node_exporter
    try:
        flushed(metrics, textfile)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    stop = threading.Event()
    seen: set[str] = set()  # distinct texts: a torn read is one of them
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add(textfile.read_text())
            except BaseException as e:  # a missing file between writes is a failure too
                errors.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            # Findings of every size, so a torn read would show as a truncated or mixed file.
            metrics.set_findings([finding(f"CODE_{j}", Level.LOW, str(j)) for j in range(i % 40)], score=100 - i % 40)
            metrics.flush(float(i), force=True)
    finally:
        stop.set()
        reader.join()
    assert not errors
    assert len(seen) > 10
    for text in seen:
        s = parse(text)  # a partial file fails to parse or lacks the last families
        assert value(s, "guardian_up", mode="real") == 1
        assert value(s, "guardian_gate_decisions_total", decision="refused") == 0
        nonzero = sum(v for (name, _), v in s.items() if name == "guardian_findings")
        assert 100 - (value(s, "guardian_health_score") or 0) == nonzero  # findings and score from one update
    assert sorted(p.name for p in textfile.parent.iterdir()) == ["guardian.prom"]


def test_flush_writes_at_most_every_five_seconds_unless_forced(metrics: Metrics, textfile: Path) -> None:
    metrics.flush(1000.0)
    first = textfile.stat().st_ino
    metrics.set_findings([finding("LOCK_STALE", Level.HIGH)], score=85)
    metrics.flush(1000.0 + FLUSH_INTERVAL - 0.1)
    assert textfile.stat().st_ino == first  # not rewritten
    assert value(parse(textfile.read_text()), "guardian_findings", code="LOCK_STALE", level="HIGH") is None
    metrics.flush(1000.0 + FLUSH_INTERVAL)
    assert value(parse(textfile.read_text()), "guardian_findings", code="LOCK_STALE", level="HIGH") == 1
    metrics.set_findings([], score=100)
    metrics.flush(1000.0 + FLUSH_INTERVAL + 1, force=True)
    assert value(parse(textfile.read_text()), "guardian_findings", code="LOCK_STALE", level="HIGH") == 0
    metrics.set_findings([finding("LOCK_STALE", Level.HIGH)], score=85)
    metrics.flush(10.0)  # the clock went back: written, not held until it catches up
    assert value(parse(textfile.read_text()), "guardian_findings", code="LOCK_STALE", level="HIGH") == 1


def test_a_textfile_in_a_missing_directory_warns_once_and_does_not_raise(
    tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "absent" / "guardian.prom"
    m = Metrics(bot=BOT, mode="paper", textfile=target, listen=None, state_dir=state_dir)
    for i in range(5):
        m.flush(float(i * 10))
    m.flush(100.0, force=True)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith(f"guardian: warning: metrics textfile {target}: FileNotFoundError")
    target.parent.mkdir()
    m.flush(200.0)
    assert value(parse(target.read_text()), "guardian_up", mode="paper") == 1
    shutil.rmtree(target.parent)
    m.close()  # the final flush fails again: warned again (it recovered in between), still no exception
    assert capsys.readouterr().err.count("guardian: warning: metrics textfile") == 1


def test_close_writes_a_last_textfile_saying_guardian_stopped(textfile: Path, state_dir: Path) -> None:
    m = Metrics(bot=BOT, mode="real", textfile=textfile, listen=None, state_dir=state_dir)
    m.set_ready(True)
    m.flush(0.0)
    m.close()
    s = parse(textfile.read_text())
    assert value(s, "guardian_up", mode="real") == 0
    assert value(s, "guardian_ready") == 0


# --- HTTP ----------------------------------------------------------------------------------------


def test_the_http_endpoint_serves_the_textfiles_series_and_stops_on_close(textfile: Path, state_dir: Path) -> None:
    port = free_port()
    m = Metrics(bot=BOT, mode="real", textfile=textfile, listen=f"127.0.0.1:{port}", state_dir=state_dir)
    m.start()
    try:
        assert m.port == port
        exercise(m)
        record_decision(state_dir, allowed=False, mode="real", reason="refused", now=datetime.now(UTC))
        served = parse(scrape(port))
        assert served == flushed(m, textfile)
        assert value(served, "guardian_findings", code="STATE_FILE_CORRUPT", level="CRITICAL") == 1
        assert value(served, "guardian_gate_decisions_total", decision="refused") == 1
    finally:
        m.close()
    assert m.port is None
    with pytest.raises(urllib.error.URLError):
        scrape(port)


def test_a_port_in_use_raises_an_oserror_naming_the_address(state_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        listen = f"127.0.0.1:{busy.getsockname()[1]}"
        m = Metrics(bot=BOT, mode="real", textfile=None, listen=listen, state_dir=state_dir)
        with pytest.raises(OSError, match=re.escape(f"metrics.listen {listen}: cannot serve /metrics")):
            m.start()
        m.close()


# --- gate decisions ------------------------------------------------------------------------------

RECORDER = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from guardian.history import record_decision

directory, go, n, first = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
while not go.exists():
    time.sleep(0.001)
for i in range(n):
    record_decision(directory, allowed=(i + first) % 2 == 0, mode="real", reason=f"r{i}", now=datetime.now(UTC))
"""


def test_gate_decisions_recorded_by_two_processes_are_counted_exactly(
    tmp_path: Path, metrics: Metrics, textfile: Path, state_dir: Path
) -> None:
    go, n = tmp_path / "go", 60
    procs = [
        subprocess.Popen([sys.executable, "-c", RECORDER, str(state_dir), str(go), str(n), str(first)], cwd=REPO)
        for first in (0, 1)
    ]
    try:
        time.sleep(0.3)  # both imported and waiting, so their writes overlap
        go.touch()
        assert [p.wait(timeout=60) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    data = read_decisions(state_dir)
    assert (data.allowed, data.refused) == (n, n)
    assert data.last is not None and data.last.mode == "real"
    s = flushed(metrics, textfile)
    assert value(s, "guardian_gate_decisions_total", decision="allowed") == n
    assert value(s, "guardian_gate_decisions_total", decision="refused") == n
    assert value(s, "guardian_gate_last_decision_timestamp_seconds", decision="allowed") == data.last_allowed_t
    assert sorted(p.name for p in state_dir.iterdir()) == ["gate.json", "gate.json.lock"]


def test_record_decision_keeps_the_last_decision_and_when_each_kind_was_made(state_dir: Path) -> None:
    t1, t2 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC), datetime(2026, 11, 21, 12, 5, tzinfo=UTC)
    record_decision(state_dir / "new", allowed=True, mode="paper", reason="ok", now=t1)  # creates the directory
    record_decision(state_dir / "new", allowed=False, mode="real", reason="guardian gate: REFUSED", now=t2)
    assert read_decisions(state_dir / "new") == GateHistory(
        allowed=1,
        refused=1,
        last=LastDecision(False, "real", "guardian gate: REFUSED", t2.isoformat(), t2.timestamp()),
        last_allowed_t=t1.timestamp(),
        last_refused_t=t2.timestamp(),
    )


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b"\xff\xfe", b"[" * 100_000])
def test_a_corrupt_gate_json_counts_as_empty_is_kept_aside_and_its_history_marked_lost(
    state_dir: Path, content: bytes
) -> None:
    state_dir.mkdir()
    (state_dir / "gate.json").write_bytes(content)
    assert read_decisions(state_dir) == GateHistory()
    # The next decision starts the counts again (Prometheus reads a counter reset) ...
    record_decision(state_dir, allowed=False, mode="real", reason="r", now=datetime.now(UTC))
    after = read_history(state_dir)
    assert (after.allowed, after.refused) == (0, 1)
    # ... but the lost history is remembered, and its bytes kept: a cold start cannot be proven from it.
    assert after.lost is not None and "kept as gate.json.unreadable-" in after.lost
    (kept,) = state_dir.glob("gate.json.unreadable-*")
    assert kept.read_bytes() == content


def test_read_decisions_of_a_missing_directory_or_a_directory_in_its_place_returns_empty(state_dir: Path) -> None:
    assert read_decisions(state_dir) == GateHistory()
    (state_dir / "gate.json").mkdir(parents=True)
    assert read_decisions(state_dir) == GateHistory()


def test_hand_edited_counts_of_the_wrong_type_export_as_zero(state_dir: Path, metrics: Metrics, textfile: Path) -> None:
    state_dir.mkdir()
    (state_dir / "gate.json").write_text(json.dumps({"allowed": "7", "refused": True, "last_refused_t": -1}))
    s = flushed(metrics, textfile)
    assert value(s, "guardian_gate_decisions_total", decision="allowed") == 0
    assert value(s, "guardian_gate_decisions_total", decision="refused") == 0
    assert value(s, "guardian_gate_last_decision_timestamp_seconds", decision="refused") is None


# --- the example alerting rules ------------------------------------------------------------------

PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
OTHERS = {"up"}  # Prometheus's own per-target series


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords, labels
    inside {...} or (...) of by/on, strings, durations or numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return {n for n in names if n not in PROMQL_WORDS}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_the_rules_file_parses_and_uses_only_series_guardian_exports(
    metrics: Metrics, textfile: Path, state_dir: Path
) -> None:
    exercise(metrics)
    record_decision(state_dir, allowed=True, mode="real", reason="ok", now=datetime.now(UTC))
    exported = {name for name, _ in flushed(metrics, textfile)}
    rs = rules()
    names = {r["alert"] for r in rs}
    assert {"GuardianDown", "GuardianCriticalFinding", "GuardianHealFailing", "GuardianGateRefused"} <= names
    assert {"GuardianEventLagHigh", "GuardianCheckErrors"} <= names
    used: set[str] = set()
    for r in rs:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        found = metric_names(r["expr"])
        assert found, f"{r['alert']}: no metric name found in {r['expr']!r}"
        used |= found
    assert used - OTHERS <= exported, f"not exported: {sorted(used - OTHERS - exported)}"
    assert "guardian_findings" in used and "guardian_event_lag_seconds_bucket" in used  # the parser works


def test_metric_names_finds_names_and_skips_functions_labels_and_keywords() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, bot) (rate(a_bucket{x="y z"}[5m]))) > 0.1 or on (bot) b == 0'
    assert metric_names(expr) == {"a_bucket", "b"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) is not installed")
def test_promtool_accepts_the_rules_and_they_fire_on_guardians_real_output(
    tmp_path: Path, metrics: Metrics, textfile: Path, state_dir: Path
) -> None:
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    # Two snapshots of the real textfile: a healthy start (minute 0-4), then trouble (minute 5 on).
    metrics.sweep_done(60.0)  # the only sweep, at minute 1: stale from minute 4
    metrics.set_findings([], score=100)
    before = flushed(metrics, textfile)
    metrics.set_findings([finding("STATE_FILE_CORRUPT", Level.CRITICAL)], score=50)
    lock = finding("LOCK_STALE", Level.HIGH)
    metrics.heal([HealAction(lock, Outcome.FAILED, "still there")])
    record_decision(state_dir, allowed=False, mode="real", reason="refused", now=datetime.fromtimestamp(400, UTC))
    after = flushed(metrics, textfile)
    series = []
    for key in sorted(before.keys() | after.keys(), key=str):
        name, labels = key
        values = [before.get(key)] * 5 + [after.get(key)] * 16
        text = " ".join("_" if v is None else repr(v) for v in values)
        body = ",".join(f'{k}="{v}"' for k, v in sorted({**dict(labels), "instance": "h1:9100", "job": "node"}.items()))
        series.append({"series": f"{name}{{{body}}}", "values": text})
    common = {"bot": BOT, "instance": "h1:9100"}  # the rules aggregate job away
    # promtool compares annotations too: test the expressions on a copy without them.
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    rules_file = tmp_path / "guardian.rules.yml"
    rules_file.write_text(yaml.safe_dump(doc))
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "GuardianCriticalFinding", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "GuardianDown", "exp_alerts": []},
                    {
                        "eval_time": "6m",
                        "alertname": "GuardianCriticalFinding",
                        "exp_alerts": [
                            {"exp_labels": {**common, "code": "STATE_FILE_CORRUPT", "severity": "critical"}}
                        ],
                    },
                    {
                        "eval_time": "6m",
                        "alertname": "GuardianHealFailing",
                        "exp_alerts": [{"exp_labels": {**common, "code": "LOCK_STALE", "severity": "warning"}}],
                    },
                    {
                        "eval_time": "6m",
                        "alertname": "GuardianGateRefused",
                        "exp_alerts": [{"exp_labels": {**common, "severity": "critical"}}],
                    },
                    {
                        "eval_time": "8m",
                        "alertname": "GuardianDown",
                        "exp_alerts": [{"exp_labels": {**common, "severity": "critical"}}],
                    },
                    {"eval_time": "8m", "alertname": "GuardianCheckErrors", "exp_alerts": []},
                    {"eval_time": "8m", "alertname": "GuardianEventLagHigh", "exp_alerts": []},
                ],
            }
        ],
    }
    spec = tmp_path / "guardian.rules.test.yml"
    spec.write_text(yaml.safe_dump(tests, sort_keys=False))
    run = subprocess.run(["promtool", "test", "rules", str(spec)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
