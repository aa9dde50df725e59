"""The bot's virtualenv against the slot's ``requirements.lock``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from guardian.checks.base import unknown
from guardian.context import Context
from guardian.fsutil import read_small_text, unreadable_reason
from guardian.model import Finding, Level

LOCK_FILE_MAX = 1 << 20  # a requirements.lock of pins; a larger one is no lock file guardian parses
_DIST_INFO = re.compile(r"^(?P<name>.+?)-(?P<version>[^-]+)\.(?:dist|egg)-info$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, str]:
    """``name==version`` pins; comments, options, extras and environment markers are ignored."""
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line or line.startswith("-") or "==" not in line:
            continue
        name, version = line.split("==", 1)
        pins[normalize(name.split("[", 1)[0].strip())] = version.strip()
    return pins


def installed(venv: Path) -> dict[str, str]:
    """Distributions installed in ``venv``, read from their metadata directories (no subprocess)."""
    found: dict[str, str] = {}
    for site in venv.glob("lib/python*/site-packages"):
        try:
            names = os.listdir(site)
        except OSError:  # not a directory after all, or unreadable: its packages count as missing
            continue
        for name in names:
            m = _DIST_INFO.match(name)
            if m:
                found[normalize(m.group("name"))] = m.group("version")
    return found


def check(ctx: Context) -> Iterator[Finding]:
    slot = ctx.slot.target
    if slot is None:
        return
    lock = slot / ctx.cfg.slots.requirements
    try:
        pins = parse_lock(read_small_text(lock, max_bytes=LOCK_FILE_MAX))
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as e:
        yield unknown(
            f"deps:{ctx.cfg.slots.requirements}",
            f"{ctx.slot.name}/{ctx.cfg.slots.requirements} cannot be read ({unreadable_reason(e)}); the virtualenv "
            "cannot be checked against it",
            Level.HIGH,
            file=str(lock),
        )
        return
    candidates = [ctx.cfg.bot.venv] if ctx.cfg.bot.venv else [slot / ".venv", ctx.home / "venv"]
    venv = next((v for v in candidates if v is not None and v.is_dir()), None)
    if venv is None:
        yield unknown(
            "deps:venv",
            f"{lock.name} pins {len(pins)} packages but no virtualenv was found "
            f"({', '.join(str(c) for c in candidates)}); set bot.venv",
            Level.HIGH,
        )
        return
    have = installed(venv)
    wrong = {n: (v, have.get(n)) for n, v in pins.items() if have.get(n) != v}
    if wrong:
        shown = ", ".join(f"{n} {got or 'missing'} (want {want})" for n, (want, got) in sorted(wrong.items())[:8])
        yield Finding(
            "DEPENDENCY_MISMATCH",
            Level.HIGH,
            f"deps:{venv}",
            f"{len(wrong)} package(s) differ from {ctx.slot.name}/{lock.name}: {shown}",
            action=f"reinstall: {venv}/bin/pip install -r {lock}",
            context={"venv": str(venv), "mismatched": len(wrong)},
        )
