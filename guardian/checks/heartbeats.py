"""Heartbeats: one file per bot component, stale past the threshold (or from the future)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from guardian.checks.base import ago, unknown
from guardian.context import Context
from guardian.model import Finding, Level
from guardian.state import FileState, load_json_object


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


def check(ctx: Context) -> Iterator[Finding]:
    try:
        entries = sorted(os.scandir(ctx.heartbeats_dir), key=lambda e: e.name)
    except OSError:
        return  # the directory check reports a missing heartbeats directory
    now = ctx.now.timestamp()
    th = ctx.cfg.thresholds
    for e in entries:
        if not e.name.endswith(".json"):
            continue
        path = Path(e.path)
        subject = f"heartbeat:{path.stem}"
        st = e.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            yield unknown(subject, f"{ctx.rel(path)} is not a regular file", Level.HIGH)
            continue
        loaded = load_json_object(path, required=(), max_bytes=1 << 20)
        if loaded.state is FileState.UNREADABLE:
            yield unknown(subject, f"cannot read {ctx.rel(path)}: it {loaded.detail}", Level.HIGH)
            continue
        beat = heartbeat_time(path, loaded.data, st.st_mtime)
        age = now - beat
        pid = loaded.data.get("pid")
        ctx_ = {"age_s": round(age), "pid": pid, "file": ctx.rel(path)}
        if age > th.heartbeat_stale:
            yield Finding(
                "HEARTBEAT_STALE",
                Level.HIGH,
                subject,
                f"{path.stem} last beat {ago(age)} ago (threshold {ago(th.heartbeat_stale)})",
                recoverable=True,
                context=ctx_,
            )
        elif -age > th.clock_skew:
            yield Finding(
                "HEARTBEAT_STALE",
                Level.HIGH,
                subject,
                f"{path.stem} heartbeat is {-age:.0f}s in the future: a clock jump or a bad writer",
                recoverable=True,
                context=ctx_,
            )
