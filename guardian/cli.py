"""``guardian --config FILE <command>``: parse, dispatch to the command's module, map errors.

Exit codes: check and status 0/1/2/3 (OK/WARNING/CRITICAL/UNKNOWN, as monitoring plugins; CRITICAL
too when a real-mode start would be refused; status UNKNOWN when its picture is stale); gate 0 allow,
1 refuse; 78 (EX_CONFIG) for an invalid config everywhere; heal 0 when nothing failed and no CRITICAL
remains, else 1; 130 on Ctrl-C. An error a command did not handle is one line on stderr (its
traceback too with ``--debug``) and the command's error exit: 3 (UNKNOWN) for check and status.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from guardian.commands import REGISTRY
from guardian.commands.base import Command
from guardian.config import EX_CONFIG, ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="guardian", description="Keeps a live trading bot's state sound and gates its start."
    )
    p.add_argument(
        "--config", metavar="FILE", help="config file (default: $GUARDIAN_CONFIG, else /etc/guardian/guardian.yaml)"
    )
    p.add_argument("--debug", action="store_true", help="on an unexpected error, print its traceback too")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in REGISTRY:
        sp = sub.add_parser(c.name, help=c.help, description=c.help)
        sp.set_defaults(command_obj=c)
        if c.json_flag:
            sp.add_argument("--json", action="store_true", help="print the full report as JSON")
        c.configure(sp)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Command = args.command_obj
    try:
        return int(command.run(args))
    except ConfigError as e:
        print(e.report(), file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        print(f"guardian {command.name}: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return command.error_exit
    except Exception as e:  # a bug: one line, never a traceback unless asked for
        print(f"guardian {command.name}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        else:
            print(f"guardian {command.name}: run with --debug for the traceback", file=sys.stderr)
        return command.error_exit


def entry() -> None:
    raise SystemExit(main())
