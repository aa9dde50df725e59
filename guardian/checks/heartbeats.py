"""Heartbeats: one file per bot component, stale past the threshold (or from the future).

A bot that has just started has not beaten yet: while every bot process is younger than
``thresholds.bot_start_grace``, stale heartbeats are not reported.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from guardian.checks.base import ago, unknown
from guardian.context import Context
from guardian.model import Finding, Level
from guardian.state import FileState, load_json_object


@dataclass(frozen=True)
class Beat:
    path: Path
    at: float | None  # the last beat (Unix seconds); None when the file cannot be read
    pid: object
    problem: str | None  # why it cannot be read

    @property
    def subject(self) -> str:
        return f"heartbeat:{self.path.stem}"


def heartbeat_time(path: Path, data: dict[str, object], mtime: float) -> float:
    """The heartbeat's time: its ``ts`` (ISO 8601 or Unix seconds), else the file's mtime."""
    ts = data.get("ts")
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return float(ts)
    if isinstance(ts, str):
        try:
            moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()  # no zone: UTC
        except ValueError:
            pass
    return mtime


def read_beats(ctx: Context) -> list[Beat]:
    """Every ``*.json`` in the heartbeats directory, read once per evaluation."""
    if "beats" in ctx.memo:
        beats: list[Beat] = ctx.memo["beats"]
        return beats
    beats = []
    try:
        entries = sorted(os.scandir(ctx.heartbeats_dir), key=lambda e: e.name)
    except OSError:
        entries = []  # the directory check reports a missing heartbeats directory
    for e in entries:
        if not e.name.endswith(".json"):
            continue
        path = Path(e.path)
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue  # removed between the listing and now
        if not stat.S_ISREG(st.st_mode):
            beats.append(Beat(path, None, None, f"{ctx.rel(path)} is not a regular file"))
            continue
        loaded = load_json_object(path, required=(), max_bytes=1 << 20)
        if loaded.state is FileState.UNREADABLE:
            beats.append(Beat(path, None, None, f"cannot read {ctx.rel(path)}: it {loaded.detail}"))
            continue
        beats.append(Beat(path, heartbeat_time(path, loaded.data, st.st_mtime), loaded.data.get("pid"), None))
    ctx.memo["beats"] = beats
    return beats


def bot_starting(ctx: Context) -> float | None:
    """When the start-up grace of a just-started bot ends, or None if no bot is starting."""
    procs = ctx.bot_processes
    grace = ctx.cfg.thresholds.bot_start_grace
    if not procs or any(p.started is None for p in procs):
        return None
    end = min(p.started for p in procs if p.started is not None) + grace
    return end if ctx.now.timestamp() < end else None


def check(ctx: Context) -> Iterator[Finding]:
    now = ctx.now.timestamp()
    th = ctx.cfg.thresholds
    for b in read_beats(ctx):
        if b.at is None:
            yield unknown(b.subject, b.problem or f"cannot read {ctx.rel(b.path)}", Level.HIGH)
            continue
        age = now - b.at
        ctx_ = {"age_s": round(age), "pid": b.pid, "file": ctx.rel(b.path)}
        if age > th.heartbeat_stale:
            if bot_starting(ctx) is not None:  # processes are probed only once a beat is stale
                continue
            yield Finding(
                "HEARTBEAT_STALE",
                Level.HIGH,
                b.subject,
                f"{b.path.stem} last beat {ago(age)} ago (threshold {ago(th.heartbeat_stale)})",
                recoverable=True,
                context=ctx_,
            )
        elif -age > th.clock_skew:
            yield Finding(
                "HEARTBEAT_STALE",
                Level.HIGH,
                b.subject,
                f"{b.path.stem} heartbeat is {-age:.0f}s in the future: a clock jump or a bad writer",
                recoverable=True,
                context=ctx_,
            )


def next_change(ctx: Context) -> float | None:
    """The next moment (Unix seconds) the heartbeat check's answer can change with no new event:
    a beat crossing its threshold, or a starting bot's grace ending. The daemon sets a timer on it."""
    now = ctx.now.timestamp()
    stale = ctx.cfg.thresholds.heartbeat_stale
    times = [b.at + stale for b in read_beats(ctx) if b.at is not None and b.at + stale > now]
    if any(b.at is not None and b.at + stale <= now for b in read_beats(ctx)):
        end = bot_starting(ctx)
        if end is not None:
            times.append(end)
    return min(times, default=None)
