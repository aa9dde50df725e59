"""The daemon's main loop: inotify events, timers, process exits and signals in; checks, heals,
alerts, status, metrics and systemd notifications out.

One thread does all the work. WATCHDOG=1 is sent from it after each turn, so a check that hangs
stops the pings and systemd restarts guardian; no helper thread keeps a hung daemon looking alive.
"""

from __future__ import annotations

import collections
import contextlib
import faulthandler
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import msgspec

from guardian import config as config_mod
from guardian.alerts import Alert, Alerter, iso
from guardian.alerts.build import build_alerter
from guardian.alerts.engine import engine_for
from guardian.checks import CHECKS, data_readable, run_check
from guardian.checks.base import unknown
from guardian.checks.heartbeats import next_change, read_beats
from guardian.config import Config, ConfigError
from guardian.context import Context
from guardian.daemon import status as status_mod
from guardian.daemon.notify import Notifier
from guardian.daemon.watch import ALL, Router, Watcher, real_path
from guardian.heal import REMEDIES, HealResult, heal, remedy_for
from guardian.history import state_dir
from guardian.model import Finding, HealAction, Level, Outcome, Proof, Report, health_score, monitoring_exit
from guardian.state import ClosedMemo
from guardian.verdict import Verdict, judge

if TYPE_CHECKING:
    from guardian.daemon.metrics import Metrics

ALL_CHECKS = tuple(c.name for c in CHECKS)
# Resetting a stale heartbeat is for a cold start, at the gate. At runtime a stale heartbeat is the
# bot's to fix (or BOT_HUNG): resetting it would hide exactly what the operator must see.
NOT_AT_RUNTIME = frozenset({"HEARTBEAT_STALE"})
HEAL_CODES = frozenset({"STATE_UNRECOVERABLE", "HEAL_LOOP"})  # findings only a heal attempt raises
FIRST = ("slot",)  # after a link flip, the check whose answer is sent before the others run
PID_CHECKS = ("liveness", "processes", "locks")  # what a watched process's exit can change
# What a live bot passes through between two writes of one operation (a WAL entry pending until the
# trade is done; the positions saved, the portfolio not yet): reported once it outlasts SETTLE.
SETTLING = frozenset({"STATE_MISMATCH", "WAL_INCOMPLETE"})
SETTLE = 5.0
STATUS_EVERY = 1.0  # at most one status rewrite per second while only the time of the last check moves
IDLE = 1.0  # this long after the last evaluation, the daemon is idle


@dataclass
class CheckState:
    findings: list[Finding] = field(default_factory=list)
    proofs: list[Proof] = field(default_factory=list)  # of its last run; none after one that raised
    last_run: float = float("-inf")  # monotonic
    duration: float = 0.0
    runs: int = 0
    errors: int = 0  # consecutive
    backoff_until: float = 0.0  # monotonic
    last_error: str | None = None


Picture = frozenset[tuple[str, str, int]]


def picture(findings: list[Finding]) -> Picture:
    """What alerting depends on: which findings there are, and how bad. A change of it is worth an act()."""
    return frozenset((f.code, f.subject, int(f.level)) for f in findings)


