"""The ExecStartPre= policy: heal, then the verdict (``guardian.verdict``), as an exit code.

Paper mode always starts. Real mode starts only when, after healing, the state is proven sound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guardian.heal import HealResult
from guardian.verdict import Verdict, judge

EXIT_ALLOW, EXIT_REFUSE = 0, 1


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    result: HealResult

    @property
    def allowed(self) -> bool:
        return self.verdict.allowed

    @property
    def reason(self) -> str:
        """The one line an operator sees in `systemctl status tradingbot`."""
        return self.verdict.reason("gate")

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.verdict.blockers

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
            "verdict": self.verdict.to_json(),
            "heal": self.result.to_json(),
        }


def decide(result: HealResult, *, mode: str, min_score: int) -> Decision:
    return Decision(judge(result.after, result.actions, mode=mode, min_score=min_score), result)
