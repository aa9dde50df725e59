"""The daemon's current state, written atomically to its state directory for ``guardian status``.

The file is rewritten when the picture changes and at every sweep, so its ``updated_at`` also
tells whether the daemon is still looking. It is not fsynced: it is rebuilt within a sweep of any
restart, and a status that costs a disk flush per bot save would not be worth having.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def write(directory: Path, doc: Mapping[str, Any]) -> None:
    from guardian.fsutil import atomic_write

    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / STATUS_FILE, (json.dumps(doc, indent=1, default=str) + "\n").encode(), durable=False)


def read(directory: Path) -> dict[str, Any] | None:
    """The last status written, or None when there is none (or it cannot be read as one)."""
    try:
        doc = json.loads((directory / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def running(doc: Mapping[str, Any]) -> bool:
    """Whether the daemon that wrote ``doc`` is still alive (its pid, started at the same time)."""
    from guardian.probes import pid_alive

    pid = doc.get("pid")
    if doc.get("state") == "stopped" or not isinstance(pid, int) or not pid_alive(pid):
        return False
    try:
        import psutil

        started = psutil.Process(pid).create_time()
    except Exception:  # gone meanwhile, or not ours to look at: judge by the pid alone
        return True
    return abs(started - float(doc.get("process_started", started))) < 1.0  # not a reused pid


def exit_code(doc: Mapping[str, Any] | None, *, alive: bool) -> int:
    """As ``guardian check``: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (no daemon looking)."""
    if doc is None or not alive:
        return 3
    worst = doc.get("worst")
    if worst == "CRITICAL":
        return 2
    return 1 if worst else 0


def render(doc: Mapping[str, Any] | None, *, alive: bool, directory: Path, now: datetime) -> str:
    if doc is None:
        return f"guardian daemon: NOT RUNNING - no status in {directory} (has `guardian run` ever run here?)"
    updated = str(doc.get("updated_at", "?"))
    if alive:
        head = f"guardian daemon: running (pid {doc.get('pid')}, since {doc.get('started_at')})"
    else:
        head = f"guardian daemon: NOT RUNNING - last status from {updated} (pid {doc.get('pid')}); it may be stale"
    lines = [
        head,
        f"  state     {doc.get('state')}   mode {doc.get('mode')}   slot {doc.get('slot')}   "
        f"score {doc.get('score')}/100",
        f"  summary   {doc.get('summary')}",
        f"  checked   {doc.get('last_check')}   last sweep {doc.get('last_sweep')}   updated {updated}",
    ]
    if doc.get("config_error"):
        lines.append(f"  CONFIG    {doc['config_error']}")
    findings = doc.get("findings") or []
    if findings:
        lines.append("  findings:")
        w = max(len(str(f.get("code"))) for f in findings)
        for f in findings:
            lines.append(
                f"    {f.get('level', '?'):<8}  {f.get('code', '?'):<{w}}  {f.get('subject')}  {f.get('message')}"
            )
    heals = doc.get("heals") or {}
    if any(heals.values()):
        lines.append("  heals     " + ", ".join(f"{k} {v}" for k, v in heals.items()))
    failing = {k: v for k, v in (doc.get("checks") or {}).items() if v.get("errors")}
    for name, c in failing.items():
        lines.append(f"  check {name} failing ({c.get('errors')} time(s)), retried after {c.get('backoff_until')}: "
                     f"{c.get('last_error')}")  # fmt: skip
    ev = doc.get("events") or {}
    if ev:
        lines.append(
            f"  events    {ev.get('seen', 0)} seen, {ev.get('evaluations', 0)} evaluations, "
            f"lag p50 {ev.get('lag_p50_ms')} ms p99 {ev.get('lag_p99_ms')} ms; watching {ev.get('watched', 0)} dirs"
        )
        if (ev.get("cpu_budget_ms") or 0) < 0:
            lines.append("            re-checks are spaced out: a busy file's checks used up daemon.cpu_percent")
    return "\n".join(lines)


def worst_level(findings: Sequence[Finding]) -> str | None:
    return max(findings, key=lambda f: f.level).level.name if findings else None


def level_counts(findings: Sequence[Finding]) -> dict[str, int]:
    c = Counter(f.level.name for f in findings)
    return {lv: c.get(lv, 0) for lv in (Level.CRITICAL.name, Level.HIGH.name, Level.MEDIUM.name, Level.LOW.name)}
