"""What every remedy gets, and the shapes of their answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from guardian.backups import BackupStore
from guardian.context import Context
from guardian.model import Finding, HealAction, Outcome


@dataclass
class HealContext:
    ctx: Context
    store: BackupStore
    dry_run: bool
    extra_findings: list[Finding] = field(default_factory=list)  # raised by refusals (STATE_UNRECOVERABLE)
    # A dry run's planned positions file: what the portfolio's plan then counts, as the real run would.
    planned_positions: dict[str, Any] | None = None

    @property
    def lock_timeout(self) -> float:
        return self.ctx.cfg.heal.lock_timeout

    @property
    def soft_locks(self) -> bool:
        return self.ctx.cfg.bot.lock_style == "soft"


Remedy = Callable[[HealContext, Finding], HealAction]


def planned(f: Finding, detail: str) -> HealAction:
    return HealAction(f, Outcome.PLANNED, detail)


def refused(f: Finding, detail: str) -> HealAction:
    return HealAction(f, Outcome.REFUSED, detail)


def failed(f: Finding, detail: str) -> HealAction:
    return HealAction(f, Outcome.FAILED, detail)
