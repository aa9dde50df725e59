"""``guardian backups list|restore ID``: what guardian kept before changing a file; roll a heal back."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from guardian.commands.base import Command, load, print_json


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "restore"))
    p.add_argument("id", nargs="?", help="the backup to restore (from `backups list`)")


def run(args: argparse.Namespace) -> int:
    from guardian.backups import BackupStore
    from guardian.context import Context

    ctx = Context(load(args))
    store = BackupStore(ctx.data, ctx.backups_dir)
    if args.action == "list":
        items, problem = store.list_checked()
        if problem:
            print(f"guardian backups: warning: {problem}; checksums unknown", file=sys.stderr)
        if args.json:
            print_json([asdict(b) for b in items])
        elif not items:
            print(f"no backups in {ctx.backups_dir}")
        else:
            for b in items:
                print(f"  {b.ts}  {b.reason:<16} {b.size:>12}  {b.original:<36} {b.id}")
        return 0
    if not args.id:
        print("guardian backups restore: give the backup id (see `guardian backups list`)", file=sys.stderr)
        return 2
    if ctx.data_in_slot and ctx.slot.problem:  # the data root is wherever the link points: anywhere
        print(
            f"guardian backups restore: not restoring: deployment link {ctx.link} {ctx.slot.problem}", file=sys.stderr
        )
        return 1
    try:
        restored, previous = store.restore(
            args.id, lock_timeout=ctx.cfg.heal.lock_timeout, soft_lock=ctx.cfg.bot.lock_style == "soft"
        )
    except KeyError:
        print(f"guardian backups restore: no backup {args.id!r} in {ctx.backups_dir}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"guardian backups restore: {e}", file=sys.stderr)
        return 1
    out = {"restored": restored.id, "to": restored.original, "previous_kept_as": previous.id if previous else None}
    if args.json:
        print_json(out)
    else:
        print(
            f"restored {restored.original} from {restored.id}"
            + (f"; the file it replaced is kept as {previous.id}" if previous else "")
        )
    return 0


COMMANDS = (Command("backups", "list or restore the backups guardian keeps before changing a file", run, configure),)
