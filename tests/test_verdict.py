"""The one verdict (guardian/verdict.py): real mode is allowed on proof, never on the absence of a finding."""

from __future__ import annotations

from guardian.model import UNKNOWN, Fact, Finding, HealAction, Level, Outcome, Proof, Report
from guardian.verdict import REQUIRED, judge

ALL = tuple(Proof(f, f"{f.value} proven") for f in REQUIRED)
CORRUPT = Finding("STATE_FILE_CORRUPT", Level.HIGH, "logs/positions_futures.json", "is not valid JSON",
                  recoverable=True, concern=Fact.POSITIONS)  # fmt: skip


def report(*findings: Finding, proofs: tuple[Proof, ...] = ALL, incomplete: tuple[str, ...] = ()) -> Report:
    return Report(findings, "2026-11-21T12:00:00Z", "real", proofs, incomplete)


def without(*facts: Fact) -> tuple[Proof, ...]:
    return tuple(p for p in ALL if p.fact not in facts)


def test_every_fact_proven_and_nothing_found_is_allowed_with_the_evidence_in_the_reason() -> None:
    v = judge(report(), mode="real", min_score=50)
    assert v.sound and v.allowed and v.blockers == ()
    assert (
        v.reason()
        == "guardian gate: ALLOWED (real mode): state proven sound (positions proven; WAL proven); score 100/100"
    )


def test_no_finding_at_all_is_refused_when_a_fact_was_never_proven() -> None:
    v = judge(report(proofs=without(Fact.WAL)), mode="real", min_score=50)
    assert not v.allowed
    assert v.blockers == ("WAL not proven: check wal did not run to its proof (the data root may not be readable)",)


def test_a_check_that_raised_is_named_as_the_cause_of_its_fact_and_as_incomplete() -> None:
    v = judge(report(proofs=without(Fact.WAL), incomplete=("wal: OSError: EIO",)), mode="real", min_score=50)
    assert v.blockers == ("WAL not proven: check wal: OSError: EIO", "check wal: OSError: EIO did not complete")


def test_a_high_finding_that_leaves_its_fact_unproven_blocks_although_the_score_passes() -> None:
    v = judge(report(CORRUPT, proofs=without(Fact.POSITIONS, Fact.PORTFOLIO, Fact.LIMITS)), mode="real", min_score=50)
    assert v.score == 85
    assert not v.allowed
    assert v.blockers == (
        "positions (so portfolio, limits) not proven: STATE_FILE_CORRUPT logs/positions_futures.json: is not valid JSON",
    )


def test_a_failed_repair_is_the_cause_shown_before_the_finding_it_failed_on() -> None:
    failed = HealAction(CORRUPT, Outcome.FAILED, "the bot's lock logs/positions_futures.json.lock is held by pid 4242")
    v = judge(report(CORRUPT, proofs=without(Fact.POSITIONS)), [failed], mode="real", min_score=50)
    assert v.blockers[0] == (
        "positions not proven: repair failed: STATE_FILE_CORRUPT logs/positions_futures.json: "
        "the bot's lock logs/positions_futures.json.lock is held by pid 4242"
    )


def test_a_refused_or_failed_repair_of_something_no_fact_needs_still_blocks() -> None:
    temp = Finding("TEMP_FILE_LEFTOVER", Level.LOW, "logs/x.tmp", "a temp file", recoverable=True)
    refused = HealAction(temp, Outcome.REFUSED, "self-heal is disabled (heal.enabled: false)")
    v = judge(report(temp), [refused], mode="real", min_score=50)
    assert v.blockers == ("repair refused: TEMP_FILE_LEFTOVER logs/x.tmp: self-heal is disabled (heal.enabled: false)",)


def test_an_unknown_of_any_level_about_a_required_fact_blocks_even_with_its_fact_proven() -> None:
    low = Finding(UNKNOWN, Level.LOW, "wal:line3", "WAL line 3 has no id", concern=Fact.WAL)
    assert not judge(report(low), mode="real", min_score=0).allowed
    elsewhere = Finding(UNKNOWN, Level.HIGH, "deps:venv", "no virtualenv found")
    assert judge(report(elsewhere), mode="real", min_score=50).allowed


def test_a_critical_about_a_proven_fact_blocks_and_is_named() -> None:
    dup = Finding("POSITION_CONFLICT", Level.CRITICAL, "BTCUSDT/LONG", "2 open LONG positions", concern=Fact.POSITIONS)
    v = judge(report(dup), mode="real", min_score=0)
    assert v.blockers == ("POSITION_CONFLICT BTCUSDT/LONG: 2 open LONG positions",)


def test_the_score_alone_blocks_and_names_what_cost_the_points() -> None:
    drift = [Finding("CONFIG_DRIFT", Level.HIGH, f"config:{i}", "differs") for i in range(4)]
    v = judge(report(*drift), mode="real", min_score=50)
    assert v.score == 40
    assert v.blockers == (
        "health score 40 below 50: HIGH CONFIG_DRIFT config:0, HIGH CONFIG_DRIFT config:1, "
        "HIGH CONFIG_DRIFT config:2, HIGH CONFIG_DRIFT config:3",
    )


def test_paper_mode_always_starts_and_carries_what_real_mode_would_refuse() -> None:
    v = judge(report(proofs=without(Fact.DATA_ROOT)), mode="paper", min_score=50)
    assert v.allowed and not v.sound
    assert v.reason().startswith(
        "guardian gate: ALLOWED (paper mode always starts): real mode would be refused: data root not proven"
    )


def test_a_dry_run_whose_only_blockers_are_planned_repairs_is_pending_not_refused() -> None:
    planned = HealAction(CORRUPT, Outcome.PLANNED, "salvaged 1 open and 3 closed positions")
    v = judge(report(CORRUPT, proofs=without(Fact.POSITIONS)), [planned], mode="real", min_score=50)
    assert v.pending and not v.allowed
    assert v.reason().startswith("guardian gate: NOT YET PROVEN (real mode): the gate repairs first: positions")
    unplanned = judge(report(CORRUPT, proofs=without(Fact.POSITIONS)), mode="real", min_score=50)
    assert not unplanned.pending
