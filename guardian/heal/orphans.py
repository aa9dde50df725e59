"""ORPHAN_PROCESS: in paper mode, terminate a bot process that runs outside the bot unit. In real
mode it is only reported: killing a process that may be mid-trade is the operator's call."""

from __future__ import annotations

from pathlib import Path

from guardian.context import BotProcess, Context
from guardian.heal.base import HealContext, failed, planned, refused
from guardian.model import Finding, HealAction, Outcome
from guardian.probes import script_arg


def runs_bot_code(p: BotProcess, home: Path) -> bool:
    """The bot, not a tool that reads the bot's files: its cwd, or the script it runs, is in the home."""
    if p.cwd and Path(p.cwd).is_relative_to(home):
        return True
    script = script_arg(p.cmdline)
    try:
        return script is not None and (Path(p.cwd or "/") / script).resolve().is_relative_to(home)
    except (OSError, RuntimeError):
        return False


def heal_orphan(h: HealContext, f: Finding) -> HealAction:
    import psutil

    pid = int(f.context["pid"])
    if h.ctx.mode != "paper" or not h.ctx.cfg.heal.kill_orphans_in_paper:
        return refused(f, f"real mode: orphan pid {pid} is reported, not killed")
    if h.dry_run:
        return planned(f, f"terminate orphan bot process {pid}")
    # Re-identify it now: the pid must still be a bot process outside the unit, not a recycled pid.
    still = next((p for p in Context(h.ctx.cfg, now=h.ctx.now).bot_processes if p.pid == pid), None)
    if still is None:
        return HealAction(f, Outcome.HEALED, f"orphan pid {pid} already gone", stat=None)
    if still.in_unit:
        return refused(f, f"pid {pid} now belongs to {h.ctx.cfg.bot.unit}: not killed")
    if not runs_bot_code(still, h.ctx.home.resolve()):
        return refused(f, f"pid {pid} only names a path in the bot's home; its cwd and script lie outside: not killed")
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(timeout=h.ctx.cfg.heal.orphan_term_timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    except psutil.NoSuchProcess:
        pass
    except (psutil.AccessDenied, psutil.TimeoutExpired) as e:
        return failed(f, f"could not end orphan pid {pid}: {e}")
    h.ctx.forget_processes()  # a heartbeat reset after this must see the bot gone
    return HealAction(f, Outcome.HEALED, f"terminated orphan bot process {pid}", stat="orphans_killed")
