"""The closed-list memo of ``load_positions``: a memoised read answers exactly what a plain read does,
for sound files and hostile ones alike, and skips decoding a closed list it has seen byte for byte.

Real files in tmp_path; every comparison is of the whole answer (``Loaded`` and ``Positions``) by
repr, so a NaN P&L compares equal to itself and a dict's key order counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardian import state
from guardian.demo import build_bot_tree, default_open_position, iso_z
from guardian.state import ClosedMemo, FileState, Loaded, Positions, load_positions
from tests.conftest import NOW

TODAY = NOW.date().isoformat()
TOMORROW = (NOW + timedelta(days=1)).date().isoformat()
MAX = 64 << 20

Read = tuple[Loaded, Positions | None]


def read(path: Path, *, today: str = TODAY, memo: ClosedMemo | None = None) -> Read:
    return load_positions(path, today=today, max_bytes=MAX, memo=memo)


def same(memo: ClosedMemo, path: Path, *, today: str = TODAY) -> Read:
    """Read with the memo, assert it answers what a plain read answers, and return that answer."""
    got = read(path, today=today, memo=memo)
    assert repr(got) == repr(read(path, today=today))
    return got


def closed(i: int, closed_at: Any = "2026-11-01T10:00:00Z", pnl: Any = -1.5) -> dict[str, Any]:
    return {"id": f"pos-closed-{i:06d}", "symbol": "BTCUSDT", "pnl": pnl, "closed_at": closed_at}


def doc(opens: list[Any] | None = None, closes: list[Any] | None = None) -> dict[str, Any]:
    return {
        "open_positions": [default_open_position(NOW)] if opens is None else opens,
        "closed_positions": [closed(i) for i in range(5)] if closes is None else closes,
    }


def write(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")  # NaN as Python writes it
    return path


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return write(tmp_path / "positions_futures.json", doc())


@pytest.fixture
def tallies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The lengths of the closed lists judged, one entry per judging pass."""
    seen: list[int] = []
    real = state._tally

    def counting(closed: Any, today: str) -> state.Tally:
        seen.append(len(closed))
        return real(closed, today)

    monkeypatch.setattr(state, "_tally", counting)
    yield seen


def test_a_memoised_read_of_a_demo_tree_equals_the_plain_read(tmp_path: Path) -> None:
    t = build_bot_tree(tmp_path / "bot", now=NOW, closed=300)
    memo = ClosedMemo()
    loaded, positions = same(memo, t.positions)
    assert loaded.state is FileState.OK
    assert positions is not None and positions.closed_count == 300
    assert memo.last is not None and memo.last[2] == (300, 0.0, 0, ())
    same(memo, t.positions)


def test_a_byte_identical_closed_list_is_not_decoded_again(path: Path, tallies: list[int]) -> None:
    memo = ClosedMemo()
    same(memo, path)
    assert tallies == [5, 5]  # the memoised read, then the plain one
    tallies.clear()
    read(path, memo=memo)
    assert tallies == []


def test_the_memo_answers_with_its_stored_tally_while_the_closed_bytes_match(path: Path) -> None:
    memo = ClosedMemo()
    read(path, memo=memo)
    assert memo.last is not None
    memo.last = (memo.last[0], memo.last[1], (999, 12.5, 7, ("#3: pnl 'x' is not a number",)))
    _, positions = read(path, memo=memo)
    assert positions is not None
    assert (positions.closed_count, positions.today_pnl, positions.closed_unjudged, positions.unjudged) == (
        999,
        12.5,
        7,
        ("#3: pnl 'x' is not a number",),
    )


def test_a_new_open_position_with_the_same_closed_list_reuses_the_tally(path: Path, tallies: list[int]) -> None:
    memo = ClosedMemo()
    read(path, memo=memo)
    opens = [default_open_position(NOW), {**default_open_position(NOW), "id": "pos-open-000002"}]
    write(path, doc(opens=opens))
    tallies.clear()
    _, positions = read(path, memo=memo)
    assert tallies == []
    assert positions is not None and [p["id"] for p in positions.open] == ["pos-open-000001", "pos-open-000002"]
    same(memo, path)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda c: c.__setitem__(2, closed(2, pnl=-1.25)), id="one-pnl-changed"),
        pytest.param(lambda c: c.append(closed(5, closed_at=iso_z(NOW), pnl=3.0)), id="one-appended"),
        pytest.param(lambda c: c.pop(), id="one-removed"),
    ],
)
def test_a_changed_closed_list_is_judged_again(
    path: Path, tallies: list[int], change: Callable[[list[Any]], object]
) -> None:
    memo = ClosedMemo()
    before = read(path, memo=memo)
    closes = [closed(i) for i in range(5)]
    change(closes)
    write(path, doc(closes=closes))
    tallies.clear()
    after = same(memo, path)
    assert tallies[0] == len(closes)  # the memoised read judged the new list
    assert repr(after) != repr(before)
    assert memo.last is not None and memo.last[2][0] == len(closes)


