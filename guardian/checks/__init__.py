"""Every check guardian runs, in order. To add one: write ``checks/<family>.py`` with a function
``(ctx) -> Iterable[Finding]`` and list it in CHECKS. Checks only read; remedies live in ``heal/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from guardian.checks import (
    dependencies,
    heartbeats,
    limits,
    locks,
    positions,
    processes,
    slot,
    state_files,
    trade_store,
    wal,
)
from guardian.checks.base import unknown
from guardian.context import Context
from guardian.model import Finding, Level, Report


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], Iterable[Finding]]
    needs_data: bool  # reads the data root, which does not exist while the slot link is broken
    daemon_only: bool = False  # judges a running bot: before the gate lets it start, it is not running


CHECKS: tuple[Check, ...] = (
    Check("slot", slot.check_link, needs_data=False),
    Check("slot_config", slot.check_config_drift, needs_data=False),
    Check("slot_state", slot.check_previous_slot_state, needs_data=True),
    Check("dependencies", dependencies.check, needs_data=False),
    Check("directories", state_files.check_directories, needs_data=True),
    Check("state_files", state_files.check_state_files, needs_data=True),
    Check("temp_files", state_files.check_temp_files, needs_data=True),
    Check("writable", state_files.check_writable, needs_data=True),
    Check("disk", state_files.check_disk, needs_data=True),
    Check("positions", positions.check, needs_data=True),
    Check("limits", limits.check_limits, needs_data=True),
    Check("emergency_stop", limits.check_emergency_stop, needs_data=True),
    Check("wal", wal.check, needs_data=True),
    Check("heartbeats", heartbeats.check, needs_data=True),
    Check("locks", locks.check, needs_data=True),
    Check("processes", processes.check, needs_data=False),
    Check("trade_store", trade_store.check, needs_data=True),
    Check("liveness", processes.check_liveness, needs_data=False, daemon_only=True),
)


def data_readable(ctx: Context) -> bool:
    return not (ctx.data_in_slot and ctx.slot.problem)


def run_check(check: Check, ctx: Context) -> tuple[list[Finding], Exception | None]:
    """One check's findings. One that raises gives an UNKNOWN finding and the exception, never a traceback."""
    try:
        return list(check.run(ctx)), None
    except Exception as e:  # a bug or an unexpected OS error in one check must not hide the others
        return [unknown(f"check:{check.name}", f"check {check.name!r} failed: {type(e).__name__}: {e}", Level.HIGH)], e


def run_checks(ctx: Context, *, daemon: bool = False) -> Report:
    """Run every check once (``daemon``: the running bot's checks too)."""
    findings: list[Finding] = []
    readable = data_readable(ctx)
    for check in CHECKS:
        if (check.needs_data and not readable) or (check.daemon_only and not daemon):
            continue
        findings.extend(run_check(check, ctx)[0])
    return Report(tuple(findings), ctx.now.isoformat().replace("+00:00", "Z"), ctx.mode)
