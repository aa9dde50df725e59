"""``guardian heal``: repair what is safe, verify, and tell the operator; ``--dry-run`` the plan only."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from guardian.commands.base import Command, load, print_json


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")


def run(args: argparse.Namespace) -> int:
    from guardian.pipeline import Plan, run_once

    plan = Plan.LOOK if args.dry_run else Plan.HEAL
    result = run_once(load(args), datetime.now(UTC), plan, stdout_free=not args.json).result
    out = result.to_json()
    if args.json:
        print_json(out)
    else:
        print(
            f"guardian heal{' --dry-run' if args.dry_run else ''}: "
            f"{'success' if result.success else 'NOT healthy'} - score {result.before.score} -> {result.after.score}"
        )
        for key in ("planned", "healed", "failed", "refused", "critical"):
            for line in out[key]:
                print(f"  {key.upper():<8}  {line}")
    return 0 if result.success or args.dry_run else 1


COMMANDS = (Command("heal", "repair what is safe to repair, then verify", run, configure),)
