"""The sinks a config asks for, chosen so each alert reaches the journal once."""

from __future__ import annotations

import os
import sys

from guardian.alerts import Alerter, AlertSink
from guardian.alerts.jsonl import JsonlSink
from guardian.alerts.stderr import StderrSink
from guardian.context import Context
from guardian.history import data_root_moved


def build_alerter(ctx: Context, *, stderr: bool | None = None, stdout_free: bool = True) -> Alerter:
    """``stderr``: override ``alerts.stderr``; ``stdout_free``: False while stdout carries --json output."""
    a = ctx.cfg.alerts
    max_bytes = max(1, int(a.jsonl_max_mb * 1024 * 1024))
    # The log's directory is made when missing, except in a data root on another filesystem than the
    # bot ran on: the bare mount point of an unmounted volume must not start a fresh layout.
    create = not (ctx.alerts_path.is_relative_to(ctx.data) and data_root_moved(ctx.cfg, ctx.data))
    sinks: list[AlertSink] = [JsonlSink(ctx.alerts_path, max_bytes=max_bytes, keep=a.jsonl_keep, create_dir=create)]
    journal = False
    if a.journald:
        from guardian.alerts.journald import JournaldSink, StdoutPrioritySink

        if JournaldSink.available(a.journald_socket):
            sinks.append(JournaldSink(a.journald_socket))
            journal = True
        elif os.environ.get("JOURNAL_STREAM") and stdout_free:
            # No socket (a container), but stdout is a journal stream: journald reads the <N> prefix.
            sinks.append(StdoutPrioritySink())
            journal = True
    # Under systemd stderr lands in the journal too; the human lines there would be duplicates.
    if (a.stderr if stderr is None else stderr) and (not journal or sys.stderr.isatty()):
        sinks.append(StderrSink())
    if a.command:
        from guardian.alerts.command import CommandSink

        sinks.append(CommandSink(a.command, a.command_timeout))
    if a.webhook:
        from guardian.alerts.webhook import WebhookSink

        sinks.append(WebhookSink(a.webhook, a.webhook_timeout, a.webhook_retries))
    return Alerter(sinks)
