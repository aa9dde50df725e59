"""The deployment: the ``trading-bot-current`` link, the deployed slot, and what the previous slot
still holds (its open positions, its config)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from guardian.checks.base import position_key, unknown
from guardian.context import SLOT_NAME_MAX, Context
from guardian.fsutil import read_regular, read_small_text, unreadable_reason
from guardian.model import Fact, Finding, Level, Proof
from guardian.state import load_closed_ids, load_open_positions


def check_link(ctx: Context) -> Iterator[Finding | Proof]:
    """The link names a slot in slots/ and, where one is named, the deployed one; proves SLOT."""
    s = ctx.slot
    if s.problem:
        yield Finding(
            "SLOT_INVALID",
            Level.CRITICAL,
            ctx.cfg.bot.current_link,
            f"deployment link {s.link} {s.problem}; the bot would run unknown code",
            action=f"point {s.link.name} at a slot in {s.slots_dir} (ln -sfn slots/<name> {s.link.name}.new && mv -T ...)",
            context={"link": str(s.link)},
            concern=Fact.SLOT,
        )
    elif s.deployed_problem:
        name = ctx.cfg.bot.deployed_slot_file
        yield Finding(
            "SLOT_MISMATCH",
            Level.CRITICAL,
            ctx.cfg.bot.current_link,
            f"{name} cannot be read ({s.deployed_problem}): the link points to slot {s.name!r} but which slot "
            "was deployed cannot be proven",
            action=f"make {ctx.home / name} a regular file of one line naming the deployed slot (or remove it)",
            context={"linked": s.name, "deployed_file": str(ctx.home / name), "problem": s.deployed_problem},
            concern=Fact.SLOT,
        )
    elif s.deployed and s.deployed != s.name:
        yield Finding(
            "SLOT_MISMATCH",
            Level.CRITICAL,
            ctx.cfg.bot.current_link,
            f"link points to slot {s.name!r} but the deployed slot is {s.deployed!r}",
            action="flip the link to the deployed slot, or update DEPLOYED_SLOT if the deploy was intended",
            context={"linked": s.name, "deployed": s.deployed},
            concern=Fact.SLOT,
        )
    previous = find_previous_slot(ctx)
    if previous.problem:
        guess = f"slot {previous.path.name!r}" if previous.path else "none"
        yield unknown(
            ctx.cfg.bot.previous_slot_file,
            f"{ctx.cfg.bot.previous_slot_file} {previous.problem}; the previous slot is guessed instead (the other "
            f"slot whose positions file changed last: {guess})",
            Level.HIGH,
        )
    if not (s.problem or s.deployed_problem or (s.deployed and s.deployed != s.name)):
        named = f"the deployed slot {s.deployed!r}" if s.deployed else f"slot {s.name!r} (no deployed slot named)"
        yield Proof(Fact.SLOT, f"{ctx.cfg.bot.current_link} points to {named}")


CONFIG_MAX = 16 << 20  # a slot's JSON config; far larger is no config (a sparse file, /dev/zero's worth)


@dataclass(frozen=True)
class PreviousSlot:
    path: Path | None
    problem: str | None = None  # why PREVIOUS_SLOT could not be used; then ``path`` is the guess


def previous_slot(ctx: Context) -> Path | None:
    """The slot deployed before the current one: named in the config or PREVIOUS_SLOT, else the other
    slot whose positions file changed most recently (else whose directory did)."""
    return find_previous_slot(ctx).path


def find_previous_slot(ctx: Context) -> PreviousSlot:
    """As :func:`previous_slot`, with why PREVIOUS_SLOT was passed over. Read once per evaluation."""
    found = ctx.memo.get("previous_slot")
    if not isinstance(found, PreviousSlot):
        found = ctx.memo["previous_slot"] = _find_previous_slot(ctx)
    return found


def _find_previous_slot(ctx: Context) -> PreviousSlot:
    current = ctx.slot.target
    if current is None:
        return PreviousSlot(None)
    name = ctx.cfg.bot.previous_slot
    problem: str | None = None
    if name is None:
        try:
            name = read_small_text(ctx.home / ctx.cfg.bot.previous_slot_file, max_bytes=SLOT_NAME_MAX).strip() or None
        except (FileNotFoundError, NotADirectoryError):
            name = None
        except (OSError, UnicodeDecodeError) as e:
            problem = f"cannot be read ({unreadable_reason(e)})"
    if name is not None and (name in (".", "..") or "/" in name or "\0" in name):
        problem = f"names {name[:80]!r}, which is not a slot in {ctx.slots_dir}"
        name = None
    if name is not None:
        p = ctx.slots_dir / name
        return PreviousSlot(p if _other_slot(p, current) else None)
    return PreviousSlot(_most_recent_other_slot(ctx, current), problem)


def _other_slot(p: Path, current: Path) -> bool:
    """A slot directory other than the current one; as the link's target must be, one in the slots
    directory itself (a symlink there to elsewhere is not one)."""
    try:
        real = p.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real != current and real.parent == current.parent and real.is_dir()


def _most_recent_other_slot(ctx: Context, current: Path) -> Path | None:
    best: tuple[float, Path] | None = None
    try:
        candidates = [p for p in ctx.slots_dir.iterdir() if _other_slot(p, current)]
    except OSError:
        return None
    for p in candidates:
        try:
            m = (p / ctx.cfg.files.positions).stat().st_mtime
        except OSError:
            try:
                m = p.stat().st_mtime - 1e12  # ranks after every slot that holds a positions file
            except OSError:
                continue
        if best is None or m > best[0]:
            best = (m, p)
    return best[1] if best else None


def check_config_drift(ctx: Context) -> Iterator[Finding]:
    current = ctx.slot.target
    if current is None:
        return
    for rel in ctx.cfg.slots.must_parse:
        try:
            raw = read_regular(current / rel, max_bytes=CONFIG_MAX)
        except FileNotFoundError:
            continue
        except OSError as e:
            yield _drift(rel, f"{rel} in slot {current.name!r} cannot be read ({unreadable_reason(e)})")
            continue
        try:
            msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:  # invalid UTF-8 is the second
            yield _drift(rel, f"{rel} in slot {current.name!r} does not parse: {e}")
    prev = previous_slot(ctx)
    if prev is None:
        return
    for rel in ctx.cfg.slots.must_match:
        a, b = _read_json(current / rel), _read_json(prev / rel)
        failed = [(slot, x.why) for slot, x in ((current, a), (prev, b)) if isinstance(x, _Unreadable)]
        if failed:
            slot, why = failed[0]
            yield _drift(rel, f"{rel} in slot {slot.name!r} cannot be read ({why}), so it cannot be compared")
            continue
        if a == b:
            continue
        detail = ""
        if isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            detail = f" (keys differing: {', '.join(keys[:10])})"
        yield _drift(rel, f"{rel} differs between slot {current.name!r} and previous slot {prev.name!r}{detail}")


_MISSING = object()


@dataclass(frozen=True)
class _Unreadable:
    why: str


def _read_json(path: Path) -> object:
    try:
        raw = read_regular(path, max_bytes=CONFIG_MAX)
    except FileNotFoundError:
        return _MISSING
    except OSError as e:
        return _Unreadable(unreadable_reason(e))
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return raw  # compare bytes: still tells equal from different


def _drift(rel: str, message: str) -> Finding:
    return Finding(
        "CONFIG_DRIFT",
        Level.HIGH,
        f"config:{rel}",
        message,
        action="make the slots' config agree (or drop the file from slots.must_match) and redeploy",
    )


def check_previous_slot_state(ctx: Context) -> Iterator[Finding]:
    """Open positions left in the previous slot's state that the current slot does not know."""
    if not ctx.data_in_slot:
        return  # a shared data root: both slots see the same file
    prev = previous_slot(ctx)
    _, current = ctx.positions
    if prev is None or current is None:
        return
    theirs = load_open_positions(prev / ctx.cfg.files.positions, max_bytes=ctx.max_bytes)
    if not theirs:
        return
    ours = {position_key(p) for p in current.open if isinstance(p, dict)}
    lost = [p for p in theirs if isinstance(p, dict) and position_key(p) not in ours]
    if lost:
        closed = load_closed_ids(ctx.positions_path, max_bytes=ctx.max_bytes) or set()
        lost = [p for p in lost if position_key(p) not in closed]
    for p in lost:
        yield Finding(
            "SLOT_STATE_DIVERGED",
            Level.CRITICAL,
            f"position:{position_key(p)}",
            f"previous slot {prev.name!r} holds open position {position_key(p)} "
            f"({p.get('symbol')} {p.get('direction')}) that slot {ctx.slot.name!r} does not track",
            action="reconcile with the exchange and carry the position into the current slot's state",
            context={"previous_slot": prev.name, "symbol": p.get("symbol"), "direction": p.get("direction")},
        )
