"""Helpers shared by the checks."""

from __future__ import annotations

import math
from typing import Any, TypeGuard

from guardian.model import UNKNOWN, Fact, Finding, Level

_READABLE = "make the file readable to guardian and a regular file, then re-run `guardian check`"


def unknown(
    subject: str,
    message: str,
    level: Level = Level.CRITICAL,
    *,
    concern: Fact | None = None,
    action: str | None = None,
    **context: Any,
) -> Finding:
    """A check could not decide. CRITICAL where not knowing could hide a dangerous finding; with a
    ``concern``, the fact it leaves unproven blocks real mode whatever the level."""
    return Finding(
        UNKNOWN,
        level,
        subject,
        message,
        recoverable=False,
        action=action or _READABLE,
        context=context,
        concern=concern,
    )


def ago(seconds: float) -> str:
    """A duration as an operator reads it: 45s, 12 min, 3.5 h, 40 d."""
    s = abs(seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} d"


def finite_number(value: object) -> TypeGuard[int | float]:
    """A JSON number that is a float's worth: an integer past a float's range is no balance or price."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(value) < 2**1023 if isinstance(value, int) else math.isfinite(value)


def positive_number(value: object) -> bool:
    return finite_number(value) and value > 0


def position_label(p: dict[str, Any], index: int) -> str:
    """How an operator finds a position: its id, else its symbol, direction and index."""
    if p.get("id") is not None:
        return f"position:{p['id']}"
    return f"position:{p.get('symbol', '?')}/{p.get('direction', '?')}#{index}"


def position_key(p: dict[str, Any]) -> str:
    """Identity of a position across files: its id, else symbol, direction and opening time."""
    if p.get("id") is not None:
        return str(p["id"])
    return f"{p.get('symbol')}/{p.get('direction')}/{p.get('opened_at')}"
