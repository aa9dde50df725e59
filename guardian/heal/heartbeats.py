"""HEARTBEAT_STALE: reset the timestamp, only on a cold start (no live bot process), so a hung
bot is never hidden."""

from __future__ import annotations

from guardian.alerts import iso
from guardian.fsutil import atomic_write, bot_lock
from guardian.heal.base import HealContext, planned, refused
from guardian.model import Finding, HealAction, Outcome
from guardian.state import encode, load_json_object


def heal_heartbeat(h: HealContext, f: Finding) -> HealAction:
    path = h.ctx.data / str(f.context["file"])
    live = [p.pid for p in h.ctx.bot_processes]
    if live:
        return refused(
            f, f"bot process(es) {', '.join(map(str, live))} alive: a stale heartbeat may be a hung bot; not reset"
        )
    if h.dry_run:
        return planned(f, f"reset {f.subject} to now")
    with bot_lock(path, timeout=h.lock_timeout, soft=h.soft_locks):
        loaded = load_json_object(path, required=(), max_bytes=1 << 20)
        data = dict(loaded.data) if loaded.ok else {"component": path.stem}
        data["ts"] = iso(h.ctx.now).replace(".000Z", "Z")
        b = h.store.keep(path, "heartbeat-reset", now=h.ctx.now)
        atomic_write(path, encode(data))
    return HealAction(f, Outcome.HEALED, f"reset {f.subject} (cold start)", stat="heartbeats_reset", backups=(b.id,))
