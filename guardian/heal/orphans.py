"""ORPHAN_PROCESS: in paper mode, terminate a bot process that runs outside the bot unit. In real
mode it is only reported: killing a process that may be mid-trade is the operator's call."""

from __future__ import annotations

from guardian.context import Context
from guardian.heal.base import HealContext, failed, planned, refused
from guardian.model import Finding, HealAction, Outcome


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
