"""The positions as the bot layout holds them: every record judged, never guessed (docs/bot-layout.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from guardian.checks import run_checks
from guardian.config import load
from guardian.context import Context
from guardian.demo import BotTree, build_bot_tree, iso_z
from guardian.model import UNKNOWN, Fact, Level, Report
from guardian.verdict import judge
from tests.conftest import NOW, read_json, write_json
from tests.test_checks import POS, add_closed, closed_position, position

Check = Callable[..., Report]


@pytest.fixture
def tree_at_now(tmp_path: Path) -> BotTree:
    return build_bot_tree(tmp_path / "bot", now=NOW)


@pytest.fixture
def check(make_config: Callable[..., Path]) -> Check:
    def run(t: BotTree, *, extra: Mapping[str, Any] | None = None) -> Report:
        return run_checks(Context(load(make_config(t, mode="real", extra=extra)), now=NOW))

    return run


def set_open(t: BotTree, *opens: dict[str, Any]) -> None:
    doc = read_json(t.positions)
    doc["open_positions"] = list(opens)
    write_json(t.positions, doc)
    pf = read_json(t.portfolio)
    pf["open_positions_count"] = len(opens)
    write_json(t.portfolio, pf)


def found(report: Report, code: str) -> list[tuple[Level, str, str]]:
    return [(f.level, f.subject, f.message) for f in report.findings if f.code == code]


def allowed(report: Report) -> bool:
    return judge(report, mode="real", min_score=50).allowed


# --- the same trade twice ------------------------------------------------------------------------


def test_an_id_both_open_and_closed_is_a_critical_conflict(tree_at_now: BotTree, check: Check) -> None:
    add_closed(tree_at_now, closed_position("pos-open-000001", iso_z(NOW - timedelta(days=1)), 12.0))
    report = check(tree_at_now)
    assert found(report, "POSITION_CONFLICT") == [
        (
            Level.CRITICAL,
            "position:pos-open-000001",
            "position pos-open-000001 is both open and closed: the bot may trade a position it already closed, "
            "or lost a close",
        )
    ]
    assert not allowed(report)


def test_an_id_open_and_closed_is_found_when_the_file_escapes_it(tree_at_now: BotTree, check: Check) -> None:
    # `\u0070os` is `pos`: a byte search for the id's literal would miss it, so the ids are decoded.
    add_closed(tree_at_now, closed_position("other", iso_z(NOW - timedelta(days=1)), 1.0))
    raw = tree_at_now.positions.read_bytes().replace(b'"other"', b'"\\u0070os-open-000001"')
    tree_at_now.positions.write_bytes(raw)
    assert [s for _, s, _ in found(check(tree_at_now), "POSITION_CONFLICT")] == ["position:pos-open-000001"]


def test_an_id_that_only_appears_inside_a_closed_positions_notes_is_no_conflict(
    tree_at_now: BotTree, check: Check
) -> None:
    note = {**closed_position("pos-x", iso_z(NOW - timedelta(days=1)), 1.0), "notes": "pos-open-000001"}
    add_closed(tree_at_now, note)
    assert found(check(tree_at_now), "POSITION_CONFLICT") == []


@pytest.mark.parametrize(
    ("symbol", "direction"), [(" btcusdt", "LONG"), ("BTCUSDT ", "long"), ("btcUSDT", " Long ")], ids=str
)
def test_duplicates_are_found_on_the_symbol_and_direction_as_the_exchange_reads_them(
    tree_at_now: BotTree, check: Check, symbol: str, direction: str
) -> None:
    set_open(
        tree_at_now, position("pos-a", size=0.001), position("pos-b", symbol=symbol, direction=direction, size=0.001)
    )
    conflicts = found(check(tree_at_now), "POSITION_CONFLICT")
    assert [(lv, s) for lv, s, _ in conflicts] == [(Level.CRITICAL, "BTCUSDT/LONG")]


# --- the stop loss, the leverage and the opening time ---------------------------------------------


@pytest.mark.parametrize(
    ("direction", "entry", "stop"),
    [("LONG", 50000.0, 50000.0), ("LONG", 50000.0, 51000.0), ("SHORT", 3000.0, 3000.0), ("SHORT", 3000.0, 2900.0)],
    ids=["long-at-entry", "long-above", "short-at-entry", "short-below"],
)
def test_a_stop_loss_on_the_wrong_side_of_the_entry_is_critical(
    tree_at_now: BotTree, check: Check, direction: str, entry: float, stop: float
) -> None:
    set_open(tree_at_now, position("pos-a", direction=direction, entry_price=entry, stop_loss=stop, size=0.001,
                            order={"status": "filled", "qty": 0.001}))  # fmt: skip
    report = check(tree_at_now)
    (got,) = found(report, "STOP_LOSS_WRONG_SIDE")
    assert got[:2] == (Level.CRITICAL, "position:pos-a")
    assert f"its stop loss {stop:g} at or {'above' if direction == 'LONG' else 'below'} the entry" in got[2]
    assert not allowed(report)


def test_a_stop_trailed_into_profit_is_allowed_where_the_config_says_the_bot_trails(
    tree_at_now: BotTree, check: Check
) -> None:
    set_open(tree_at_now, position("pos-a", entry_price=50000.0, stop_loss=50500.0))
    assert found(check(tree_at_now), "STOP_LOSS_WRONG_SIDE")
    assert found(check(tree_at_now, extra={"limits": {"stop_loss_past_entry": True}}), "STOP_LOSS_WRONG_SIDE") == []


def test_a_stop_on_the_losing_side_is_no_finding(tree_at_now: BotTree, check: Check) -> None:
    report = check(tree_at_now)  # the default LONG at 50000 with its stop at 49000
    assert found(report, "STOP_LOSS_WRONG_SIDE") == []
    assert allowed(report)


def test_leverage_above_the_limit_is_critical_and_at_the_limit_is_not(tree_at_now: BotTree, check: Check) -> None:
    set_open(tree_at_now, position("pos-a", leverage=126))
    assert [(lv, s) for lv, s, _ in found(check(tree_at_now), "LIMIT_LEVERAGE")] == [(Level.CRITICAL, "position:pos-a")]
    set_open(tree_at_now, position("pos-a", leverage=125))
    assert found(check(tree_at_now), "LIMIT_LEVERAGE") == []
    assert found(check(tree_at_now, extra={"limits": {"max_leverage": 20}}), "LIMIT_LEVERAGE")


def test_leverage_below_one_is_an_invalid_position(tree_at_now: BotTree, check: Check) -> None:
    set_open(tree_at_now, position("pos-a", leverage=0.5))
    assert [s for _, s, _ in found(check(tree_at_now), "POSITION_INVALID")] == ["position:pos-a"]


def test_a_position_opened_in_the_future_beyond_the_clock_skew_is_invalid(tree_at_now: BotTree, check: Check) -> None:
    set_open(tree_at_now, position("pos-a", opened_at=iso_z(NOW + timedelta(minutes=5))))
    (got,) = found(check(tree_at_now), "POSITION_INVALID")
    assert got[:2] == (Level.CRITICAL, "position:pos-a")
    assert "is 5 min in the future (clock skew allowed 60s)" in got[2]
    set_open(tree_at_now, position("pos-a", opened_at=iso_z(NOW + timedelta(seconds=30))))
    assert found(check(tree_at_now), "POSITION_INVALID") == []


# --- every closed record judged ------------------------------------------------------------------


def _unjudged(report: Report) -> list[str]:
    return [f.message for f in report.findings if f.code == UNKNOWN and f.concern is Fact.POSITIONS]


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("pnl", "12.5", "#1: pnl '12.5' is not a number"),
        ("pnl", None, "#1: pnl None is not a number"),
        ("pnl", True, "#1: pnl True is not a number"),
        ("closed_at", 1763726400000, "#1: closed_at 1763726400000 is not an ISO 8601 UTC time or Unix seconds"),
        ("closed_at", "21/11/2026 09:00", "#1: closed_at '21/11/2026 09:00' is not an ISO 8601 UTC time"),
        ("closed_at", "2026-13-45T99:99:99Z", "#1: closed_at '2026-13-45T99:99:99Z' is not an ISO 8601 UTC time"),
        ("closed_at", None, "#1: closed_at missing or null is not an ISO 8601 UTC time or Unix seconds"),
    ],
    ids=[
        "pnl-string",
        "pnl-null",
        "pnl-bool",
        "closed-at-epoch-ms",
        "closed-at-local",
        "closed-at-garbage",
        "closed-at-null",
    ],
)
def test_a_closed_record_that_cannot_be_read_as_the_layout_says_is_a_critical_unknown(
    tree_at_now: BotTree, check: Check, field: str, value: object, said: str
) -> None:
    good = closed_position("pos-c0", iso_z(NOW - timedelta(days=1)), 5.0)
    bad = {**closed_position("pos-c1", iso_z(NOW - timedelta(hours=1)), -900.0), field: value}
    add_closed(tree_at_now, good, bad)
    report = check(tree_at_now)
    (message,) = _unjudged(report)
    assert message.startswith("1 of 2 closed position(s) cannot be judged (")
    assert said in message
    assert [f.level for f in report.findings if f.code == UNKNOWN] == [Level.CRITICAL]
    assert not allowed(report)
    assert report.proven(Fact.POSITIONS) is None and report.proven(Fact.LIMITS) is None


def test_a_null_among_the_closed_positions_leaves_the_open_ones_judged(tree_at_now: BotTree, check: Check) -> None:
    # A position 470x over the size limit with no stop loss, beside one null in the closed list:
    # the typed decode fails on the null, and the open positions must still be judged.
    huge = position("pos-huge", size=10.0, stop_loss=None, order={"status": "filled", "qty": 10.0})
    set_open(tree_at_now, huge)
    doc = read_json(tree_at_now.positions)
    doc["closed_positions"] = [closed_position("pos-c0", iso_z(NOW - timedelta(days=1)), 1.0), None]
    write_json(tree_at_now.positions, doc)
    report = check(tree_at_now)
    codes = {f.code for f in report.findings}
    assert {"LIMIT_POSITION_SIZE", "STOP_LOSS_MISSING", UNKNOWN} <= codes
    assert "STATE_FILE_MALFORMED" not in codes
    (message,) = _unjudged(report)
    assert "#1: null is not a position object" in message


def test_a_loss_today_written_in_a_readable_record_still_breaks_the_limit_beside_an_unreadable_one(
    tree_at_now: BotTree, check: Check
) -> None:
    today = iso_z(NOW - timedelta(hours=1))
    add_closed(
        tree_at_now, closed_position("pos-l", today, -900.0), {**closed_position("pos-u", today, 1.0), "pnl": "x"}
    )
    report = check(tree_at_now)
    assert [s for _, s, _ in found(report, "LIMIT_DAILY_LOSS")] == [POS]
    assert _unjudged(report)


def test_a_closed_at_with_an_offset_counts_on_its_utc_day(tree_at_now: BotTree, check: Check) -> None:
    # 23:30 at -05:00 is 04:30 UTC the next day: NOW's day, when NOW is 12:00 UTC.
    day_before = (NOW - timedelta(days=1)).date().isoformat()
    add_closed(tree_at_now, closed_position("pos-l", f"{day_before}T23:30:00-05:00", -900.0))
    assert found(check(tree_at_now), "LIMIT_DAILY_LOSS")


def test_a_closed_at_in_unix_seconds_is_judged(tree_at_now: BotTree, check: Check) -> None:
    add_closed(tree_at_now, closed_position("pos-l", (NOW - timedelta(hours=1)).timestamp(), -900.0))
    report = check(tree_at_now)
    assert found(report, "LIMIT_DAILY_LOSS")
    assert _unjudged(report) == []


def test_a_sound_file_proves_positions_portfolio_and_limits_with_their_evidence(
    tree_at_now: BotTree, check: Check
) -> None:
    add_closed(tree_at_now, closed_position("pos-c0", iso_z(NOW - timedelta(days=1)), 5.0))
    report = check(tree_at_now)
    positions, portfolio = report.proven(Fact.POSITIONS), report.proven(Fact.PORTFOLIO)
    assert positions is not None and positions.evidence == "1 open and 1 closed position(s) judged"
    assert portfolio is not None and portfolio.evidence == "portfolio counts 1 open, as the positions file holds"
    assert report.proven(Fact.LIMITS) is not None
    assert allowed(report)


def test_when_the_decode_is_memoised_the_same_records_are_judged(tree_at_now: BotTree) -> None:
    from guardian.state import ClosedMemo, load_positions

    add_closed(tree_at_now, {**closed_position("pos-u", iso_z(NOW), 1.0), "pnl": "x"})
    plain = load_positions(tree_at_now.positions, today=NOW.date().isoformat(), max_bytes=1 << 30)[1]
    memo = ClosedMemo()
    for _ in range(2):
        memoised = load_positions(tree_at_now.positions, today=NOW.date().isoformat(), max_bytes=1 << 30, memo=memo)[1]
        assert plain is not None and memoised is not None
        assert (
            (memoised.closed_unjudged, memoised.unjudged)
            == (plain.closed_unjudged, plain.unjudged)
            == (
                1,
                ("#0: pnl 'x' is not a number",),
            )
        )


def test_the_clock_read_once_is_the_days_boundary(tree_at_now: BotTree, make_config: Callable[..., Path]) -> None:
    # A loss at 23:59:59 UTC counts on its day, not the next one's.
    late = NOW.replace(hour=23, minute=59, second=59)
    add_closed(tree_at_now, closed_position("pos-l", iso_z(late), -900.0))
    cfg = load(make_config(tree_at_now, mode="real"))
    on_the_day = run_checks(Context(cfg, now=late.replace(second=59)))
    next_day = run_checks(Context(cfg, now=late + timedelta(seconds=1)))
    assert found(on_the_day, "LIMIT_DAILY_LOSS") and not found(next_day, "LIMIT_DAILY_LOSS")
