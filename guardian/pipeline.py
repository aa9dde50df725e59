"""One evaluation of the bot, the same for every command: the checks, then heal (or, looking only,
the plan of it), then verify, then the verdict, then the alerts. ``check``, ``heal`` and ``gate``
are each one call of :func:`run_once`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from guardian.alerts import Alert
from guardian.config import Config
from guardian.heal import HealResult, heal
from guardian.model import Outcome
from guardian.verdict import Verdict, judge


class Plan(enum.Enum):
    LOOK = "look"  # the checks and what a heal would do: nothing written, nobody told
    HEAL = "heal"  # the checks, the repairs, their verification; then the operator is told what changed


@dataclass(frozen=True)
class Evaluation:
    result: HealResult  # the checks before, the actions, the checks after
    verdict: Verdict
    alerts: tuple[Alert, ...] = ()  # what was sent


def run_once(cfg: Config, now: datetime, plan: Plan, *, stdout_free: bool = True) -> Evaluation:
    """Evaluate the bot once at ``now``. With HEAL, each heal and each finding that is new, due a
    reminder or resolved is sent (the alert engine's state is shared with the daemon); ``stdout_free``
    is False while stdout carries --json output."""
    mode, min_score = cfg.bot.mode, cfg.thresholds.min_health_score
    if plan is Plan.LOOK:
        result = heal(cfg, now=now, dry_run=True)
        return Evaluation(result, judge(result.after, result.actions, mode=mode, min_score=min_score))
    from guardian.alerts.build import build_alerter
    from guardian.alerts.engine import engine_for
    from guardian.checks.processes import LIVENESS_CODES
    from guardian.context import Context

    with engine_for(cfg, now) as engine:
        result = heal(cfg, now=now, budget=engine)
        alerts = [
            Alert.from_finding(a.finding, event="healed", now=now, message=a.detail)
            for a in result.actions
            if a.outcome is Outcome.HEALED
        ]
        if engine is None:  # its state cannot be had: tell everything rather than nothing
            alerts += [Alert.from_finding(f, event="firing", now=now) for f in result.after.findings]
        else:
            alerts += engine.evaluate(result.after.findings, unseen=LIVENESS_CODES)
    alerter = build_alerter(Context(cfg, now=now), stdout_free=stdout_free)
    for alert in alerts:
        alerter.emit(alert)
    verdict = judge(result.after, result.actions, mode=mode, min_score=min_score)
    return Evaluation(result, verdict, tuple(alerts))
