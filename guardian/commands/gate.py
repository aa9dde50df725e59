"""``guardian gate``: the bot unit's ExecStartPre=; exit 0 allows the start, 1 refuses it."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from guardian.commands.base import Command, load, print_json
from guardian.config import EX_CONFIG, ConfigError


def run(args: argparse.Namespace) -> int:
    from guardian.gate import run_gate

    try:
        cfg = load(args)
    except ConfigError as e:
        print(e.report(), file=sys.stderr)
        print("guardian gate: REFUSED: invalid config (exit 78)", file=sys.stderr)
        return EX_CONFIG
    decision = run_gate(cfg, datetime.now(UTC), stdout_free=not args.json)
    if args.json:
        print_json(decision.to_json())
    print(decision.reason, file=sys.stderr, flush=True)  # last: the line `systemctl status` shows
    return decision.exit_code


COMMANDS = (Command("gate", "ExecStartPre= of the bot: heal, then allow (0) or refuse (1) the start", run),)