def test_a_tally_judged_for_one_day_is_not_reused_on_another(path: Path) -> None:
    write(path, doc(closes=[closed(0, closed_at=f"{TODAY}T09:00:00Z", pnl=-40.0), closed(1)]))
    memo = ClosedMemo()
    _, on_the_day = same(memo, path, today=TODAY)
    _, next_day = same(memo, path, today=TOMORROW)
    _, back = same(memo, path, today=TODAY)
    assert on_the_day is not None and next_day is not None and back is not None
    assert (on_the_day.today_pnl, next_day.today_pnl, back.today_pnl) == (-40.0, 0.0, -40.0)


def test_each_read_returns_a_fresh_open_list(path: Path) -> None:
    memo = ClosedMemo()
    _, first = read(path, memo=memo)
    _, second = read(path, memo=memo)
    assert first is not None and second is not None
    assert first.open is not second.open
    first.open.clear()
    assert len(second.open) == 1


def test_a_closed_list_over_the_cap_is_not_kept(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memo = ClosedMemo()
    read(path, memo=memo)
    assert memo.last is not None
    monkeypatch.setattr(ClosedMemo, "MAX_BYTES", 100)
    write(path, doc(closes=[closed(i) for i in range(6)]))
    same(memo, path)
    assert memo.last is None


def test_a_broken_file_holding_the_memoised_closed_list_answers_as_a_plain_read(path: Path) -> None:
    """A memo primed with the very closed list a broken file still holds must not make it sound."""
    memo = ClosedMemo()
    read(path, memo=memo)
    good = path.read_bytes()
    path.write_bytes(good.replace(b'"open_positions": [', b'"open_positions": [NaN, ', 1))
    loaded, _ = same(memo, path)
    assert loaded.state is FileState.OK  # NaN is judged per position, as a plain read does
    path.write_bytes(good[:-3])
    loaded, _ = same(memo, path)
    assert loaded.state is FileState.CORRUPT
    path.write_bytes(good)
    assert same(memo, path)[0].ok


class _Recording:
    """A stand-in for the split decoder that records the size of each document it is given."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.sizes: list[int] = []

    def decode(self, raw: bytes) -> Any:
        self.sizes.append(len(raw))
        return self.real.decode(raw)


@pytest.mark.parametrize("sep", [(b": ", b"}"), (b" :\n  ", b"\n}\n"), (b":", b"} \t\r\n")])
def test_a_file_ending_with_the_memoised_closed_list_decodes_only_what_comes_before_it(
    path: Path, tallies: list[int], monkeypatch: pytest.MonkeyPatch, sep: tuple[bytes, bytes]
) -> None:
    memo = ClosedMemo()
    read(path, memo=memo)
    assert memo.last is not None
    closed_bytes = memo.last[0]
    colon, end = sep
    opens = json.dumps([default_open_position(NOW), {**default_open_position(NOW), "id": "pos-open-000002"}])
    path.write_bytes(b'{"open_positions": ' + opens.encode() + b', "closed_positions"' + colon + closed_bytes + end)
    spy = _Recording(state._SPLIT_DECODER)
    monkeypatch.setattr(state, "_SPLIT_DECODER", spy)
    tallies.clear()
    _, positions = read(path, memo=memo)
    assert tallies == [] and spy.sizes and max(spy.sizes) < len(closed_bytes), spy.sizes
    assert positions is not None and len(positions.open) == 2
    same(memo, path)


def test_the_memoised_closed_list_as_the_value_of_another_key_is_not_taken_for_the_closed_list(path: Path) -> None:
    memo = ClosedMemo()
    read(path, memo=memo)
    assert memo.last is not None
    closed_bytes = memo.last[0]
    path.write_bytes(b'{"closed_positions": [], "open_positions": ' + closed_bytes + b"}")
    _, positions = same(memo, path)
    assert positions is not None and positions.closed_count == 0 and len(positions.open) == 5
    # ... nor as the value of a closed_positions key one level down.
    path.write_bytes(b'{"open_positions": [{"closed_positions": ' + closed_bytes + b'}], "closed_positions": []}')
    _, positions = same(memo, path)
    assert positions is not None and positions.closed_count == 0


DUP = b'{"open_positions": [], "closed_positions": %s, "closed_positions": [{"pnl": 1, "closed_at": "%s"}]}'


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"open_positions": [], "closed_positions": [', id="corrupt"),
        pytest.param(b'{"open_positions": [], "closed_positions": []} []', id="trailing-garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(b"  {} \n", id="empty-object"),
        pytest.param(b"[]", id="a-list"),
        pytest.param(b'"positions"', id="a-string"),
        pytest.param(b'{"open_positions": []}', id="closed-missing"),
        pytest.param(b'{"closed_positions": []}', id="open-missing"),
        pytest.param(b'{"open_positions": [], "closed_positions": 5}', id="closed-a-number"),
        pytest.param(b'{"open_positions": [], "closed_positions": {"pnl": 1}}', id="closed-an-object"),
        pytest.param(b'{"open_positions": [], "closed_positions": [5]}', id="closed-entry-a-number"),
        pytest.param(b'{"open_positions": 5, "closed_positions": []}', id="open-a-number"),
        pytest.param(b'{"open_positions": [], "closed_positions": [{"pnl": NaN, "closed_at": "%s"}]}', id="nan-pnl"),
        pytest.param(b'{"open_positions": [], "closed_positions": [{"pnl": 1e999, "closed_at": "%s"}]}', id="huge-pnl"),
        pytest.param(
            b'{"open_positions": [], "closed_positions": [{"pnl": 1, "closed_at": "%s\xff"}]}', id="utf8-closed-at"
        ),
        pytest.param(
            b'{"open_positions": [], "closed_positions": [{"pnl": 1, "note": "\xff\xfe"}]}', id="utf8-unknown"
        ),
        pytest.param(b'{"open_positions": [{"n": "\xff"}], "closed_positions": []}', id="utf8-open"),
        pytest.param(b'{"open_positions": [], "x": "\xff", "closed_positions": []}', id="utf8-top-level"),
        pytest.param(DUP % (b"5", TODAY.encode()), id="repeated-key-first-a-number"),
        pytest.param(DUP % (b'[{"closed_at": "\xff"}]', TODAY.encode()), id="repeated-key-first-bad-utf8"),
        pytest.param(DUP % (b'[{"pnl": 2, "closed_at": "%s"}]', TODAY.encode()), id="repeated-key-both-sound"),
        pytest.param(
            b'{"open_positions": [], "closed\\u005fpositions": 5, "closed_positions": []}', id="repeated-key-escaped"
        ),
        pytest.param(
            b'{"closed_positions": [{"pnl": 1, "closed_at": "%s"}], "open_positions": [{"a": "\\"q\\""}]}',
            id="closed-first-and-an-escape",
        ),
        pytest.param(
            b'{"open_positions": [], "closed_positions": [{"pnl": 1, "closed_at": "%s"}], "closed_positions": 5}',
            id="repeated-key-last-a-number",
        ),
    ],
)
def test_a_memoised_read_answers_what_a_plain_read_does(path: Path, raw: bytes) -> None:
    memo = ClosedMemo()
    read(path, memo=memo)  # primed with another file's closed list
    path.write_bytes(raw.replace(b"%s", TODAY.encode()))
    same(memo, path)
    same(memo, path)  # and again, with whatever the first read left in the memo


@pytest.mark.parametrize("where", ["closed-pnl", "closed-unknown", "open"])
def test_nesting_around_the_decoders_depth_limit_answers_as_plain(path: Path, where: str) -> None:
    def nested(depth: int) -> bytes:
        deep = b"[" * depth + b"]" * depth
        if where == "open":
            return b'{"open_positions": [%s], "closed_positions": []}' % deep
        field = b"pnl" if where == "closed-pnl" else b"extra"
        return b'{"open_positions": [], "closed_positions": [{"closed_at": "%s", "%s": %s}]}' % (
            TODAY.encode(),
            field,
            deep,
        )

    lo, hi = 1, 20_000  # the shallowest nesting a plain read refuses lies in (lo, hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        path.write_bytes(nested(mid))
        if read(path)[0].ok:
            lo = mid
        else:
            hi = mid
    path.write_bytes(nested(hi))
    assert "too deep" in read(path)[0].detail
    memo = ClosedMemo()
    for depth in range(max(hi - 4, 1), hi + 4):
        path.write_bytes(nested(depth))
        got = _shallow(read(path, memo=memo))
        assert got == _shallow(read(path))
        assert got == _shallow(read(path, memo=memo))


def _shallow(r: Read) -> tuple[str, Any]:
    """A read as comparable text without recursing into a deep open position (repr would)."""
    loaded, positions = r
    if positions is None:
        return repr(loaded), None
    depths = []
    for p in positions.open:
        inner, depth = p, 0
        while isinstance(inner, list) and inner:
            inner, depth = inner[0], depth + 1
        depths.append(depth)
    return repr(loaded), (positions.closed_count, positions.today_pnl, positions.closed_unjudged, depths)


# Hypothesis: sequences of documents sharing a memo, built from a few closed lists so that reads hit,
# miss and change day; some with a byte overwritten, reordered keys, or a non-list closed value.

_DAYS = [TODAY, TOMORROW]
# Mostly text JSON writes as is (an escape before the closed list sends a read down the full path),
# sometimes any text at all.
_text = st.one_of(
    st.text("abz09-:. TZé€", max_size=8),
    st.text("abz09-:. TZé€", max_size=8),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
)
_number = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.floats())
_closed_at = st.one_of(
    st.sampled_from(
        [
            f"{TODAY}T00:00:00Z",
            f"{TODAY}T23:59:59.999+00:00",
            TODAY,
            f"{TOMORROW}T08:00:00Z",
            f"{TODAY}T23:30:00-05:00",
            f"{TODAY}T01:00:00+02:00",
            f"{TODAY} 12:00:00",
            "2026-11-20T12:00:00Z",
            "garbage",
            "",
        ]
    ),
    _text,
    st.integers(-(10**20), 10**20),
    st.sampled_from([NOW.timestamp(), (NOW + timedelta(days=1)).timestamp(), 1e300]),
    _number,
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
_pnl = st.one_of(st.none(), st.integers(-(10**6), 10**6), _number, _number, _text, st.booleans(), st.just({}))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(), _number, _text)
_closed_pos = st.fixed_dictionaries(
    {"pnl": _pnl, "closed_at": _closed_at}, optional={"id": _text, "extra": st.lists(_scalar, max_size=2)}
)
_open_pos = st.one_of(st.dictionaries(_text, _scalar, max_size=3), _scalar)
# At most one fault per document, none in about half (so that many reads can use the memo).
_FAULTS = [None, None, None, None, "drop-open", "drop-closed", "odd-closed", "poke", "swapped"]
_doc = st.fixed_dictionaries(
    {
        "open": st.lists(_open_pos, max_size=3),
        "closed": st.integers(0, 3),  # which closed list of the pool
        "day": st.sampled_from(_DAYS),
        "closed_first": st.booleans(),
        "ascii": st.booleans(),
        "fault": st.sampled_from(_FAULTS),
        "odd_closed": st.one_of(_scalar, st.just({})),  # in place of the closed list
        "poke": st.tuples(st.integers(0, 10**6), st.integers(0, 255)),  # a byte overwritten
    }
)


def _render(d: dict[str, Any], pool: list[list[dict[str, Any]]]) -> bytes:
    fault = d["fault"]
    closes = d["odd_closed"] if fault == "odd-closed" else pool[d["closed"] % len(pool)]
    obj = {"open_positions": d["open"], "closed_positions": closes}
    if fault == "swapped":  # a closed list the memo may hold, as the open list's value
        obj = {"closed_positions": d["open"], "open_positions": closes}
    elif d["closed_first"]:
        obj = dict(reversed(obj.items()))
    if fault in ("drop-open", "drop-closed"):
        del obj[f"{fault.removeprefix('drop-')}_positions"]
    raw = bytearray(json.dumps(obj, ensure_ascii=d["ascii"]).encode("utf-8"))
    if fault == "poke":
        at, byte = d["poke"]
        raw[at % len(raw)] = byte
    return bytes(raw)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pool=st.lists(st.lists(_closed_pos, max_size=6), min_size=1, max_size=4), docs=st.lists(_doc, max_size=6))
def test_memoised_reads_in_sequence_answer_what_plain_reads_do(
    tmp_path: Path, pool: list[list[dict[str, Any]]], docs: list[dict[str, Any]]
) -> None:
    path = tmp_path / "positions_futures.json"
    memo = ClosedMemo()
    for d in docs:
        path.write_bytes(_render(d, pool))
        first, other = d["day"], TOMORROW if d["day"] == TODAY else TODAY
        for today in (first, first, other, first):  # judged, reused, judged for the other day, again
            same(memo, path, today=today)
