"""What to tell the operator, and when: alert on transitions, not on every look.

Each alert has a fingerprint (code and subject). It fires when its finding appears, is re-sent only
after a reminder interval for its level, and is closed by one ``resolved`` event when the finding
goes away. A fingerprint that changes state too often is reported once as FLAPPING and held until
it is stable. Silences mute (they never make anything safe: the gate judges findings, not
alerts). All of it lives in ``alerts.json`` in guardian's state directory, read and written under
an exclusive lock, so the gate, one-shot commands and the daemon share it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from guardian.alerts import Alert, fingerprint, iso
from guardian.config import AlertsConfig, Config
from guardian.history import state_dir
from guardian.model import Finding, Level

STATE_FILE = "alerts.json"
STATE_MAX = 64 << 20  # alert records and silences; far larger is no state guardian wrote

# Findings that follow from another: while the first fires, the second says nothing new.
INHIBITS: Mapping[str, frozenset[str]] = {
    "BOT_DOWN": frozenset({"HEARTBEAT_STALE"}),
    "BOT_HUNG": frozenset({"HEARTBEAT_STALE"}),
}


class Record(msgspec.Struct):
    code: str
    subject: str
    level: str
    firing: bool
    since: float  # when it last started firing
    last_sent: float | None = None  # None: not sent in this firing (muted, or held)
    changes: list[float] = msgspec.field(default_factory=list)  # times it fired or resolved, within the flap window
    flapping: bool = False


class Silence(msgspec.Struct):
    id: str
    code: str
    subject: str | None  # None: every subject of the code
    until: float
    reason: str
    created: float

    def matches(self, code: str, subject: str, now: float) -> bool:
        return self.until > now and self.code == code and self.subject in (None, subject)


class AlertState(msgspec.Struct):
    """alerts.json, typed: one definition for the writer and the reader, so a file of another shape
    (a record whose ``changes`` holds a string) is refused at the door, not a TypeError mid-gate."""

    records: dict[str, Record] = msgspec.field(default_factory=dict)
    heals: dict[str, list[float]] = msgspec.field(default_factory=dict)  # fingerprint -> times healed
    silences: list[Silence] = msgspec.field(default_factory=list)

    def silenced(self, code: str, subject: str, now: float) -> Silence | None:
        return next((s for s in self.silences if s.matches(code, subject, now)), None)


LOCK_TIMEOUT = 5.0  # a stopped process holding the state's lock must not hang the bot's ExecStartPre=


@contextlib.contextmanager
def locked_state(directory: Path) -> Iterator[AlertState]:
    """Load the alert state, yield it for changes, and save it atomically, all under one lock.

    A state file that cannot be read as one is kept aside (never silently dropped) and a fresh state
    used. Raise OSError (LockBusy when another process holds the lock for over LOCK_TIMEOUT).
    """
    from guardian.alerts.jsonl import flock_wait
    from guardian.fsutil import LockBusy, NotRegularFile, TooLarge, atomic_write, read_regular

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    lock = directory / (STATE_FILE + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if not flock_wait(fd, fcntl.LOCK_EX, LOCK_TIMEOUT):
            raise LockBusy(errno.EAGAIN, f"held by another process for over {LOCK_TIMEOUT:g}s", str(lock))
        try:
            state = msgspec.json.decode(read_regular(path, max_bytes=STATE_MAX), type=AlertState)
        except FileNotFoundError:
            state = AlertState()
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError, NotRegularFile, TooLarge):
            # Not a state guardian wrote (a FIFO planted there would hang every gate): set aside.
            os.replace(path, path.with_name(f"{STATE_FILE}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S}"))
            state = AlertState()
        yield state
        atomic_write(path, msgspec.json.format(msgspec.json.encode(state), indent=1) + b"\n")
    finally:
        os.close(fd)


def _remind_after(cfg: AlertsConfig, level: str) -> float:
    return {
        "CRITICAL": cfg.remind_critical,
        "HIGH": cfg.remind_high,
        "MEDIUM": cfg.remind_medium,
    }.get(level, cfg.remind_low)


@dataclass
class Engine:
    """Turns one complete look at the findings into the alerts worth sending."""

    cfg: AlertsConfig
    state: AlertState
    now: datetime

    @property
    def t(self) -> float:
        return self.now.timestamp()

    def _alert(self, f: Finding | Record, event: str, message: str, **extra: Any) -> Alert:
        ctx: dict[str, Any] = dict(f.context) if isinstance(f, Finding) else {}
        if isinstance(f, Finding) and f.action:
            ctx["action"] = f.action
        ctx.update(extra)
        ctx["fingerprint"] = fingerprint(f.code, f.subject)
        level = f.level.name if isinstance(f, Finding) else f.level
        action = isinstance(f, Finding) and not f.recoverable and event == "firing"
        return Alert(
            ts=iso(self.now), level=level, code=f.code, subject=f.subject, message=message,
            action_required=action, event=event, context=ctx,
        )  # fmt: skip

    def _change(self, rec: Record) -> Alert | None:
        """Note a state change; return a FLAPPING alert the first time the rate crosses the limit."""
        window = self.cfg.flap_window
        rec.changes = [c for c in rec.changes if self.t - c < window] + [self.t]
        if not rec.flapping and len(rec.changes) > self.cfg.flap_changes:
            rec.flapping = True
            return Alert(
                ts=iso(self.now), level=rec.level, code="FLAPPING", subject=fingerprint(rec.code, rec.subject),
                message=f"{rec.code} on {rec.subject} changed state {len(rec.changes)} times within "
                f"{window / 60:.0f} min; held until it is stable",
                action_required=True, event="firing", context={"fingerprint": fingerprint(rec.code, rec.subject)},
            )  # fmt: skip
        return None

    def _recent(self, rec: Record) -> list[float]:
        return [c for c in rec.changes if self.t - c < self.cfg.flap_window]

    def _stable(self, rec: Record) -> bool:
        """Hysteresis: flapping starts above flap_changes and ends at half of it, so one change after a
        quiet spell does not keep it held."""
        return len(self._recent(rec)) <= self.cfg.flap_changes // 2

    def evaluate(
        self, findings: Iterable[Finding], *, complete: bool = True, unseen: frozenset[str] = frozenset()
    ) -> list[Alert]:
        """The alerts to send for this look. ``complete``: every check ran, so an absent finding has resolved,
        except one whose code is in ``unseen``: a code this look cannot raise (a one-shot run does not
        run the daemon's checks), which keeps the state another look gave it."""
        out: list[Alert] = []
        current = {fingerprint(f.code, f.subject): f for f in findings}
        inhibited = {t for code in {f.code for f in current.values()} for t in INHIBITS.get(code, ())}
        for fp, f in current.items():
            rec = self.state.records.get(fp)
            if rec is None or not rec.firing:
                rec = rec or Record(f.code, f.subject, f.level.name, firing=False, since=self.t)
                self.state.records[fp] = rec
                rec.firing, rec.since, rec.last_sent, rec.level = True, self.t, None, f.level.name
                if flap := self._change(rec):
                    out.append(flap)
            escalated = Level[rec.level] < f.level if rec.level in Level.__members__ else False
            rec.level = f.level.name
            if rec.flapping:
                if not self._stable(rec):
                    continue
                rec.flapping = False
            if f.code in inhibited or self.state.silenced(f.code, f.subject, self.t):
                continue  # muted: last_sent stays None, so it is sent once the mute ends
            due = rec.last_sent is None or self.t - rec.last_sent >= _remind_after(self.cfg, rec.level)
            if due or escalated:
                reminder = rec.last_sent is not None and not escalated
                out.append(self._alert(f, "firing", f.message, **({"reminder": True} if reminder else {})))
                rec.last_sent = self.t
        if complete:
            for fp, rec in self.state.records.items():
                if not rec.firing or fp in current or rec.code in unseen:
                    continue
                rec.firing = False
                flap = self._change(rec)
                if flap:
                    out.append(flap)
                was_sent = rec.last_sent is not None
                rec.last_sent = None
                if was_sent and not rec.flapping:
                    out.append(self._alert(rec, "resolved", f"{rec.code} on {rec.subject} resolved"))
            for rec in self.state.records.values():
                if rec.flapping and not rec.firing and self._stable(rec):
                    rec.flapping = False
            # Forget what is resolved and stable, so the file does not grow without bound.
            self.state.records = {
                k: r for k, r in self.state.records.items() if r.firing or r.flapping or self._recent(r)
            }
        self.state.silences = [s for s in self.state.silences if s.until > self.t]
        return out

    def heal_allowed(self, code: str, subject: str) -> bool:
        """False once the same remedy on the same subject ran more than the budget within its window."""
        times = [t for t in self.state.heals.get(fingerprint(code, subject), []) if self.t - t < self.cfg.heal_window]
        return len(times) < self.cfg.heal_budget

    def note_heal(self, code: str, subject: str) -> None:
        key = fingerprint(code, subject)
        times = [t for t in self.state.heals.get(key, []) if self.t - t < self.cfg.heal_window]
        self.state.heals[key] = [*times, self.t]
        self.state.heals = {k: v for k, v in self.state.heals.items() if v and self.t - v[-1] < self.cfg.heal_window}


@contextlib.contextmanager
def engine_for(cfg: Config, now: datetime) -> Iterator[Engine | None]:
    """An Engine on the shared state, saved on success; None (with a warning) if the state directory
    cannot be used: then every finding is sent, since alerting on everything beats alerting on nothing."""
    import sys

    directory = state_dir(cfg)
    cm = locked_state(directory)
    try:
        state = cm.__enter__()
    except OSError as e:
        print(f"guardian: warning: alert state in {directory} unavailable ({e}); alerts are not deduplicated",
              file=sys.stderr)  # fmt: skip
        yield None
        return
    try:
        yield Engine(cfg.alerts, state, now)
    except BaseException:
        cm.__exit__(*sys.exc_info())
        raise
    try:
        cm.__exit__(None, None, None)
    except OSError as e:
        print(f"guardian: warning: could not save alert state in {directory}: {e}", file=sys.stderr)


def heal_loop_finding(code: str, subject: str, cfg: AlertsConfig) -> Finding:
    return Finding(
        "HEAL_LOOP", Level.CRITICAL, fingerprint(code, subject),
        f"{code} on {subject} was healed {cfg.heal_budget} times within {cfg.heal_window / 60:.0f} min and keeps "
        "coming back: something keeps breaking it; auto-heal of it is stopped",
        action="find what breaks it; healing resumes once the window passes without a repeat",
    )  # fmt: skip


def new_silence(code: str, subject: str | None, *, seconds: float, reason: str, now: datetime) -> Silence:
    t = now.timestamp()
    return Silence(secrets.token_hex(4), code, subject, t + seconds, reason, t)


def add_silence(directory: Path, target: str, *, seconds: float, reason: str, now: datetime) -> Silence:
    """Mute ``CODE`` or ``CODE:SUBJECT`` for ``seconds``; the silence, saved."""
    code, _, subject = target.partition(":")
    s = new_silence(code, subject or None, seconds=seconds, reason=reason, now=now)
    with locked_state(directory) as state:
        state.silences.append(s)
    return s


def remove_silence(directory: Path, silence_id: str) -> bool:
    """Remove one silence; False when there is none with that id."""
    with locked_state(directory) as state:
        keep = [s for s in state.silences if s.id != silence_id]
        found = len(keep) != len(state.silences)
        state.silences = keep
    return found


def live_silences(directory: Path, now: datetime) -> list[Silence]:
    with locked_state(directory) as state:
        return [s for s in state.silences if s.until > now.timestamp()]
