"""Alerts on stderr in the seeds' ``[LEVEL] CODE: message`` form (journald captures it)."""

from __future__ import annotations

import sys

from guardian.alerts import Alert


class StderrSink:
    name = "stderr"

    def emit(self, alert: Alert) -> None:
        print(alert.line(), file=sys.stderr, flush=True)
