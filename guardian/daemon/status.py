"""The daemon's current state, written atomically to its state directory for ``guardian status``.

The file is rewritten when the picture changes and at every sweep, so its ``updated_at`` also
tells whether the daemon is still looking. It is not fsynced: it is rebuilt within a sweep of any
restart, and a status that costs a disk flush per bot save would not be worth having.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from guardian.checks.base import ago
from guardian.fsutil import read_regular, unreadable_reason
from guardian.model import Finding, Level

STATUS_FILE = "status.json"
LEVELS = ("CRITICAL", "HIGH", "MEDIUM", "LOW")


def summary(findings: Sequence[Finding], checked_at: datetime) -> str:
    """The one line ``systemctl status guardian`` shows: the worst finding, the counts, the time."""
    at = checked_at.astimezone(UTC).strftime("%H:%M:%SZ")
    if not findings:
        return f"OK: no findings; checked {at}"
    worst = max(findings, key=lambda f: f.level)
    counts = Counter(f.level.name for f in findings)
    shown = ", ".join(f"{counts[lv]} {lv}" for lv in LEVELS if counts[lv])
    more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    return f"{worst.level.name} {worst.code} {worst.subject}{more}; {shown}; checked {at}"


STATUS_MAX = 16 << 20  # far above any status the daemon writes; a larger file is not read into memory


# status.json, one definition for the daemon that writes it and `guardian status` that reads it.
# Every field has a default, so a status a daemon of another version wrote still reads.


class FindingRow(msgspec.Struct):
    level: str = "?"
    code: str = "?"
    subject: str = ""
    message: str = ""
    recoverable: bool = False
    action_required: bool = True
    action: str | None = None
    context: dict[str, Any] = {}
    concern: str | None = None


class CheckRow(msgspec.Struct):
    runs: int = 0
    duration_ms: float = 0.0
    errors: int = 0  # consecutive
    last_error: str | None = None
    backoff_until: str | None = None


class Events(msgspec.Struct):
    seen: int = 0
    evaluations: int = 0
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    cpu_budget_ms: float | None = None  # negative: event-driven checks wait
    watched: int = 0
    watch_problems: list[str] = []


class StartVerdict(msgspec.Struct):
    """The gate's verdict as the daemon last saw it (``guardian.verdict``): what a start would get now."""

    mode: str = ""
    allowed: bool = False
    sound: bool = False
    pending: bool = False
    reason: str = ""
    blockers: list[str] = []
    proofs: dict[str, str] = {}
    unproven: list[str] = []
    planned: list[str] = []
    score: int | None = None


class Resources(msgspec.Struct):
    rss_mb: float = 0.0
    fds: int = 0


class Status(msgspec.Struct):
    version: int = 1
    pid: int | None = None
    process_started: float | None = None
    state: str | None = None
    config: str | None = None
    config_error: str | None = None
    mode: str | None = None
    home: str | None = None
    slot: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    last_check: str | None = None
    last_sweep: str | None = None
    summary: str | None = None
    score: int | None = None
    worst: str | None = None
    counts: dict[str, int] = {}
    findings: list[FindingRow] = []
    verdict: StartVerdict | None = None
    exit_code: int | None = None  # the daemon's, by model.monitoring_exit: check's mapping
    checks: dict[str, CheckRow] = {}
    heals: dict[str, int] = {}
    events: Events | None = None
    watched_pids: list[int] = []
    resources: Resources | None = None


def write(directory: Path, status: Status) -> None:
    from guardian.fsutil import atomic_write

    directory.mkdir(parents=True, exist_ok=True)
    # enc_hook: a finding's context may hold a value JSON has no type for (a path); it is written as text.
    data = msgspec.json.format(msgspec.json.encode(status, enc_hook=str), indent=1) + b"\n"
    atomic_write(directory / STATUS_FILE, data, durable=False)


@dataclass(frozen=True)
class Snapshot:
    doc: dict[str, Any]  # status.json as written, for --json
    status: Status


class StatusUnreadable(Exception):
    """status.json is there but is not a status: unreadable, not JSON, or not of the daemon's shape."""


def load(directory: Path) -> Snapshot | None:
    """The last status written, or None when there is none. Raise StatusUnreadable (saying why) when
    the file is not one: a FIFO, a symlink, too large, not JSON, or JSON of another shape."""
    path = directory / STATUS_FILE
    try:
        raw = read_regular(path, max_bytes=STATUS_MAX)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise StatusUnreadable(f"{path} cannot be read ({unreadable_reason(e)})") from None
    try:
        return Snapshot(msgspec.json.decode(raw, type=dict[str, Any]), msgspec.json.decode(raw, type=Status))
    except msgspec.ValidationError as e:
        raise StatusUnreadable(f"{path} is not a status the daemon wrote ({e})") from None
    except (msgspec.DecodeError, RecursionError) as e:
        raise StatusUnreadable(f"{path} is not JSON ({e})") from None


def read(directory: Path) -> dict[str, Any] | None:
    """The last status written, as a dict; None when there is none (or it cannot be read as one)."""
    try:
        snapshot = load(directory)
    except StatusUnreadable:
        return None
    return snapshot.doc if snapshot else None


class Process(enum.Enum):
    """The daemon's process, as ``guardian status`` finds it."""

    RUNNING = "running"
    STOPPED = "stopped"  # SIGSTOP, or held by a tracer: alive, but not looking
    GONE = "gone"  # exited, a zombie, or its pid now another process's


