"""What every command shares: its declaration, the config it loads, and the output helpers."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from guardian import config as config_mod
from guardian.config import Config
from guardian.model import EXIT_UNKNOWN

if TYPE_CHECKING:
    from guardian.model import Finding, Report
    from guardian.verdict import Verdict


def _nothing(_: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class Command:
    """One ``guardian <name>``. ``run`` returns the exit code; ``configure`` adds its arguments.
    ``error_exit``: what an error it did not handle exits with (UNKNOWN for what monitoring runs)."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    configure: Callable[[argparse.ArgumentParser], None] = _nothing
    json_flag: bool = True
    error_exit: int = 1


MONITORED = EXIT_UNKNOWN  # a monitoring plugin's answer when it could not look


def load(args: argparse.Namespace) -> Config:
    return config_mod.load(config_mod.resolve_path(args.config))


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def finding_rows(findings: Sequence[Finding]) -> list[str]:
    if not findings:
        return []
    w = max(len(f.code) for f in findings)
    ws = min(40, max(len(f.subject) for f in findings))
    return [f"  {f.level.name:<8}  {f.code:<{w}}  {f.subject:<{ws}}  {f.message}" for f in findings]


def summary(report: Report, what: str) -> str:
    status = report.worst.name if report.worst else "OK"
    return (
        f"guardian {what}: {status} - score {report.score}/100, {len(report.findings)} finding(s), mode {report.mode}"
    )


def verdict_lines(verdict: Verdict) -> list[str]:
    """What the gate would decide, as ``check`` shows it."""
    if verdict.sound:
        return ["  real-mode start: allowed: state proven sound"]
    from guardian.verdict import SHOWN

    head = "after the planned repairs, judged again" if verdict.pending else "REFUSED"
    return [f"  real-mode start: {head}", *(f"    {b}" for b in verdict.blockers[: SHOWN * 2])]
