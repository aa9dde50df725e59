"""The one verdict on whether the bot may start, for ``gate``, ``check`` and ``status``.

Real mode is an allow-list: a start is allowed only when, in one evaluation after healing,

- every fact in REQUIRED was proven by the check that reads it (``model.Proof``),
- every check ran to completion,
- no UNKNOWN of any level concerns a required fact,
- every repair the state needed was made and verified (one that failed, was refused or was
  skipped blocks, whatever the finding's level),
- no CRITICAL remains, and the health score is at least ``thresholds.min_health_score``.

Anything else refuses, and the reason names what could not be proven and why. Paper mode always
starts, and carries the same verdict for the operator to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from guardian.model import UNKNOWN, Fact, Finding, HealAction, Level, Outcome, Proof, Report, health_score

REQUIRED: tuple[Fact, ...] = (
    Fact.SLOT,
    Fact.DATA_ROOT,
    Fact.POSITIONS,
    Fact.PORTFOLIO,
    Fact.LIMITS,
    Fact.WAL,
    Fact.EMERGENCY_STOP,
    Fact.WRITABLE,
    Fact.DISK_SPACE,
)
# The check that proves each fact, to name the one that did not complete.
PROVED_BY: dict[Fact, str] = {
    Fact.SLOT: "slot",
    Fact.DATA_ROOT: "data_root",
    Fact.POSITIONS: "positions",
    Fact.PORTFOLIO: "positions",
    Fact.LIMITS: "limits",
    Fact.WAL: "wal",
    Fact.EMERGENCY_STOP: "emergency_stop",
    Fact.WRITABLE: "writable",
    Fact.DISK_SPACE: "disk",
}
# A fact judged from another: unproven with it, and then named beside it, not on a line of its own.
DEPENDS: dict[Fact, tuple[Fact, ...]] = {
    Fact.PORTFOLIO: (Fact.POSITIONS,),
    Fact.LIMITS: (Fact.POSITIONS, Fact.PORTFOLIO),
}
SHOWN = 3  # blockers named in the one-line reason; --json has them all
_CUT = 280  # a blocker in the one-line reason; --json and `check` show it whole


@dataclass(frozen=True)
class Verdict:
    mode: str
    _: KW_ONLY
    sound: bool  # real mode's allow-list holds
    blockers: tuple[str, ...]  # why not, root causes first
    proofs: tuple[Proof, ...]
    score: int
    healed: int = 0
    # Dry run (`check`): the repairs the gate would make first. When they alone stand in the way,
    # the gate's answer depends on how they go.
    planned: tuple[str, ...] = ()
    pending: bool = False

    @property
    def allowed(self) -> bool:
        return self.mode == "paper" or self.sound

    def reason(self, what: str = "gate") -> str:
        """The one line an operator sees (``systemctl status``): the decision and why."""
        tail = f"score {self.score}/100" + (f", healed {self.healed}" if self.healed else "")
        why = _shown(self.blockers)
        if self.mode == "paper":
            state = "state proven sound" if self.sound else f"real mode would be refused: {why}"
            return f"guardian {what}: ALLOWED (paper mode always starts): {state}; {tail}"
        if self.sound:
            return f"guardian {what}: ALLOWED (real mode): state proven sound ({self._evidence()}); {tail}"
        if self.pending:
            return f"guardian {what}: NOT YET PROVEN (real mode): the gate repairs first: {why}; {tail}"
        return f"guardian {what}: REFUSED (real mode): {why}; {tail}"

    def _evidence(self) -> str:
        shown = [p.evidence for p in self.proofs if p.fact in (Fact.POSITIONS, Fact.WAL)]
        return "; ".join(shown) or "every fact proven"

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "allowed": self.allowed,
            "sound": self.sound,
            "pending": self.pending,
            "blockers": list(self.blockers),
            "proofs": {p.fact.value: p.evidence for p in self.proofs},
            "unproven": [f.value for f in REQUIRED if not any(p.fact is f for p in self.proofs)],
            "planned": list(self.planned),
            "score": self.score,
        }


def _shown(items: Sequence[str]) -> str:
    cut = [i if len(i) <= _CUT else i[: _CUT - 1] + "…" for i in items[:SHOWN]]
    more = f"; +{len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return "; ".join(cut) + more


def _blocks(f: Finding) -> bool:
    return f.level is Level.CRITICAL or (f.code == UNKNOWN and f.concern in REQUIRED)


@dataclass(frozen=True)
class _Cause:
    text: str
    blocks: bool  # on its own, whatever the proofs say
    planned: bool = False  # a repair the gate would make (dry run)


def _causes(report: Report, actions: Sequence[HealAction]) -> tuple[dict[Fact | None, list[_Cause]], list[str]]:
    """What stands in the way, by the fact it concerns (None: no fact), repairs first; and the plans."""
    causes: dict[Fact | None, list[_Cause]] = {None: [], **{fact: [] for fact in Fact}}
    planned: list[str] = []
    tried = set()
    # A refusal that raised its own CRITICAL (STATE_UNRECOVERABLE) is said by that finding.
    said = {f.subject for f in report.findings if f.code == "STATE_UNRECOVERABLE"}
    for a in actions:
        f = a.finding
        if a.outcome is Outcome.HEALED:
            continue
        tried.add(f.key)
        if a.outcome is Outcome.REFUSED and f.subject in said:
            continue
        if a.outcome is Outcome.PLANNED:
            planned.append(f"{f.code} {f.subject}: {a.detail}")
            causes[f.concern].append(_Cause(f"repair planned: {a.detail}", True, planned=True))
        else:
            how = "failed" if a.outcome is Outcome.FAILED else "refused"
            causes[f.concern].append(_Cause(f"repair {how}: {f.code} {f.subject}: {a.detail}", True))
    for f in sorted(report.findings, key=lambda f: -f.level):
        if f.key in tried and not _blocks(f):
            continue  # its repair's outcome says it
        # "CODE subject: message", or "CODE message" where the message names its subject first.
        text = (
            f"{f.code} {f.message}" if f.message.startswith(f"{f.subject} ") else f"{f.code} {f.subject}: {f.message}"
        )
        causes[f.concern].append(_Cause(text, _blocks(f)))
    return causes, planned


def judge(report: Report, actions: Sequence[HealAction] = (), *, mode: str, min_score: int) -> Verdict:
    """The verdict on ``report`` (the state after healing, or as it is for a dry run) and the repairs
    tried (or planned) on it."""
    causes, planned = _causes(report, actions)
    unfinished = list(report.incomplete)
    found = _fact_blockers(causes, {p.fact for p in report.proofs}, unfinished)
    found += [c for c in causes[None] if c.blocks]
    found += [_Cause(f"check {c} did not complete", True) for c in unfinished]
    if report.score < min_score and not found:  # with other blockers the score only repeats them
        found.append(_score_blocker(report, actions, min_score))
    blockers = tuple(c.text for c in found)
    return Verdict(
        mode,
        sound=not blockers,
        blockers=blockers,
        proofs=report.proofs,
        score=report.score,
        healed=sum(1 for a in actions if a.outcome is Outcome.HEALED),
        planned=tuple(planned),
        pending=bool(found) and all(c.planned for c in found),
    )


def _fact_blockers(causes: dict[Fact | None, list[_Cause]], proven: set[Fact], unfinished: list[str]) -> list[_Cause]:
    """Each required fact not proven, with its first cause; and what blocks about a proven one."""
    found: list[_Cause] = []
    for fact in REQUIRED:
        mine = causes[fact]
        if fact in proven:
            found += [c for c in mine if c.blocks]  # proven, yet something CRITICAL about it (a duplicate)
            continue
        if not mine and any(d not in proven for d in DEPENDS.get(fact, ())):
            continue  # named beside the fact it depends on
        first = mine[0] if mine else _Cause(_why_unproven(fact, unfinished), True)
        text = f"{fact.value}{_dependents(fact, proven, causes)} not proven: {first.text}"
        found.append(_Cause(text, True, planned=first.planned))
        found += [c for c in mine[1:] if c.blocks]
    return found


def _score_blocker(report: Report, actions: Sequence[HealAction], min_score: int) -> _Cause:
    costly = ", ".join(f"{f.level.name} {f.code} {f.subject}" for f in sorted(report.findings, key=lambda f: -f.level))
    # A dry run: what is left once the planned repairs are made is what the gate will judge.
    planned = {a.finding.key for a in actions if a.outcome is Outcome.PLANNED}
    left = health_score(f for f in report.findings if f.key not in planned)
    return _Cause(f"health score {report.score} below {min_score}: {costly}", True, planned=left >= min_score)


def _dependents(fact: Fact, proven: set[Fact], causes: dict[Fact | None, list[_Cause]]) -> str:
    def first_unproven(on: tuple[Fact, ...]) -> Fact | None:
        return next((f for f in on if f not in proven), None)

    deps = [d for d, on in DEPENDS.items() if first_unproven(on) is fact and d not in proven and not causes[d]]
    return f" (so {', '.join(d.value for d in deps)})" if deps else ""


def _why_unproven(fact: Fact, incomplete: Sequence[str]) -> str:
    check = PROVED_BY[fact]
    failed = next((c for c in incomplete if c.startswith(f"{check}:")), None)
    if failed is not None:
        return f"check {failed}"
    return f"check {check} did not run to its proof (the data root may not be readable)"
