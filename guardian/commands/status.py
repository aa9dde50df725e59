"""``guardian status``: what the daemon sees now, from its status file; STALE (exit 3) when the
picture is old: the daemon gone, stopped, or silent for two sweeps."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from guardian.commands.base import MONITORED, Command, load, print_json


def run(args: argparse.Namespace) -> int:
    from guardian.daemon import status
    from guardian.history import state_dir

    cfg = load(args)
    directory = state_dir(cfg)
    try:
        snapshot = status.load(directory)
    except status.StatusUnreadable as e:
        if args.json:
            print_json({"running": False, "stale": True, "stale_reasons": [str(e)], "state_dir": str(directory),
                        "status": None})  # fmt: skip
        else:
            print(f"guardian daemon: UNKNOWN - {e}")
        return MONITORED
    live = status.assess(snapshot.status, now=datetime.now(UTC), sweep=cfg.daemon.sweep) if snapshot else None
    if args.json:
        print_json(
            {
                "running": live is not None and live.running,
                "stale": live is not None and bool(live.stale),
                "stale_reasons": list(live.stale) if live else [],
                "state_dir": str(directory),
                "status": snapshot.doc if snapshot else None,
            }
        )
    else:
        print(status.render(snapshot, live, directory=directory))
    return status.exit_code(snapshot, live)


COMMANDS = (
    Command(
        "status",
        "what the daemon sees now, from its status file (exit as check; 3: stale or not running)",
        run,
        error_exit=MONITORED,
    ),
)
