"""Pure data: severities, findings, reports and heal outcomes. No I/O here."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class Level(enum.IntEnum):
    """Severity of a finding, ordered so that ``max()`` gives the worst."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


# Points a finding takes off the health score of 100 (documented in the README).
SCORE_PENALTY: Mapping[Level, int] = {Level.CRITICAL: 50, Level.HIGH: 15, Level.MEDIUM: 5, Level.LOW: 1}

# The exit codes of `guardian check`, as monitoring plugins (Nagios, Icinga, Sensu) read them.
EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_UNKNOWN = 0, 1, 2, 3

UNKNOWN = "UNKNOWN"


class Fact(enum.Enum):
    """What a real-mode start needs proven, each by a check that read and judged it whole.

    A check yields a :class:`Proof` of its fact as the last step of its one successful path, so a
    check that returns early, raises or could not read something proves nothing, and the verdict
    refuses: a start is allowed on proof, never on the absence of a finding.
    """

    SLOT = "slot"
    POSITIONS = "positions"
    PORTFOLIO = "portfolio"
    LIMITS = "limits"
    WAL = "WAL"
    EMERGENCY_STOP = "emergency stop"
    DATA_ROOT = "data root"
    WRITABLE = "state writable"  # the bot can save its state, and guardian its backups and alerts
    DISK_SPACE = "disk space"


@dataclass(frozen=True)
class Proof:
    """A fact a check established, with the evidence an operator can read (``3 open, 1000 closed judged``)."""

    fact: Fact
    evidence: str


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the bot, as an operator needs to read it.

    ``code`` is stable (alerts, silences and tests key on it); ``subject`` names the file, lock,
    component or position it is about, so ``(code, subject)`` identifies the finding.
    """

    code: str
    level: Level
    subject: str
    message: str
    recoverable: bool = False
    action: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    # The fact this finding leaves unproven (a corrupt positions file: POSITIONS), for the verdict's reason.
    concern: Fact | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.code, self.subject)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "level": self.level.name,
            "subject": self.subject,
            "message": self.message,
            "recoverable": self.recoverable,
            "action_required": not self.recoverable,
            "action": self.action,
            "context": dict(self.context),
            "concern": self.concern.value if self.concern else None,
        }


def health_score(findings: Iterable[Finding]) -> int:
    """Return 100 minus each finding's penalty, floored at 0."""
    return max(0, 100 - sum(SCORE_PENALTY[f.level] for f in findings))


def monitoring_exit(findings: Iterable[Finding], *, start_refused: bool = False) -> int:
    """The monitoring-plugin exit code of an evaluation, the one mapping ``check`` and the daemon's
    ``status`` share: CRITICAL for a known CRITICAL, or a real-mode start the gate would refuse;
    UNKNOWN for a finding that could not be decided (it may hide something worse than a WARNING);
    WARNING for any other finding; OK for none."""
    fs = list(findings)
    if start_refused or any(f.level is Level.CRITICAL and f.code != UNKNOWN for f in fs):
        return EXIT_CRITICAL
    if any(f.code == UNKNOWN for f in fs):
        return EXIT_UNKNOWN
    return EXIT_WARNING if fs else EXIT_OK


@dataclass(frozen=True)
class Report:
    """The result of one run of every check."""

    findings: tuple[Finding, ...]
    checked_at: str
    mode: str
    proofs: tuple[Proof, ...] = ()
    # Checks that did not run to completion (raised, or could not run): "positions: OSError: ...".
    incomplete: tuple[str, ...] = ()

    def proven(self, fact: Fact) -> Proof | None:
        return next((p for p in self.proofs if p.fact is fact), None)

    @property
    def score(self) -> int:
        return health_score(self.findings)

    @property
    def worst(self) -> Level | None:
        return max((f.level for f in self.findings), default=None)

    def critical(self) -> list[Finding]:
        return [f for f in self.findings if f.level is Level.CRITICAL]

    def to_json(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at,
            "mode": self.mode,
            "score": self.score,
            "status": self.worst.name if self.worst else "OK",
            "findings": [f.to_json() for f in self.findings],
            "proofs": {p.fact.value: p.evidence for p in self.proofs},
            "incomplete": list(self.incomplete),
        }


class Outcome(enum.Enum):
    HEALED = "healed"
    FAILED = "failed"  # the remedy ran (or tried to) and the finding is still there
    REFUSED = "refused"  # healing would be unsafe: left to the operator
    PLANNED = "planned"  # dry run: what would be done


@dataclass(frozen=True)
class HealAction:
    """What a remedy did (or would do) about one finding."""

    finding: Finding
    outcome: Outcome
    detail: str
    stat: str | None = None  # which counter of the seeds' `stats` this bumps when healed
    backups: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.finding.code,
            "subject": self.finding.subject,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "backups": list(self.backups),
        }
