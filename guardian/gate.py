"""The ExecStartPre= policy: one evaluation that heals, then its verdict as an exit code.

Paper mode always starts. Real mode starts only when, after healing, the state is proven sound
(``guardian.verdict``). Whatever goes wrong inside, the gate answers: paper starts, real refuses.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from guardian.config import Config
from guardian.pipeline import Evaluation, Plan, run_once

EXIT_ALLOW, EXIT_REFUSE = 0, 1


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # the one line an operator sees in `systemctl status tradingbot`
    reasons: tuple[str, ...]  # every blocker, for the alert log and --json
    evaluation: Evaluation | None  # None when guardian itself failed

    @property
    def exit_code(self) -> int:
        return EXIT_ALLOW if self.allowed else EXIT_REFUSE

    def to_json(self) -> dict[str, Any]:
        ev = self.evaluation
        return {
            "allowed": self.allowed,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "reasons": list(self.reasons),
            "score": ev.result.after.score if ev else None,
            "verdict": ev.verdict.to_json() if ev else None,
            "heal": ev.result.to_json() if ev else None,
        }


def run_gate(cfg: Config, now: datetime, *, stdout_free: bool = True) -> Decision:
    """Decide a start at ``now``, count the decision, and tell the operator (a GATE_ alert)."""
    try:
        ev = run_once(cfg, now, Plan.HEAL, stdout_free=stdout_free)
    except Exception as e:  # the gate must answer; paper mode always starts, real mode fails safe
        allowed = cfg.bot.mode == "paper"
        reason = (
            f"guardian gate: {'ALLOWED' if allowed else 'REFUSED'} ({cfg.bot.mode} mode): guardian failed: "
            f"{type(e).__name__}: {e}"
        )
        _record(cfg, allowed=allowed, reason=reason, now=now, sound=False)
        return Decision(allowed, reason, (reason,), None)
    v = ev.verdict
    decision = Decision(v.allowed, v.reason("gate"), v.blockers, ev)
    _record(cfg, allowed=decision.allowed, reason=decision.reason, now=now, sound=v.sound)
    _tell(cfg, decision, now, stdout_free=stdout_free)
    return decision


def _tell(cfg: Config, d: Decision, now: datetime, *, stdout_free: bool) -> None:
    from guardian.alerts import Alert, iso
    from guardian.alerts.build import build_alerter
    from guardian.context import Context

    score = d.evaluation.result.after.score if d.evaluation else None
    build_alerter(Context(cfg, now=now), stderr=False, stdout_free=stdout_free).emit(
        Alert(
            ts=iso(now),
            level="INFO" if d.allowed else "CRITICAL",
            code="GATE_ALLOWED" if d.allowed else "GATE_REFUSED",
            subject=cfg.bot.unit,
            message=d.reason,
            action_required=not d.allowed,
            event="gate",
            context={"mode": cfg.bot.mode, "score": score, "reasons": list(d.reasons)},
        )
    )


def _record(cfg: Config, *, allowed: bool, reason: str, now: datetime, sound: bool) -> None:
    """Count the decision for the daemon's metrics and, on an allowed start whose state was proven
    sound, the data root's filesystem (a later start on another is DATA_ROOT_CHANGED). A failure to
    record never changes the decision."""
    from guardian.context import Context
    from guardian.history import data_root_identity, record_decision, state_dir

    identity = None
    if allowed and sound:
        try:
            identity = data_root_identity(Context(cfg, now=now).data)
        except OSError:
            identity = None
    try:
        record_decision(state_dir(cfg), allowed=allowed, mode=cfg.bot.mode, reason=reason, now=now, data_root=identity)
    except OSError as e:
        print(f"guardian gate: warning: decision not counted in {state_dir(cfg)}: {e}", file=sys.stderr)
