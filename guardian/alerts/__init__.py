"""Alerts: one record per finding, heal or gate decision, sent to every sink.

To add a sink (journald, a webhook, ...): a class with ``emit(alert)`` in ``alerts/<name>.py``,
added in :func:`build_alerter`. A sink that fails is reported on stderr and never stops the others.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from guardian.model import Finding


@dataclass(frozen=True, kw_only=True)
class Alert:
    ts: str  # ISO 8601 UTC
    level: str  # CRITICAL, HIGH, MEDIUM, LOW, or INFO for decisions that need nothing
    code: str
    subject: str
    message: str
    action_required: bool
    event: str  # firing, healed, gate
    context: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_finding(cls, f: Finding, *, event: str, now: datetime, message: str | None = None) -> Alert:
        ctx = dict(f.context)
        if f.action:
            ctx["action"] = f.action
        return cls(
            ts=iso(now),
            level=f.level.name,
            code=f.code,
            subject=f.subject,
            message=message or f.message,
            action_required=not f.recoverable and event == "firing",
            event=event,
            context=ctx,
        )

    def line(self) -> str:
        """The seeds' human form: ``[LEVEL] CODE: message [ACTION REQUIRED] | k=v``."""
        text = f"[{self.level}] {self.code}: {self.message}"
        if self.action_required:
            text += " [ACTION REQUIRED]"
        if self.context:
            text += " | " + ", ".join(f"{k}={v}" for k, v in self.context.items())
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "level": self.level,
            "code": self.code,
            "subject": self.subject,
            "message": self.message,
            "action_required": self.action_required,
            "event": self.event,
            "context": dict(self.context),
        }


def fingerprint(code: str, subject: str) -> str:
    """What identifies an alert across runs and sinks: its code and subject."""
    return f"{code}:{subject}"


def iso(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AlertSink(Protocol):
    name: str

    def emit(self, alert: Alert) -> None: ...


class Alerter:
    """Fans alerts out to the sinks; a failing sink is a warning, never a failed run."""

    def __init__(self, sinks: Sequence[AlertSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, alert: Alert) -> None:
        for sink in self.sinks:
            try:
                sink.emit(alert)
            except Exception as e:  # any sink failure, by contract, must not stop the others
                print(f"guardian: warning: alert sink {sink.name} failed: {type(e).__name__}: {e}", file=sys.stderr)