def probe_process(pid: int | None, started: float | None) -> Process:
    import psutil

    from guardian.probes import pid_alive

    if pid is None or not pid_alive(pid):
        return Process.GONE
    try:
        proc = psutil.Process(pid)
        created, state = proc.create_time(), proc.status()
    except psutil.NoSuchProcess:
        return Process.GONE
    except psutil.Error:  # not ours to look at: judge by the pid alone
        return Process.RUNNING
    if started is not None and abs(created - started) >= 1.0:
        return Process.GONE  # a reused pid
    return Process.STOPPED if state in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP) else Process.RUNNING


@dataclass(frozen=True)
class Liveness:
    """Whether the picture in status.json is current. ``stale`` says why not; empty when it is."""

    process: Process
    age: float | None  # seconds since updated_at; None when it cannot be read
    stale: tuple[str, ...]

    @property
    def running(self) -> bool:
        return self.process is Process.RUNNING and not self.stale


def judge(status: Status, process: Process, *, now: datetime, sweep: float) -> Liveness:
    """Pure: the daemon rewrites its status at least every sweep, so one older than two sweeps, or
    whose daemon is gone, stopped or says it stopped, is an old picture."""
    why: list[str] = []
    if process is Process.GONE:
        why.append("NOT RUNNING: it stopped" if status.state == "stopped" else "NOT RUNNING: its process is gone")
    elif process is Process.STOPPED:
        why.append("stopped (SIGSTOP): alive but not looking")
    elif status.state == "stopped":
        why.append("state: stopped")
    updated = _parse_ts(status.updated_at)
    age = (now - updated).total_seconds() if updated else None
    if age is None:
        why.append("no readable updated_at")
    elif age > 2 * sweep:
        why.append(f"not updated for {ago(age)}, over two sweeps ({ago(2 * sweep)})")
    elif age < -2 * sweep:
        why.append(f"updated_at is {ago(age)} in the future")
    return Liveness(process, age, tuple(why))


def assess(status: Status, *, now: datetime, sweep: float) -> Liveness:
    return judge(status, probe_process(status.pid, status.process_started), now=now, sweep=sweep)


def _parse_ts(value: str | None) -> datetime | None:
    try:
        ts = datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
    return ts if ts is None or ts.tzinfo else ts.replace(tzinfo=UTC)


def exit_code(snapshot: Snapshot | None, live: Liveness | None) -> int:
    """As ``guardian check``: 0 OK, 1 WARNING, 2 CRITICAL; 3 UNKNOWN when no daemon is looking now."""
    if snapshot is None or live is None or not live.running:
        return 3
    st = snapshot.status
    if st.exit_code in (0, 1, 2, 3):
        return st.exit_code
    # A status written before the daemon said its exit code: the closest reading of the rest.
    if st.worst == "CRITICAL" or (st.mode == "real" and st.verdict is not None and not st.verdict.sound):
        return 2  # a real-mode bot that the gate would not let start is as critical as any finding
    return 1 if st.worst else 0


def render(snapshot: Snapshot | None, live: Liveness | None, *, directory: Path) -> str:
    if snapshot is None or live is None:
        return f"guardian daemon: NOT RUNNING - no status in {directory} (has `guardian run` ever run here?)"
    st = snapshot.status
    updated = st.updated_at or "?"
    if live.stale:
        when = "at an unknown time" if live.age is None else f"{ago(max(live.age, 0.0))} ago"
        head = (
            f"guardian daemon: STALE - last status {when} (pid {st.pid}, {'; '.join(live.stale)}); "
            "the picture below is old"
        )
    else:
        head = f"guardian daemon: running (pid {st.pid}, since {st.started_at})"
    old = "old  " if live.stale else ""
    lines = [
        head,
        f"  state     {st.state}   mode {st.mode}   slot {st.slot}   score {st.score}/100",
        f"  summary   {old}{st.summary}",
        f"  checked   {st.last_check}   last sweep {st.last_sweep}   updated {updated}",
    ]
    if st.config_error:
        lines.append(f"  CONFIG    {st.config_error}")
    if st.verdict is not None:
        lines.append(f"  start     {old}{st.verdict.reason}")
        lines += [f"            {old}{b}" for b in st.verdict.blockers[:6]]
    if st.findings:
        lines.append(f"  findings (old: as of {updated}, they may no longer hold):" if live.stale else "  findings:")
        w = max(len(f.code) for f in st.findings)
        for f in st.findings:
            lines.append(f"    {old}{f.level:<8}  {f.code:<{w}}  {f.subject}  {f.message}")
    if any(st.heals.values()):
        lines.append("  heals     " + ", ".join(f"{k} {v}" for k, v in st.heals.items()))
    for name, c in st.checks.items():
        if c.errors:
            lines.append(
                f"  check {name} failing ({c.errors} time(s)), retried after {c.backoff_until}: {c.last_error}"
            )
    ev = st.events
    if ev is not None:
        lines.append(
            f"  events    {ev.seen} seen, {ev.evaluations} evaluations, "
            f"lag p50 {ev.lag_p50_ms} ms p99 {ev.lag_p99_ms} ms; watching {ev.watched} dirs"
        )
        if (ev.cpu_budget_ms or 0) < 0:
            lines.append("            re-checks are spaced out: a busy file's checks used up daemon.cpu_percent")
    return "\n".join(lines)


def worst_level(findings: Sequence[Finding]) -> str | None:
    return max(findings, key=lambda f: f.level).level.name if findings else None


def level_counts(findings: Sequence[Finding]) -> dict[str, int]:
    c = Counter(f.level.name for f in findings)
    return {lv: c.get(lv, 0) for lv in (Level.CRITICAL.name, Level.HIGH.name, Level.MEDIUM.name, Level.LOW.name)}
