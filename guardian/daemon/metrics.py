"""Prometheus metrics of ``guardian run``: a textfile for node_exporter's textfile collector and/or
``/metrics`` over HTTP, so a fleet of bots is watched by Prometheus and Alertmanager.

Imported only when ``metrics.textfile`` or ``metrics.listen`` is set: prometheus_client costs ~50 ms
to import. Every series carries a constant ``bot`` label (the bot's unit), so several bots on one
host, each with its own textfile, stay apart. Example alerting rules: contrib/prometheus/.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from guardian.fsutil import atomic_write
from guardian.model import Finding, HealAction, Outcome

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

FLUSH_INTERVAL = 5.0  # seconds between textfile writes: node_exporter is scraped every 15 s or more
CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
DECISIONS = ("allowed", "refused")


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9815"`` or ``"[::1]:9815"`` -> (host, port). The config has validated the form."""
    host, _, port = listen.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _number(value: Any) -> float:
    """A count or timestamp from gate.json; anything else (a hand-edited file) counts as 0."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else 0.0


class _Snapshot:
    """Serves the instance's registry under its lock, so a scrape never sees half of set_findings(),
    then the gate's decisions, read from gate.json at each collection (the gate is another process)."""

    def __init__(self, inner: CollectorRegistry, lock: threading.Lock, bot: str, state_dir: Path) -> None:
        self._inner, self._lock, self._bot, self._state_dir = inner, lock, bot, state_dir

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            families = list(self._inner.collect())
        from guardian.history import read_decisions  # loaded at the first collection, not at import

        h = read_decisions(self._state_dir)
        data = {
            "allowed": h.allowed,
            "refused": h.refused,
            "last_allowed_t": h.last_allowed_t,
            "last_refused_t": h.last_refused_t,
        }
        # A real counter: gate.json keeps the counts across restarts of both processes.
        total = CounterMetricFamily(
            "guardian_gate_decisions", "Start decisions of `guardian gate`, from gate.json", labels=["bot", "decision"]
        )
        last = GaugeMetricFamily(
            "guardian_gate_last_decision_timestamp_seconds",
            "When `guardian gate` last allowed / refused the bot's start",
            labels=["bot", "decision"],
        )
        for decision in DECISIONS:
            total.add_metric([self._bot, decision], _number(data.get(decision)))
            if when := _number(data.get(f"last_{decision}_t")):
                last.add_metric([self._bot, decision], when)
        return [*families, total, last]


