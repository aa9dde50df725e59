"""``guardian emergency-stop`` and ``guardian clear-stop``: the bot's kill switch, audited."""

from __future__ import annotations

import argparse

from guardian.commands.base import Command, load, print_json


def _stop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", required=True)


def _clear_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--approver", required=True)


def run(args: argparse.Namespace) -> int:
    from guardian.alerts import Alert, iso
    from guardian.alerts.build import build_alerter
    from guardian.context import Context
    from guardian.state import load_json_object
    from guardian.stop import clear_stop, set_stop

    ctx = Context(load(args))
    now, subject = ctx.now, ctx.rel(ctx.stop_path)
    if args.command == "emergency-stop":
        set_stop(ctx, args.reason, by="operator", now=now)
        alert = Alert(
            ts=iso(now), level="CRITICAL", code="EMERGENCY_STOP_SET", subject=subject,
            message=f"emergency stop activated: {args.reason}", action_required=True, event="firing",
            context={"reason": args.reason},
        )  # fmt: skip
    else:
        clear_stop(ctx, args.approver, now=now)
        alert = Alert(
            ts=iso(now), level="INFO", code="EMERGENCY_STOP_CLEARED", subject=subject,
            message=f"emergency stop cleared by {args.approver}", action_required=False, event="resolved",
            context={"approver": args.approver},
        )  # fmt: skip
    build_alerter(ctx, stdout_free=not args.json).emit(alert)
    if args.json:
        print_json(load_json_object(ctx.stop_path, required=(), max_bytes=1 << 20).data)
    return 0


COMMANDS = (
    Command("emergency-stop", "activate the bot's kill switch", run, _stop_args),
    Command("clear-stop", "clear the kill switch, recording who approved", run, _clear_args),
)
