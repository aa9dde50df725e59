"""``guardian alerts``: read the alert log, rotated files included, filtered; ``--follow`` to tail it."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta

from guardian import config as config_mod
from guardian.commands.base import Command, load


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=config_mod.parse_duration, help="only the last 30m, 2h, ...")
    p.add_argument("--level", type=str.upper, choices=("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"), help="and worse")
    p.add_argument("--code", help="only this code (a glob such as 'HEARTBEAT_*' works)")
    p.add_argument("--last", type=int, metavar="N", help="only the last N alerts that match")
    p.add_argument("--follow", "-f", action="store_true", help="then print new alerts as they are written")


def run(args: argparse.Namespace) -> int:
    from guardian.alerts.reader import AlertFilter, ReadStats, follow, format_table, read_alerts
    from guardian.context import Context

    ctx = Context(load(args))
    since = timedelta(seconds=args.since) if args.since is not None else None
    flt = AlertFilter(since=since, level=args.level, code=args.code, now=ctx.now)
    stats = ReadStats()

    def warn_skipped(reported: int) -> int:
        if stats.skipped > reported:
            print(f"guardian alerts: {stats.skipped} unreadable line(s) skipped in {ctx.alerts_path}*", file=sys.stderr)
        return stats.skipped

    if args.follow:  # until Ctrl-C (exit 130); rows as they come, with widths that do not depend on them
        if not args.json:
            print(format_table([], fixed=True), flush=True)
        reported = 0
        for doc in follow(ctx.alerts_path, flt, history=True, last=args.last, stats=stats):
            print(json.dumps(doc) if args.json else format_table([doc], header=False, fixed=True), flush=True)
            reported = warn_skipped(reported)
        return 0
    result = read_alerts(ctx.alerts_path, flt, last=args.last, stats=stats)
    warn_skipped(0)
    if args.json:
        for doc in result.alerts:
            print(json.dumps(doc))
    elif result.alerts:
        print(format_table(result.alerts))
    else:
        matching = args.since is not None or args.level or args.code
        print(f"no alerts{' matching' if matching else ''} in {ctx.alerts_path}")
    return 0


COMMANDS = (
    Command("alerts", "read the alert log, rotated files included (--json: one object per line)", run, configure),
)