def _now() -> datetime:
    return datetime.now(UTC)


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None (musl has none). A daemon that read a 4 MB file twenty times a
    second keeps the freed buffers in its heap; trimming once idle hands them back to the kernel."""
    import ctypes

    return getattr(ctypes.CDLL(None), "malloc_trim", None)


class Daemon:
    def __init__(self, config_path: Path, cfg: Config) -> None:
        self.config_path = config_path
        self.cfg = cfg
        self.notifier = Notifier()
        self.checks = {name: CheckState() for name in ALL_CHECKS}
        self.deferred: dict[str, float] = {}  # check -> time of its first event, waiting out `coalesce`
        self.heal_findings: list[Finding] = []  # from the last heal attempt
        self.heal_actions: list[HealAction] = []  # of the last heal attempt, those that did not heal
        self.config_error: Finding | None = None
        self.last_key: Picture | None = None
        self.last_heal_key: frozenset[tuple[str, str]] = frozenset()
        self.pidfds: dict[int, int] = {}  # pid -> pidfd, readable when the process exits
        self.bot_pids: set[int] = set()
        self.lock_pids: set[int] = set()
        self.hb_deadline: float | None = None  # wall clock: a heartbeat crosses its threshold
        self.settling: dict[tuple[str, str], float] = {}  # finding key -> monotonic time first seen
        self.settle_deadline: float | None = None
        self.next_sweep = 0.0
        self.next_ping = 0.0
        self.next_status = 0.0
        self.signals: list[int] = []
        self.lags: collections.deque[float] = collections.deque(maxlen=2000)
        self.evaluations = 0
        # The CPU budget: seconds of CPU event-driven checks may still spend now, refilled at
        # daemon.cpu_percent of a core up to one second's worth; negative while they wait.
        self.cpu_left = 0.0
        self.cpu_left_at = time.monotonic()
        self.closed_memo = ClosedMemo()  # a busy bot's unchanged closed positions are decoded once
        self.malloc_trim = _malloc_trim()
        self.trimmed_at = -1  # the evaluation count at the last trim
        self.last_work = 0.0  # monotonic time the last evaluation ended
        self.heal_counts: collections.Counter[str] = collections.Counter()
        self.topology: tuple[Path | None, Path] | None = None
        self.watch_problems: list[str] = []
        self.started = _now()
        # guardian.service and the bot start together at boot: a bot not running yet is not down
        # until it has been seen once, or the start-up grace has passed.
        self.bot_seen = False
        self.boot_grace_until = time.monotonic() + cfg.thresholds.bot_start_grace
        self.last_check = self.started
        self.last_sweep: datetime | None = None
        self.state = "starting"
        self.metrics: Metrics | None = None
        self.alerter = Alerter([])

    # --- set-up -----------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals.append(signum)  # only a flag: the loop acts on it

    def _configure(self) -> None:
        """(Re)build what depends on the config: sinks, metrics, watches."""
        ctx = Context(self.cfg)
        self.alerter = build_alerter(ctx)
        self.state_dir = state_dir(self.cfg)
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        m = self.cfg.metrics
        if m.textfile is not None or m.listen is not None:
            from guardian.daemon.metrics import Metrics

            self.metrics = Metrics(
                bot=self.cfg.bot.unit, mode=self.cfg.bot.mode, textfile=m.textfile, listen=m.listen,
                state_dir=self.state_dir,
            )  # fmt: skip
            try:
                self.metrics.start()
            except OSError as e:
                print(f"guardian: warning: {e}", file=sys.stderr)
            self.metrics.set_ready(self.state != "starting")
        self.topology = None  # the next evaluation re-syncs the watches

    def _resync(self, ctx: Context) -> bool:
        """Move the watches to what ``ctx`` names; True when one was added."""
        added, problems = self.watcher.sync(Router.for_context(ctx))
        for p in set(problems) - set(self.watch_problems):
            print(f"guardian: warning: {p}", file=sys.stderr)
        self.watch_problems = problems
        return added

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        # Every remedy now, not at its first use: an upgrade in place must not mix old and new modules.
        for code in REMEDIES:
            remedy_for(code)
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wfd)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: where is it stuck?
        self.watcher = Watcher()
        try:
            self._configure()
            try:
                self.evaluate(dict.fromkeys(ALL_CHECKS), sweep=True)
            except Exception as e:  # reported; the loop retries at its sweep
                print(f"guardian: error in the first check: {type(e).__name__}: {e}", file=sys.stderr)
            self.state = "running"
            self.write_status(force=True)  # before READY=1: whoever waits for it finds the status there
            self.notifier.ready(self.summary())
            if self.metrics is not None:
                self.metrics.set_ready(True)
            while True:
                if self._untrimmed() and time.monotonic() >= self.last_work + IDLE:
                    self.trimmed_at = self.evaluations  # idle after work: give the heap back
                    self.malloc_trim(0)
                deadline = self._next_timer()
                timeout = max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([rfd, self.watcher.fileno(), *self.pidfds.values()], [], [], timeout)
                news = rfd in ready  # a signal
                if news:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(rfd, 4096):
                            pass
                if self.watcher.fileno() in ready:
                    news = self.watcher.read() or news
                news = self._reap(ready) or news
                if not news and time.monotonic() < deadline:
                    continue  # events that concern no check (a temp file written, a lock closed)
                if any(s in (signal.SIGTERM, signal.SIGINT) for s in self.signals):
                    break
                try:
                    if signal.SIGHUP in self.signals:
                        self.signals = [s for s in self.signals if s != signal.SIGHUP]
                        self.reload()
                    self.turn()
                except Exception as e:  # a bug must not end the watch; it is reported and the loop goes on
                    print(f"guardian: error in the main loop: {type(e).__name__}: {e}", file=sys.stderr)
                self._ping()
        finally:
            self.shutdown()
            signal.set_wakeup_fd(old_wakeup)
            os.close(rfd)
            os.close(wfd)
        return 0

    def turn(self) -> None:
        """Run whatever is due: events past their coalescing delay, timers, the sweep."""
        now_m = time.monotonic()
        for name, t0 in self.watcher.take().items():
            self.deferred.setdefault(name, t0)
        due: dict[str, float | None] = {}
        sweep = now_m >= self.next_sweep
        if sweep:
            due = dict.fromkeys(ALL_CHECKS)
        if self.boot_grace_until and now_m >= self.boot_grace_until:  # a bot never seen is now down
            self.boot_grace_until = 0.0
            due.setdefault("liveness", None)
        if self.settle_deadline is not None and now_m >= self.settle_deadline:
            self.settle_deadline = None
            due.setdefault("positions", None)
            due.setdefault("wal", None)
        if self.hb_deadline is not None and time.time() >= self.hb_deadline:
            self.hb_deadline = None
            due.setdefault("heartbeats", None)
            due.setdefault("liveness", None)
        coalesce, throttled = self.cfg.daemon.coalesce, self.throttled_until(now_m)
        for name, t0 in list(self.deferred.items()):
            if name == ALL:  # kept in `due` too: it asks evaluate() to move the watches
                due.update({n: t0 for n in (*ALL_CHECKS, ALL) if due.get(n) is None})
                del self.deferred[name]
            elif now_m - self.checks[name].last_run >= coalesce and now_m >= throttled:
                due[name] = t0 if due.get(name) is None else due[name]
                del self.deferred[name]
        for name, st in self.checks.items():  # a check whose backoff ended runs again now
            if st.errors and st.backoff_until <= now_m:
                due.setdefault(name, None)
        if due:
            self.evaluate(due, sweep=sweep)
        elif now_m >= self.next_status:
            self.write_status()
        if self.metrics is not None:
            self.metrics.flush(time.time())

    def _next_timer(self) -> float:
        """The monotonic time of the next thing to do with no event: a sweep, a heartbeat crossing,
        the end of a coalescing delay or of a backoff, a watchdog ping."""
        now_m = time.monotonic()
        times = [self.next_sweep]
        if self.notifier.watchdog_interval:
            times.append(self.next_ping)
        if self.hb_deadline is not None:
            times.append(now_m + (self.hb_deadline - time.time()))
        if self.settle_deadline is not None:
            times.append(self.settle_deadline)
        coalesce, throttled = self.cfg.daemon.coalesce, self.throttled_until(now_m)
        times += [max(self.checks[n].last_run + coalesce, throttled) for n in self.deferred if n != ALL]
        if ALL in self.deferred:
            times.append(now_m)
        times += [st.backoff_until for st in self.checks.values() if st.errors]
        if self._booting():
            times.append(self.boot_grace_until)
        if self._untrimmed():
            times.append(self.last_work + IDLE)
        return min(times)

    def _untrimmed(self) -> bool:
        return self.malloc_trim is not None and self.trimmed_at != self.evaluations

    def throttled_until(self, now_m: float) -> float:
        """When event-driven checks may run again under the CPU budget (``now_m`` if they may now).

        A token bucket: a fault after a quiet spell is looked at at once, while a file that keeps
        changing and costs much to look at (a huge positions file saved flat out) is looked at less
        often, so guardian's share of a core stays near daemon.cpu_percent and its latency grows."""
        share = self.cfg.daemon.cpu_percent / 100.0
        self.cpu_left = min(share, self.cpu_left + (now_m - self.cpu_left_at) * share)
        self.cpu_left_at = now_m
        return now_m if self.cpu_left >= 0 else now_m - self.cpu_left / share

    def _ping(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval and time.monotonic() >= self.next_ping:
            self.notifier.watchdog()
            self.next_ping = time.monotonic() + interval

    def _reap(self, ready: list[int]) -> bool:
        """A watched process exited: re-check what its death can change, as an event would. True if
        one did."""
        t = time.monotonic()
        reaped = False
        for pid, fd in list(self.pidfds.items()):
            if fd in ready:
                os.close(fd)
                del self.pidfds[pid]
                reaped = True
                for name in PID_CHECKS:
                    self.deferred.setdefault(name, t)
        return reaped

    def _watch_pids(self) -> None:
        want = (self.bot_pids | self.lock_pids) - {os.getpid()}
        for pid in set(self.pidfds) - want:
            os.close(self.pidfds.pop(pid))
        for pid in sorted(want - set(self.pidfds))[:64]:
            try:
                self.pidfds[pid] = os.pidfd_open(pid)
            except OSError:  # already gone: the checks that just ran saw it alive; look again
                for name in PID_CHECKS:
                    self.deferred.setdefault(name, time.monotonic())

    # --- evaluation ---------------------------------------------------------------------------

    def _run(self, ctx: Context, names: set[str]) -> None:
        readable = data_readable(ctx)
        now_m = time.monotonic()
        for check in CHECKS:
            if check.name not in names:
                continue
            st = self.checks[check.name]
            if check.needs_data and not readable:
                # The slot finding says why the data cannot be looked at; a backoff about data that
                # is not there any more would only keep the loop waking.
                st.findings, st.proofs, st.errors = [], [], 0
                continue
            if st.errors and st.backoff_until > now_m:
                continue  # backing off: its last findings stand
            t0 = time.perf_counter()
            ran = run_check(check, ctx)
            found, err = ran.findings, ran.error
            st.duration = time.perf_counter() - t0
            st.last_run, st.runs = now_m, st.runs + 1
            st.proofs = ran.proofs
            if err is None:
                st.findings, st.errors, st.last_error = found, 0, None
            else:
                # Its last findings stand (they must not resolve because it broke), plus the UNKNOWN.
                st.errors += 1
                st.backoff_until = now_m + min(2.0 ** (st.errors - 1), self.cfg.daemon.backoff_max)
                st.last_error = f"{type(err).__name__}: {err}"
                st.findings = [f for f in st.findings if f.subject != f"check:{check.name}"] + found
                print(f"guardian: check {check.name} failed ({st.errors}x): {st.last_error}", file=sys.stderr)
            if self.metrics is not None:
                self.metrics.check_ran(check.name, st.duration, ok=err is None)
        if "bot_processes" in ctx.__dict__:
            self.bot_pids = {p.pid for p in ctx.bot_processes}
            self.bot_seen = self.bot_seen or bool(self.bot_pids)
        if "locks" in names:
            self.lock_pids = set(ctx.memo.get("lock_pids", ()))
            if ctx.memo.get("locks_settling"):
                self.deferred.setdefault("locks", time.monotonic())
        if names & {"heartbeats", "liveness"}:
            self.hb_deadline = next_change(ctx)
        self._watch_pids()
        current = {f.key for st in self.checks.values() for f in st.findings if f.code in SETTLING}
        self.settling = {k: self.settling.get(k, now_m) for k in current} if self.bot_pids else {}
        pending = [t0 + SETTLE for t0 in self.settling.values() if t0 + SETTLE > now_m]
        self.settle_deadline = min(pending, default=None)

    def _booting(self) -> bool:
        return not self.bot_seen and time.monotonic() < self.boot_grace_until

    def findings(self) -> list[Finding]:
        booting = self._booting()
        now_m = time.monotonic()
        out = [
            f
            for name in ALL_CHECKS
            for f in self.checks[name].findings
            if not (booting and f.code == "BOT_DOWN")
            and not (f.code in SETTLING and now_m - self.settling.get(f.key, now_m - SETTLE) < SETTLE)
        ]
        out += self.heal_findings
        if self.config_error is not None:
            out.append(self.config_error)
        return out

    def verdict(self) -> Verdict:
        """What the gate would decide now, from the last run of each of its checks (the running
        bot's own checks aside: before the gate lets it start, a bot is not running)."""
        names = [c.name for c in CHECKS if not c.daemon_only]
        findings = [f for n in names for f in self.checks[n].findings] + self.heal_findings
        if self.config_error is not None:
            findings.append(self.config_error)
        proofs = tuple(p for n in names for p in self.checks[n].proofs)
        incomplete = tuple(f"{n}: {st.last_error}" for n in names if (st := self.checks[n]).errors)
        report = Report(tuple(findings), iso(self.last_check), self.cfg.bot.mode, proofs, incomplete)
        return judge(report, self.heal_actions, mode=self.cfg.bot.mode, min_score=self.cfg.thresholds.min_health_score)

    def evaluate(self, due: dict[str, float | None], *, sweep: bool = False) -> None:
        cpu0 = time.thread_time()
        now = _now()
        ctx = Context(self.cfg, now=now, closed_memo=self.closed_memo)
        names = set(due)
        topology = (ctx.slot.target, real_path(ctx.data))
        if topology != self.topology or sweep or ALL in due:
            if topology != self.topology and self.topology is not None:
                names = set(ALL_CHECKS)  # the link moved: everything is about another slot now
                self.alerter = build_alerter(ctx)
            self.topology = topology
            if self._resync(ctx):
                names = set(ALL_CHECKS)  # a new watch saw nothing of what happened before it: look now
        if "heartbeats" in names and not names >= {"liveness", "processes"}:
            # A beat from a pid guardian does not know: a bot (re)started; look at the processes.
            beat_pids = {b.pid for b in read_beats(ctx) if isinstance(b.pid, int)}
            if beat_pids - self.bot_pids:
                names |= {"liveness", "processes"}
            elif self.checks["liveness"].findings:
                names.add("liveness")  # a hung bot beating again: BOT_HUNG resolves now, not at the sweep
        if "slot" in names and len(names) > len(FIRST) and not sweep:
            # A flipped link: say so first (a few ms), then look at everything else (tens of ms).
            self._run(ctx, set(FIRST))
            first = self.findings()
            first_key = picture(first)
            if first_key != self.last_key:
                self.act(now, first, sweep=False, heal_now=False)
                self.last_key = first_key
            names -= set(FIRST)
        self._run(ctx, names)
        self.evaluations += 1
        self.last_check = now
        findings = self.findings()
        key = picture(findings)
        if key != self.last_key or sweep:
            self.act(now, findings, sweep=sweep)
        done = time.monotonic()
        for t0 in due.values():
            if t0 is not None:
                self.lags.append(done - t0)
                if self.metrics is not None:
                    self.metrics.event_lag(done - t0)
        if sweep:
            self.last_sweep = now
            self.next_sweep = time.monotonic() + self.cfg.daemon.sweep
            if self.metrics is not None:
                self.metrics.sweep_done(now.timestamp())
        changed = key != self.last_key
        self.last_work = time.monotonic()
        self.last_key = picture(self.findings())  # act() may have healed some
        self.write_status(force=changed or sweep)
        if not sweep:  # the budget is for what events cost; a sweep is once a minute whatever happens
            self.throttled_until(time.monotonic())  # refilled up to now, then charged
            self.cpu_left -= time.thread_time() - cpu0

    def act(self, now: datetime, findings: list[Finding], *, sweep: bool, heal_now: bool = True) -> None:
        """Heal what is safe (as the gate does), then send what the alert engine says is new."""
        healed: list[Alert] = []
        with engine_for(self.cfg, now) as engine:
            todo = [f for f in findings if f.recoverable and f.code in REMEDIES and f.code not in NOT_AT_RUNTIME]
            heal_key = frozenset((f.code, f.subject) for f in todo)
            if not todo:
                self.heal_findings, self.heal_actions = [], []
            elif (
                heal_now
                and self.cfg.daemon.heal
                and self.cfg.heal.enabled
                and (heal_key != self.last_heal_key or sweep)
            ):
                base = [f for f in findings if f.code not in HEAL_CODES]
                report = Report(tuple(base), iso(now), self.cfg.bot.mode)
                try:
                    result = heal(self.cfg, now=now, before=report, budget=engine)
                except Exception as e:  # a broken remedy must not silence the alerts below
                    print(f"guardian: heal failed: {type(e).__name__}: {e}", file=sys.stderr)
                    result = HealResult(report, report, (), False)
                    self.heal_findings = [
                        unknown("heal", f"runtime heal raised {type(e).__name__}: {e}; nothing was healed", Level.HIGH)
                    ]
                else:
                    self.heal_findings = [f for f in result.after.findings if f.code in HEAL_CODES]
                self.heal_actions = [a for a in result.actions if a.outcome is not Outcome.HEALED]
                for a in result.actions:
                    self.heal_counts[a.outcome.value] += 1
                    if a.outcome is Outcome.HEALED:
                        healed.append(Alert.from_finding(a.finding, event="healed", now=now, message=a.detail))
                if self.metrics is not None:
                    self.metrics.heal(result.actions)
                if healed:  # look again at everything the repairs touched
                    self._run(Context(self.cfg, now=now, closed_memo=self.closed_memo), set(ALL_CHECKS))
                findings = self.findings()  # with what the attempt raised (STATE_UNRECOVERABLE, HEAL_LOOP)
            if heal_now:
                self.last_heal_key = heal_key
            if engine is None:
                alerts = healed + [Alert.from_finding(f, event="firing", now=now) for f in findings]
            else:
                alerts = healed + engine.evaluate(findings)
            for alert in alerts:  # sent before the state that says so is saved: a crash repeats, never loses
                self.alerter.emit(alert)
                if self.metrics is not None:
                    self.metrics.alert_sent(alert.level, alert.event)
        if self.metrics is not None:
            self.metrics.set_findings(findings, score=health_score(findings))

    # --- reload, status, shutdown -------------------------------------------------------------

    def reload(self) -> None:
        self.notifier.reloading()
        self.state = "reloading"
        try:
            new = config_mod.load(self.config_path)
        except ConfigError as e:
            print(e.report(), file=sys.stderr)
            print(f"guardian: reload refused: {self.config_path} is invalid; the running config stays", file=sys.stderr)
            self.config_error = Finding(
                "CONFIG_INVALID",
                Level.HIGH,
                str(self.config_path),
                f"reload refused, the previous config stays in force: {'; '.join(e.problems[:3])}",
                action=f"fix it (guardian --config {self.config_path} validate-config), then systemctl reload guardian",
            )
        else:
            self.cfg, self.config_error = new, None
            self._configure()
            print(f"guardian: reloaded {self.config_path} (mode {new.bot.mode}, home {new.bot.home})", file=sys.stderr)
        self.state = "running"
        self.evaluate(dict.fromkeys(ALL_CHECKS), sweep=True)
        self.notifier.ready(self.summary())

    def summary(self) -> str:
        line = status_mod.summary(self.findings(), self.last_check)
        return f"{line}; CONFIG RELOAD REFUSED" if self.config_error else line

    def status_doc(self) -> status_mod.Status:
        """status.json, as the one definition `guardian status` reads (guardian.daemon.status)."""
        findings = self.findings()
        verdict = self.verdict()
        lags = sorted(self.lags)

        def pct(q: float) -> float | None:
            return round(lags[min(len(lags) - 1, int(q * len(lags)))] * 1000, 2) if lags else None

        import psutil

        proc = psutil.Process()
        mono = time.monotonic()
        doc = {
            "version": 1,
            "pid": os.getpid(),
            "process_started": proc.create_time(),
            "state": self.state,
            "config": str(self.config_path),
            "config_error": self.config_error.message if self.config_error else None,
            "mode": self.cfg.bot.mode,
            "home": str(self.cfg.bot.home),
            "slot": self.topology[0].name if self.topology and self.topology[0] else None,
            "started_at": iso(self.started),
            "updated_at": iso(_now()),
            "last_check": iso(self.last_check),
            "last_sweep": iso(self.last_sweep) if self.last_sweep else None,
            "summary": self.summary(),
            "score": health_score(findings),
            "worst": status_mod.worst_level(findings),
            "counts": status_mod.level_counts(findings),
            "findings": [f.to_json() for f in sorted(findings, key=lambda f: -f.level)],
            "verdict": {**verdict.to_json(), "reason": verdict.reason("gate")},
            # The one mapping `guardian check` uses: status exits with it while the picture is current.
            "exit_code": monitoring_exit(findings, start_refused=self.cfg.bot.mode == "real" and not verdict.sound),
            "checks": {
                name: {
                    "runs": st.runs,
                    "duration_ms": round(st.duration * 1000, 3),
                    "errors": st.errors,
                    "last_error": st.last_error,
                    "backoff_until": iso(datetime.fromtimestamp(time.time() + st.backoff_until - mono, UTC))
                    if st.errors
                    else None,
                }
                for name, st in self.checks.items()
            },
            "heals": {k: self.heal_counts.get(k, 0) for k in ("healed", "failed", "refused")},
            "events": {
                "seen": self.watcher.events,
                "evaluations": self.evaluations,
                "lag_p50_ms": pct(0.5),
                "lag_p99_ms": pct(0.99),
                "cpu_budget_ms": round(self.cpu_left * 1000, 2),  # negative: event-driven checks wait
                "watched": len(self.watcher.watched),
                "watch_problems": self.watch_problems,
            },
            "watched_pids": sorted(self.pidfds),
            "resources": {"rss_mb": round(proc.memory_info().rss / 2**20, 1), "fds": proc.num_fds()},
        }
        return msgspec.convert(doc, status_mod.Status)

    def write_status(self, *, force: bool = False) -> None:
        if not force and time.monotonic() < self.next_status:
            return
        self.next_status = time.monotonic() + STATUS_EVERY
        self.notifier.status(self.summary())
        try:
            status_mod.write(self.state_dir, self.status_doc())
        except OSError as e:
            print(f"guardian: warning: cannot write status in {self.state_dir}: {e}", file=sys.stderr)

    def shutdown(self) -> None:
        self.notifier.stopping()
        self.state = "stopped"
        self.watcher.close()
        for fd in self.pidfds.values():
            os.close(fd)
        self.pidfds.clear()
        if self.metrics is not None:
            self.metrics.set_ready(False)
            self.metrics.close()
        with contextlib.suppress(Exception):
            self.write_status(force=True)


def run(config_path: Path) -> int:
    """``guardian run``: load the config (exit 78 if invalid) and watch until SIGTERM (exit 0)."""
    cfg = config_mod.load(config_path)
    return Daemon(config_path, cfg).run()
