"""Bot processes: stale code (running from another slot), orphans (outside the bot unit), and, in the
daemon, whether the bot runs at all and is alive."""

from __future__ import annotations

from collections.abc import Iterator

from guardian.context import BotProcess, Context
from guardian.model import Finding, Level

# What only the daemon's liveness check raises: a one-shot run, which does not run it, cannot resolve them.
LIVENESS_CODES = frozenset({"BOT_DOWN", "BOT_HUNG"})


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


def main_processes(ctx: Context) -> list[BotProcess]:
    """The bot as its unit runs it: the processes in the unit's cgroup, else (no unit seen, as in a
    container or a test) every process running the bot's code."""
    procs = ctx.bot_processes
    return [p for p in procs if p.in_unit] or procs


def check_liveness(ctx: Context) -> Iterator[Finding]:
    """BOT_DOWN (no process) and BOT_HUNG (alive, heartbeats stale). Daemon only: before the gate
    lets it start, a bot that is not running is the expected state."""
    from guardian.checks.base import ago
    from guardian.checks.heartbeats import bot_starting, read_beats

    unit = ctx.cfg.bot.unit
    real = ctx.mode == "real"
    procs = main_processes(ctx)
    if not procs:
        _, positions = ctx.positions
        n_open = len(positions.open) if positions is not None else None
        # In real mode open positions without a bot are unmanaged; an unreadable file may hide some.
        critical = real and (n_open is None or n_open > 0)
        held = "unknown open positions" if n_open is None else f"{n_open} open position(s)"
        yield Finding(
            "BOT_DOWN",
            Level.CRITICAL if critical else Level.HIGH,
            unit,
            f"no bot process runs from {ctx.home} ({held})",
            action=f"systemctl status {unit}; journalctl -u {unit}",
            context={"open_positions": n_open},
        )
        return
    if bot_starting(ctx) is not None:
        return
    stale = ctx.cfg.thresholds.heartbeat_stale
    now = ctx.now.timestamp()
    late = [b for b in read_beats(ctx) if b.at is not None and now - b.at > stale]
    if late:
        pids = ", ".join(str(p.pid) for p in procs)
        names = ", ".join(f"{b.path.stem} ({ago(now - b.at)})" for b in late if b.at is not None)
        yield Finding(
            "BOT_HUNG",
            Level.CRITICAL if real else Level.HIGH,
            unit,
            f"bot process {pids} is alive but its heartbeats stopped: {names}",
            action=f"py-spy dump --pid {procs[0].pid}; then systemctl restart {unit}",
            context={"pids": pids, "stale": [b.path.stem for b in late]},
        )
