"""The JSONL alert log: exact lines, no forging, no symlinks, rotation under load from real processes,
the reader (rotated files, filters, corrupt lines, follow) and ``guardian alerts``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from guardian.alerts import Alert, iso
from guardian.alerts.jsonl import JsonlSink, rotate_lock_path
from guardian.alerts.reader import AlertFilter, ReadStats, follow, format_table, log_files, read_alerts
from guardian.config import load
from guardian.context import Context
from guardian.demo import BotTree
from tests.conftest import NOW, Result

Spawn = Callable[..., subprocess.Popen[bytes]]

# A writer process: waits for the go file (so that all writers overlap), then emits n alerts.
WORKER = """
import pathlib, sys, time
from guardian.alerts import Alert
from guardian.alerts.jsonl import JsonlSink
path, worker, n, max_bytes, keep, go = sys.argv[1:]
sink = JsonlSink(pathlib.Path(path), max_bytes=int(max_bytes), keep=int(keep))
pathlib.Path(go + "." + worker).touch()
deadline = time.monotonic() + 30
while not pathlib.Path(go).exists():
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.001)
for i in range(int(n)):
    sink.emit(Alert(ts="2026-11-21T12:00:00.000Z", level="HIGH", code="LOAD", subject="w" + worker,
                    message=f"alert {i} of worker {worker} " + "x" * 80, action_required=False, event="firing",
                    context={"worker": int(worker), "i": i}))
