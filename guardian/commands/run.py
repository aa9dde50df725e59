"""``guardian run``: the daemon (systemd Type=notify); SIGHUP reloads, SIGTERM stops."""

from __future__ import annotations

import argparse

from guardian import config as config_mod
from guardian.commands.base import Command


def run(args: argparse.Namespace) -> int:
    from guardian.daemon.loop import run as run_daemon

    return run_daemon(config_mod.resolve_path(args.config))


COMMANDS = (
    Command(
        "run", "the daemon: watch the bot, heal and alert until stopped (systemd Type=notify)", run, json_flag=False
    ),
)
