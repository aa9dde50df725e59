"""The sinks a config asks for."""

from __future__ import annotations

from guardian.alerts import Alerter, AlertSink
from guardian.alerts.jsonl import JsonlSink
from guardian.alerts.stderr import StderrSink
from guardian.context import Context


def build_alerter(ctx: Context, *, stderr: bool | None = None) -> Alerter:
    sinks: list[AlertSink] = [JsonlSink(ctx.alerts_path)]
    if ctx.cfg.alerts.stderr if stderr is None else stderr:
        sinks.append(StderrSink())
    return Alerter(sinks)