class Metrics:
    """The daemon's metrics. Every method may be called from any thread; the HTTP server collects in
    its own threads. The methods only update memory, except flush() and close(), which write the
    textfile (a few hundred microseconds without fsync: see _write)."""

    def __init__(self, *, bot: str, mode: str, textfile: Path | None, listen: str | None, state_dir: Path) -> None:
        # `_created` series would double every counter and histogram, and node_exporter's textfile
        # collector gives them no meaning. Process-wide, but guardian has no other prometheus user.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client 0.26
        self.bot, self.textfile, self.listen = bot, textfile, listen
        self._lock = threading.Lock()  # the series, against a scrape in between
        self._flush_lock = threading.Lock()  # one writer of the temp file at a time
        inner = CollectorRegistry(auto_describe=False)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Snapshot(inner, self._lock, bot, state_dir))

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, ["bot", *labels], registry=inner)

        self._up = gauge("guardian_up", "1 while guardian run is running, 0 once it stopped cleanly", ["mode"])
        self._up.labels(bot, mode).set(1)
        self._mode = mode
        self._ready = gauge("guardian_ready", "1 while the daemon is ready (it told systemd READY=1), else 0")
        self._ready.labels(bot).set(0)
        gauge("guardian_daemon_start_time_seconds", "When guardian run started (Unix time)").labels(bot).set(
            time.time()
        )
        self._findings = gauge("guardian_findings", "Current findings by code and level", ["code", "level"])
        self._score = gauge("guardian_health_score", "Health score of the last evaluation (0-100)")
        # Created at the first sweep: a 0 would make "time() - last sweep > 180" fire at every start.
        self._last_sweep = gauge("guardian_last_sweep_timestamp_seconds", "When the last full sweep ended (Unix time)")
        self._heals = Counter(
            "guardian_heals", "Remedies run, by finding code and outcome", ["bot", "code", "outcome"], registry=inner
        )
        self._alerts = Counter(
            "guardian_alerts", "Alerts sent, by level and event", ["bot", "level", "event"], registry=inner
        )
        self._check_errors = Counter("guardian_check_errors", "Checks that raised", ["bot", "check"], registry=inner)
        self._check_seconds = Histogram(
            "guardian_check_duration_seconds",
            "Duration of one check",
            ["bot", "check"],
            buckets=CHECK_BUCKETS,
            registry=inner,
        )
        self._lag = Histogram(
            "guardian_event_lag_seconds",
            "From a file event to the end of its evaluation",
            ["bot"],
            buckets=LAG_BUCKETS,
            registry=inner,
        )
        self._lag_child = self._lag.labels(bot)
        from guardian.heal import REMEDIES  # the daemon has it loaded already

        # Zeros from the start, so the first failure is an increase() that rules can see.
        for code in REMEDIES:
            for outcome in (Outcome.HEALED, Outcome.FAILED, Outcome.REFUSED):
                self._heals.labels(bot, code, outcome.value)
        self._shown: set[tuple[str, str]] = set()
        self._last_flush: float | None = None
        self._warned: str | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Serve /metrics when ``listen`` is set. Raise OSError (with the address) if it cannot bind."""
        if self.listen is None or self._server is not None:
            return
        host, port = parse_listen(self.listen)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise OSError(e.errno, f"metrics.listen {self.listen}: cannot serve /metrics: {e.strerror or e}") from e

    @property
    def port(self) -> int | None:
        """The port served (useful with port 0), None without HTTP."""
        return int(self._server.server_port) if self._server is not None else None

    def set_ready(self, ready: bool) -> None:
        self._ready.labels(self.bot).set(1 if ready else 0)

    def set_findings(self, findings: Sequence[Finding], *, score: int) -> None:
        """The findings of the latest evaluation. A (code, level) that went away reads 0, so alerts resolve."""
        counts = Tally((f.code, f.level.name) for f in findings)
        with self._lock:
            for key in self._shown - counts.keys():
                self._findings.labels(self.bot, *key).set(0)
            for key, n in counts.items():
                self._findings.labels(self.bot, *key).set(n)
            self._shown |= counts.keys()
            self._score.labels(self.bot).set(score)

    def heal(self, actions: Sequence[HealAction]) -> None:
        with self._lock:
            for a in actions:
                self._heals.labels(self.bot, a.finding.code, a.outcome.value).inc()

    def alert_sent(self, level: str, event: str) -> None:
        self._alerts.labels(self.bot, level, event).inc()

    def check_ran(self, name: str, seconds: float, *, ok: bool) -> None:
        self._check_seconds.labels(self.bot, name).observe(seconds)
        errors = self._check_errors.labels(self.bot, name)  # a 0 from the first run: see the heals above
        if not ok:
            errors.inc()

    def event_lag(self, seconds: float) -> None:
        self._lag_child.observe(seconds)

    def sweep_done(self, when: float) -> None:
        self._last_sweep.labels(self.bot).set(when)

    def render(self) -> bytes:
        """The exposition text, as written to the textfile and served over HTTP."""
        return generate_latest(self.registry)

    def flush(self, now: float, *, force: bool = False) -> None:
        """Write the textfile, at most once per FLUSH_INTERVAL of ``now`` (any clock, monotonic best)
        unless ``force``. A write error is warned about once (per distinct error), never raised."""
        if self.textfile is None:
            return
        with self._flush_lock:
            last = self._last_flush
            # A clock that went back (time.time() after an NTP step) must not stop the writes.
            if not force and last is not None and 0 <= now - last < FLUSH_INTERVAL:
                return
            self._last_flush = now
            try:
                # Atomic (node_exporter never reads half a file; the temp name does not end in .prom).
                atomic_write(self.textfile, self.render(), durable=False)
            except OSError as e:
                problem = f"{type(e).__name__}: {e}"
                if problem != self._warned:
                    print(
                        f"guardian: warning: metrics textfile {self.textfile}: {problem}", file=sys.stderr, flush=True
                    )
                    self._warned = problem
            else:
                self._warned = None

    def close(self) -> None:
        """Say the daemon stopped (guardian_up 0), write the textfile a last time, stop the HTTP server."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._up.labels(self.bot, self._mode).set(0)
            self._ready.labels(self.bot).set(0)
        self.flush(time.monotonic(), force=True)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None
