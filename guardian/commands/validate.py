"""``guardian validate-config``: the config alone; exit 78 (EX_CONFIG) with every problem if invalid."""

from __future__ import annotations

import argparse

from guardian import config as config_mod
from guardian.commands.base import Command, print_json


def run(args: argparse.Namespace) -> int:
    path = config_mod.resolve_path(args.config)
    cfg = config_mod.load(path)
    if args.json:
        print_json({"valid": True, "path": str(path), "mode": cfg.bot.mode, "home": str(cfg.bot.home)})
    else:
        print(f"{path}: valid (mode {cfg.bot.mode}, home {cfg.bot.home})")
    return 0


COMMANDS = (Command("validate-config", "check the config and nothing else (exit 78 if invalid)", run),)
