"""Every check guardian runs, in order. To add one: write ``checks/<family>.py`` with a function
``(ctx) -> Iterable[Finding | Proof]`` and list it in CHECKS. Checks only read; remedies live in
``heal/``. A check that establishes a fact real mode needs yields its Proof last, on its one
successful path: a check that raises proves nothing (its findings so far stand, with an UNKNOWN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from guardian.checks import (
    data_root,
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
from guardian.model import Finding, Level, Proof, Report


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], Iterable[Finding | Proof]]
    needs_data: bool  # reads the data root, which does not exist while the slot link is broken
    daemon_only: bool = False  # judges a running bot: before the gate lets it start, it is not running


CHECKS: tuple[Check, ...] = (
    Check("slot", slot.check_link, needs_data=False),
    Check("slot_config", slot.check_config_drift, needs_data=False),
    Check("slot_state", slot.check_previous_slot_state, needs_data=True),
    Check("dependencies", dependencies.check, needs_data=False),
    Check("data_root", data_root.check, needs_data=True),
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


@dataclass(frozen=True)
class Ran:
    """One check's answer: its findings, the facts it proved, and the exception that cut it short."""

    findings: list[Finding]
    proofs: list[Proof]
    error: Exception | None = None


def run_check(check: Check, ctx: Context) -> Ran:
    """Run one check. One that raises keeps the findings it made, gains an UNKNOWN, and proves nothing."""
    findings: list[Finding] = []
    proofs: list[Proof] = []
    try:
        for item in check.run(ctx):
            if isinstance(item, Proof):
                proofs.append(item)
            else:
                findings.append(item)
    except Exception as e:  # a bug or an unexpected OS error in one check must not hide the others
        why = f"check {check.name!r} failed: {type(e).__name__}: {e}"
        return Ran([*findings, unknown(f"check:{check.name}", why, Level.HIGH)], [], e)
    return Ran(findings, proofs)


def run_checks(ctx: Context, *, daemon: bool = False) -> Report:
    """Run every check once (``daemon``: the running bot's checks too)."""
    findings: list[Finding] = []
    proofs: list[Proof] = []
    incomplete: list[str] = []
    readable = data_readable(ctx)
    for check in CHECKS:
        if (check.needs_data and not readable) or (check.daemon_only and not daemon):
            continue
        ran = run_check(check, ctx)
        findings += ran.findings
        proofs += ran.proofs
        if ran.error is not None:
            incomplete.append(f"{check.name}: {type(ran.error).__name__}: {ran.error}")
    checked_at = ctx.now.isoformat().replace("+00:00", "Z")
    return Report(tuple(findings), checked_at, ctx.mode, tuple(proofs), tuple(incomplete))
