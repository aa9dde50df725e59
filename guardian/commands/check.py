"""``guardian check``: read-only; the findings, the repairs the gate would plan, and its verdict."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from guardian.commands.base import MONITORED, Command, finding_rows, load, print_json, summary, verdict_lines


def run(args: argparse.Namespace) -> int:
    from guardian.model import monitoring_exit
    from guardian.pipeline import Plan, run_once

    cfg = load(args)
    ev = run_once(cfg, datetime.now(UTC), Plan.LOOK)
    report, verdict = ev.result.after, ev.verdict
    code = monitoring_exit(
        report.findings, start_refused=cfg.bot.mode == "real" and not verdict.sound and not verdict.pending
    )
    if args.json:
        print_json({**report.to_json(), "verdict": verdict.to_json(), "exit_code": code})
    else:
        print(summary(report, "check"))
        for line in [*finding_rows(report.findings), *verdict_lines(verdict)]:
            print(line)
    return code


COMMANDS = (
    Command(
        "check",
        "run every check once, read-only, with the gate's verdict (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
        run,
        error_exit=MONITORED,
    ),
)
