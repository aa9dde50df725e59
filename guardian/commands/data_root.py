"""``guardian accept-data-root --by NAME``: record the data root as it is now as the bot's own,
on an operator's word (after a real move of the volume, or a lost gate history)."""

from __future__ import annotations

import argparse

from guardian.commands.base import Command, load, print_json


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", required=True, help="who checked that the bot's data volume is the one mounted")


def run(args: argparse.Namespace) -> int:
    from guardian.alerts import Alert, iso
    from guardian.alerts.build import build_alerter
    from guardian.context import Context
    from guardian.history import accept_data_root, data_root_identity, state_dir

    ctx = Context(load(args))
    identity = data_root_identity(ctx.data)
    was = accept_data_root(state_dir(ctx.cfg), identity=identity, by=args.by, now=ctx.now).data_root
    text = (
        f"data root {ctx.data} accepted by {args.by} (device {identity.dev:#x}, fsid {identity.fsid:#x}"
        + (f"; it was device {was.dev:#x}, fsid {was.fsid:#x} at {was.path}" if was else "")
        + ")"
    )
    build_alerter(ctx, stdout_free=not args.json).emit(
        Alert(
            ts=iso(ctx.now),
            level="INFO",
            code="DATA_ROOT_ACCEPTED",
            subject=ctx.rel(ctx.data),
            message=text,
            action_required=False,
            event="resolved",
            context={"by": args.by},
        )
    )
    if args.json:
        print_json({"accepted": str(ctx.data), "by": args.by})
    else:
        print(text)
    return 0


COMMANDS = (
    Command("accept-data-root", "record the data root as it is now as the bot's (after a real move)", run, configure),
)
