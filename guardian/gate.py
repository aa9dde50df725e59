"""The ExecStartPre= policy: validate, heal, decide.

Paper mode always starts. Real mode starts only when, after healing, no CRITICAL finding remains and
the health score is at least ``thresholds.min_health_score``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guardian.heal import HealResult

EXIT_ALLOW, EXIT_REFUSE = 0, 1


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # the one line an operator sees in `systemctl status tradingbot`
    reasons: tuple[str, ...]  # each blocking finding, for the alert log and --json
    result: HealResult

    @property
    def exit_code(self) -> int:
        return EXIT_ALLOW if self.allowed else EXIT_REFUSE

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "reasons": list(self.reasons),
            "score": self.result.after.score,
            "heal": self.result.to_json(),
        }


def decide(result: HealResult, *, mode: str, min_score: int) -> Decision:
    after = result.after
    crit = after.critical()
    score = after.score
    healed = sum(1 for a in result.actions if a.outcome.value == "healed")
    tail = f"score {score}/100" + (f", healed {healed}" if healed else "")
    reasons = tuple(f"{f.code} {f.subject}" for f in crit)
    if mode == "paper":
        worst = after.worst
        what = f"{len(after.findings)} finding(s) reported, worst {worst.name}" if worst else "state sound"
        return Decision(True, f"guardian gate: ALLOWED (paper mode always starts): {what}; {tail}", reasons, result)
    if crit:
        shown = "; ".join(reasons[:3]) + (f"; +{len(reasons) - 3} more" if len(reasons) > 3 else "")
        return Decision(
            False, f"guardian gate: REFUSED (real mode): {len(crit)} CRITICAL: {shown}; {tail}", reasons, result
        )
    if score < min_score:
        return Decision(
            False,
            f"guardian gate: REFUSED (real mode): health score {score} below {min_score}; {tail}",
            tuple(f"{f.code} {f.subject}" for f in after.findings),
            result,
        )
    return Decision(True, f"guardian gate: ALLOWED (real mode): no CRITICAL finding; {tail}", (), result)
