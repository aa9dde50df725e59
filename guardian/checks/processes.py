"""Bot processes: stale code (running from another slot) and orphans (outside the bot unit)."""

from __future__ import annotations

from collections.abc import Iterator

from guardian.context import Context
from guardian.model import Finding, Level


def check(ctx: Context) -> Iterator[Finding]:
    current = ctx.slot.name
    real = ctx.mode == "real"
    for p in ctx.bot_processes:
        cmd = " ".join(p.cmdline)[:200]
        if current and p.slot and p.slot != current:
            yield Finding(
                "STALE_CODE",
                Level.CRITICAL,
                f"pid:{p.pid}",
                f"bot process {p.pid} runs from slot {p.slot!r} but the link points to {current!r}: stale code",
                action=f"stop pid {p.pid} and restart the bot from the current slot",
                context={"pid": p.pid, "slot": p.slot, "cwd": p.cwd, "cmdline": cmd},
            )
        if not p.in_unit:
            yield Finding(
                "ORPHAN_PROCESS",
                Level.CRITICAL if real else Level.HIGH,
                f"pid:{p.pid}",
                f"bot process {p.pid} runs outside {ctx.cfg.bot.unit}: a second bot may be trading",
                recoverable=True,
                action=None if not real else f"real mode: guardian never kills it; stop pid {p.pid} yourself",
                context={"pid": p.pid, "cwd": p.cwd, "cmdline": cmd},
            )