"""


def alert(code: str = "POSITION_CONFLICT", *, level: str = "HIGH", ts: datetime = NOW, **kw: Any) -> Alert:
    fields: dict[str, Any] = {
        "subject": "logs/positions_futures.json",
        "message": "two positions for BTCUSDT",
        "action_required": level == "CRITICAL",
        "event": "firing",
        "context": {"symbol": "BTCUSDT"},
    }
    fields.update(kw)
    return Alert(ts=iso(ts), level=level, code=code, **fields)


def lines_of(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\n")[:-1]


def run_writers(spawn: Spawn, tmp_path: Path, log: Path, *, workers: int, n: int, max_bytes: int, keep: int) -> float:
    go = tmp_path / "go"
    procs = [
        spawn(
            [sys.executable, "-c", WORKER, str(log), str(w), str(n), str(max_bytes), str(keep), str(go)],
            ready=Path(f"{go}.{w}"),
        )
        for w in range(workers)
    ]
    start = time.monotonic()
    go.touch()
    for p in procs:
        assert p.wait(timeout=60) == 0
    return time.monotonic() - start


def all_docs(log: Path) -> list[dict[str, Any]]:
    """Every line of every file, oldest file first; each must be a complete JSON object."""
    docs: list[dict[str, Any]] = []
    for f in log_files(log):
        data = f.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{f.name} ends inside a line"
        docs.extend(json.loads(line) for line in data.decode().split("\n")[:-1])
    return docs


# --- the line ------------------------------------------------------------------------------------


def test_a_line_is_exactly_the_alerts_json_object(tmp_path: Path) -> None:
    log = tmp_path / "operator_alerts.jsonl"
    a = alert(context={"symbol": "BTCUSDT", "qty": 0.5, "path": tmp_path})
    JsonlSink(log).emit(a)
    [line] = lines_of(log)
    doc = json.loads(line)
    assert list(doc) == list(a.to_json())  # the same keys in the same order, no logging fields
    assert doc == {**a.to_json(), "context": {"symbol": "BTCUSDT", "qty": 0.5, "path": str(tmp_path)}}


def test_a_field_cannot_forge_a_second_line(tmp_path: Path) -> None:
    log = tmp_path / "operator_alerts.jsonl"
    forged = '\n{"level": "CRITICAL"}'
    a = alert(
        message='line one\n{"ts":"2026-01-01T00:00:00Z","level":"CRITICAL","code":"FAKE"}\r\u2028"quoted"',
        context={"note": forged, "nested": {"k": forged}},
    )
    sink = JsonlSink(log)
    sink.emit(a)
    sink.emit(alert("SECOND"))
    lines = lines_of(log)
    assert len(lines) == 2
    assert all(line.isascii() for line in lines)
    assert json.loads(lines[0]) == a.to_json()
    assert [d["code"] for d in read_alerts(log).alerts] == ["POSITION_CONFLICT", "SECOND"]


def test_logging_settings_elsewhere_neither_drop_nor_leak_an_alert(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "operator_alerts.jsonl"
    logging.disable(logging.CRITICAL)
    try:
        JsonlSink(log).emit(alert())
    finally:
        logging.disable(logging.NOTSET)
    with caplog.at_level(logging.DEBUG):
        JsonlSink(log).emit(alert())
    assert len(lines_of(log)) == 2
    assert caplog.records == []  # not propagated to the root logger


@pytest.mark.parametrize("planted", ["log", "sidecar"])
def test_a_symlink_in_place_of_the_log_is_refused(tmp_path: Path, planted: str) -> None:
    log = tmp_path / "logs" / "operator_alerts.jsonl"
    log.parent.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (log if planted == "log" else rotate_lock_path(log)).symlink_to(victim)
    with pytest.raises(OSError):
        JsonlSink(log).emit(alert())
    assert victim.read_text() == "precious\n"
    assert not log.exists() or log.is_symlink()


def test_the_log_directory_is_created_and_a_fifo_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "operator_alerts.jsonl"
    JsonlSink(log).emit(alert())
    assert len(lines_of(log)) == 1
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(OSError):  # not a hang waiting for a reader
        JsonlSink(fifo).emit(alert())


# --- rotation --------------------------------------------------------------------------------------


def test_rotation_keeps_the_newest_in_dot_1_and_at_most_keep_files(tmp_path: Path) -> None:
    log = tmp_path / "operator_alerts.jsonl"
    sink = JsonlSink(log, max_bytes=600, keep=2)
    for i in range(30):
        sink.emit(alert(f"C{i:02d}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "operator_alerts.jsonl",
        "operator_alerts.jsonl.1",
        "operator_alerts.jsonl.2",
        "operator_alerts.jsonl.rotate.lock",
    ]
    per_file = [[json.loads(line)["code"] for line in lines_of(f)] for f in log_files(log)]
    flat = [c for codes in per_file for c in codes]
    assert flat == [f"C{i:02d}" for i in range(30 - len(flat), 30)]  # the newest, in order, .2 .1 live
    assert all(codes for codes in per_file)
    assert all(f.stat().st_size <= 600 for f in log_files(log))


def test_four_processes_with_rotation_lose_and_tear_nothing(spawn: Spawn, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "operator_alerts.jsonl"
    workers, n, max_bytes = 4, 500, 20_000
    elapsed = run_writers(spawn, tmp_path, log, workers=workers, n=n, max_bytes=max_bytes, keep=1000)
    docs = all_docs(log)
    files = log_files(log)
    seen = [(d["context"]["worker"], d["context"]["i"]) for d in docs]
    print(f"\n{len(docs)} lines in {len(files)} files, {workers * n - len(set(seen))} lost, {elapsed:.2f} s")
    assert len(docs) == workers * n
    assert set(seen) == {(w, i) for w in range(workers) for i in range(n)}  # 2000 distinct: none lost, none twice
    assert len(files) > 10  # it did rotate, many times, under load
    for w in range(workers):  # oldest file first, each writer's alerts come in the order it wrote them
        assert [i for ww, i in seen if ww == w] == list(range(n))
    line_max = max(len(line) for f in files for line in f.read_bytes().split(b"\n"))
    assert all(f.stat().st_size <= max_bytes + workers * (line_max + 1) for f in files)
    result = read_alerts(log)
    assert (len(result.alerts), result.skipped) == (workers * n, 0)


def test_keep_bounds_the_files_under_load_and_drops_only_the_oldest(spawn: Spawn, tmp_path: Path) -> None:
    log = tmp_path / "operator_alerts.jsonl"
    workers, n = 4, 200
    run_writers(spawn, tmp_path, log, workers=workers, n=n, max_bytes=5_000, keep=2)
    assert [f.name for f in log_files(log)] == [f"{log.name}.2", f"{log.name}.1", log.name]
    assert not (tmp_path / f"{log.name}.3").exists()
    docs = all_docs(log)
    for w in range(workers):  # what is kept of a writer is the end of what it wrote, in order
        kept = [d["context"]["i"] for d in docs if d["context"]["worker"] == w]
        assert kept == list(range(n - len(kept), n))


# --- the reader ------------------------------------------------------------------------------------


def write_lines(path: Path, *items: Alert | str) -> None:
    with path.open("a") as f:
        for item in items:
            f.write((json.dumps(item.to_json()) if isinstance(item, Alert) else item) + "\n")


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """.2 (oldest) .1 and the live file, with a corrupt line in .1 and a torn one at the end of .2."""
    log = tmp_path / "operator_alerts.jsonl"
    hour = timedelta(hours=1)
    write_lines(log.with_name(log.name + ".2"), alert("OLD_LOW", level="LOW", ts=NOW - 5 * hour))
    with log.with_name(log.name + ".2").open("a") as f:
        f.write('{"ts": "2026-11-21T07:00:00Z", "level": "HI')  # torn, no newline
    write_lines(
        log.with_name(log.name + ".1"),
        alert("OLD_CRIT", level="CRITICAL", ts=NOW - 4 * hour),
        "not json at all",
        '["a list"]',
        alert("INFO_GATE", level="INFO", ts=NOW - 3 * hour, event="gate"),
    )
    write_lines(
        log,
        alert("HEARTBEAT_STALE", level="MEDIUM", ts=NOW - hour - timedelta(minutes=1)),
        alert("HEARTBEAT_MISSING", level="HIGH", ts=NOW - timedelta(minutes=30)),
        alert("POSITION_CONFLICT", level="CRITICAL", ts=NOW - timedelta(minutes=1)),
    )
    return log


def test_reader_reads_rotated_files_oldest_first_and_counts_bad_lines(history: Path) -> None:
    result = read_alerts(history)
    assert [a["code"] for a in result.alerts] == [
        "OLD_LOW",
        "OLD_CRIT",
        "INFO_GATE",
        "HEARTBEAT_STALE",
        "HEARTBEAT_MISSING",
        "POSITION_CONFLICT",
    ]
    assert result.skipped == 3
    assert [f.name for f in result.files][-1] == history.name
    assert read_alerts(history, last=2).alerts == result.alerts[-2:]


def test_reader_filters(history: Path) -> None:
    def codes(**kw: Any) -> list[str]:
        return [a["code"] for a in read_alerts(history, AlertFilter(now=NOW, **kw)).alerts]

    assert codes(level="high") == ["OLD_CRIT", "HEARTBEAT_MISSING", "POSITION_CONFLICT"]
    assert codes(level="CRITICAL") == ["OLD_CRIT", "POSITION_CONFLICT"]
    assert len(codes(level="INFO")) == 6
    assert codes(level="LOW") == [c for c in codes() if c != "INFO_GATE"]
    assert codes(since=timedelta(hours=1)) == ["HEARTBEAT_MISSING", "POSITION_CONFLICT"]
    assert codes(since=timedelta(hours=2), level="MEDIUM") == [
        "HEARTBEAT_STALE",
        "HEARTBEAT_MISSING",
        "POSITION_CONFLICT",
    ]
    assert codes(code="HEARTBEAT_STALE") == ["HEARTBEAT_STALE"]
    assert codes(code="heartbeat_*") == ["HEARTBEAT_STALE", "HEARTBEAT_MISSING"]
    assert codes(code="NOPE") == []
    with pytest.raises(ValueError, match="unknown level"):
        AlertFilter(level="SEVERE")


def test_reader_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    result = read_alerts(tmp_path / "none" / "operator_alerts.jsonl")
    assert (result.alerts, result.skipped, result.files) == ([], 0, [])


def test_format_table_fits_the_terminal_and_neutralizes_control_characters(
    history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "72")
    alerts = [*read_alerts(history).alerts, alert(message="evil\n\x1b[2Jcleared", level="CRITICAL").to_json()]
    table = format_table(alerts)
    rows = table.split("\n")
    assert len(rows) == len(alerts) + 1
    assert rows[0].split()[:6] == ["TIME", "(UTC)", "LEVEL", "EVENT", "CODE", "SUBJECT"]
    assert all(len(r) <= 72 for r in rows)
    assert "\x1b" not in table
    assert rows[1].startswith("2026-11-21 07:00:00  LOW       firing")
    assert rows[-1].split()[2:4] == ["CRITICAL", "firing"]
    wide = format_table(alerts, width=400).split("\n")
    assert wide[-1].endswith("ACTION REQUIRED: evil\\n\\x1b[2Jcleared")


def follow_in_thread(log: Path, **kw: Any) -> tuple[list[dict[str, Any]], threading.Event, threading.Thread]:
    got: list[dict[str, Any]] = []
    stop = threading.Event()

    def consume() -> None:
        for doc in follow(log, stop=stop.is_set, **kw):
            got.append(doc)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    return got, stop, t


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_follow_picks_up_lines_from_another_process_across_a_rotation(history: Path) -> None:
    stats = ReadStats()
    got, stop, t = follow_in_thread(history, history=True, stats=stats, flt=AlertFilter(level="MEDIUM", now=NOW))
    try:
        wait_for(lambda: len(got) == 4)  # the history (MEDIUM and worse): the live file is open now
        emit = (
            "import pathlib, sys\n"
            "from guardian.alerts import Alert\n"
            "from guardian.alerts.jsonl import JsonlSink\n"
            "JsonlSink(pathlib.Path(sys.argv[1]), max_bytes=int(sys.argv[2]), keep=5).emit(\n"
            "    Alert(ts='2026-11-21T12:00:00.000Z', level='HIGH', code=sys.argv[3], subject='s', message='m',\n"
            "          action_required=False, event='firing'))\n"
        )
        subprocess.run([sys.executable, "-c", emit, str(history), "10000000", "APPENDED"], check=True)
        wait_for(lambda: len(got) == 5)
        subprocess.run([sys.executable, "-c", emit, str(history), "1", "AFTER_ROTATION"], check=True)
        assert history.with_name(history.name + ".3").exists()  # it rotated: a new inode
        wait_for(lambda: len(got) == 6)
        write_lines(history, alert("TOO_LOW", level="LOW"), "garbage", alert("LAST", level="CRITICAL"))
        wait_for(lambda: len(got) == 7)
    finally:
        stop.set()
        t.join(timeout=5)
    assert not t.is_alive()
    assert [d["code"] for d in got[3:]] == ["POSITION_CONFLICT", "APPENDED", "AFTER_ROTATION", "LAST"]
    assert stats.skipped == 4  # the 3 of the history, then "garbage"


def test_follow_without_history_starts_at_the_end_and_waits_for_the_file(tmp_path: Path) -> None:
    log = tmp_path / "operator_alerts.jsonl"
    got, stop, t = follow_in_thread(log)
    try:
        JsonlSink(log).emit(alert("FIRST"))  # the file appears after the follower started
        wait_for(lambda: len(got) == 1)
    finally:
        stop.set()
        t.join(timeout=5)
    assert got[0]["code"] == "FIRST"


# --- guardian alerts -------------------------------------------------------------------------------


@pytest.fixture
def logged(tree: BotTree, make_config: Callable[..., Path]) -> Path:
    config = make_config(tree)
    path = Context(load(config)).alerts_path
    sink = JsonlSink(path)
    now = datetime.now(UTC)
    sink.emit(alert("OLD_HIGH", level="HIGH", ts=now - timedelta(hours=3)))
    sink.emit(alert("GATE_ALLOWED", level="INFO", ts=now - timedelta(minutes=5), event="gate"))
    sink.emit(alert("HEARTBEAT_STALE", level="MEDIUM", ts=now - timedelta(minutes=2)))
    sink.emit(alert("POSITION_CONFLICT", level="CRITICAL", ts=now - timedelta(minutes=1)))
    with path.open("a") as f:
        f.write("{torn\n")
    return config


def test_cli_alerts_json_prints_one_object_per_line(logged: Path, cli: Callable[..., Result]) -> None:
    r = cli(logged, "alerts", "--json")
    assert r.code == 0
    docs = [json.loads(line) for line in r.out.splitlines()]
    assert [d["code"] for d in docs] == ["OLD_HIGH", "GATE_ALLOWED", "HEARTBEAT_STALE", "POSITION_CONFLICT"]
    assert "1 unreadable line(s) skipped" in r.err
    r = cli(logged, "alerts", "--json", "--since", "2h", "--level", "high")
    assert [json.loads(line)["code"] for line in r.out.splitlines()] == ["POSITION_CONFLICT"]
    r = cli(logged, "alerts", "--json", "--code", "HEARTBEAT_*", "--last", "1")
    assert [json.loads(line)["code"] for line in r.out.splitlines()] == ["HEARTBEAT_STALE"]


def test_cli_alerts_table(logged: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    r = cli(logged, "alerts", "--since", "30m")
    assert r.code == 0
    rows = r.out.splitlines()
    assert rows[0].startswith("TIME (UTC)")
    assert [row.split()[4] for row in rows[1:]] == ["GATE_ALLOWED", "HEARTBEAT_STALE", "POSITION_CONFLICT"]
    assert "ACTION REQUIRED: two positions" in rows[-1]
    assert all(len(row) <= 120 for row in rows)
    r = cli(logged, "alerts", "--code", "NOPE")
    assert r.code == 0
    assert r.out.startswith("no alerts matching in ")
    with pytest.raises(SystemExit):  # argparse: not a level
        cli(logged, "alerts", "--level", "SEVERE")
