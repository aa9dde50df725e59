"""``guardian silence add|list|remove``: mute an alert for a while. A silence mutes; it never makes
anything safe: a silenced CRITICAL still blocks the gate."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec

from guardian import config as config_mod
from guardian.commands.base import Command, load, print_json


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("add", "list", "remove"))
    p.add_argument("target", nargs="?", help="add: CODE or CODE:SUBJECT; remove: the silence id")
    p.add_argument("--for", dest="duration", type=config_mod.parse_duration, help="how long, e.g. 30m, 2h")
    p.add_argument("--reason", help="why (shown in `silence list`)")


def _until(t: float) -> str:
    return f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M}Z"


def run(args: argparse.Namespace) -> int:
    from guardian.alerts.engine import add_silence, live_silences, remove_silence
    from guardian.history import state_dir

    directory = state_dir(load(args))
    now = datetime.now(UTC)
    out: Any
    if args.action == "add":
        if not args.target or args.duration is None or not args.reason:
            print("guardian silence add CODE[:SUBJECT] --for 2h --reason TEXT", file=sys.stderr)
            return 2
        s = add_silence(directory, args.target, seconds=args.duration, reason=args.reason, now=now)
        out, text = msgspec.structs.asdict(s), f"silenced {args.target} until {_until(s.until)} (id {s.id})"
    elif args.action == "remove":
        if not remove_silence(directory, args.target or ""):
            print(f"guardian silence remove: no silence {args.target!r}", file=sys.stderr)
            return 1
        out, text = {"removed": args.target}, f"removed silence {args.target}"
    else:
        live = live_silences(directory, now)
        out = [msgspec.structs.asdict(s) for s in live]
        rows = [
            f"  {s.id}  {s.code}{':' + s.subject if s.subject else ''}  until {_until(s.until)}  {s.reason}"
            for s in live
        ]
        text = "\n".join(rows) or "no silences"
    if args.json:
        print_json(out)
    else:
        print(text)
    return 0


COMMANDS = (Command("silence", "mute an alert (a silenced CRITICAL still blocks the gate)", run, configure),)
