"""YAML config -> frozen dataclasses, with every problem reported at once with its key path.

A config holding only ``bot.home`` and ``bot.mode`` is valid: every other key defaults to the bot
layout of ``docs/bot-layout.md`` and the seeds' thresholds.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import reprlib
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import yaml

DEFAULT_CONFIG = Path("/etc/guardian/guardian.yaml")
EX_CONFIG = 78  # sysexits.h: configuration error

Mode = Literal["paper", "real"]


def _duration(default: float) -> Any:
    return field(default=default, metadata={"duration": True})


@dataclass(frozen=True)
class BotConfig:
    home: Path
    mode: Mode
    data: Path | None = None  # None: the current slot (<home>/<current_link>), as in the audited deployment
    slots_dir: str = "slots"
    current_link: str = "trading-bot-current"
    deployed_slot: str | None = None  # None: read <home>/DEPLOYED_SLOT when it exists
    deployed_slot_file: str = "DEPLOYED_SLOT"
    previous_slot: str | None = None  # None: <home>/PREVIOUS_SLOT, else the other slot changed most recently
    previous_slot_file: str = "PREVIOUS_SLOT"
    unit: str = "tradingbot.service"
    venv: Path | None = None  # None: <slot>/.venv, else <home>/venv, where one exists
    # How the bot locks: "flock" (filelock.FileLock: the kernel drops a dead holder's lock, so an
    # idle lock file is harmless) or "soft" (the file's existence is the lock, as SoftFileLock).
    lock_style: Literal["flock", "soft"] = "flock"


@dataclass(frozen=True)
class FilesConfig:
    positions: str = "logs/positions_futures.json"
    portfolio: str = "logs/portfolio_futures.json"
    alerts: str = "logs/operator_alerts.jsonl"
    backups: str = "logs/backups"
    heartbeats: str = "state/heartbeats"
    wal: str = "state/wal/operations.wal"
    emergency_stop: str = "state/emergency_stop.json"
    required_dirs: tuple[str, ...] = (
        "logs",
        "config",
        "configs",
        "data",
        "feature_store",
        "state",
        "state/heartbeats",
        "logs/backups",
    )
    # Names a failed atomic save leaves behind (tempfile's and the common `<file>.tmp` forms).
    temp_patterns: tuple[str, ...] = ("*.tmp", "*.tmp.*", ".*.tmp", "tmp*.json", "tmp????????")
    max_state_mb: int = 4096  # a state file larger than this is not read (UNKNOWN): it would exhaust memory


@dataclass(frozen=True)
class Thresholds:
    lock_stale: float = _duration(300.0)
    lock_held_max: float = _duration(300.0)
    heartbeat_stale: float = _duration(600.0)
    clock_skew: float = _duration(60.0)  # a heartbeat further in the future than this is wrong
    temp_file_age: float = _duration(300.0)  # younger temp files may be a save in progress
    min_health_score: int = 50
    disk_min_free_mb: int = 512
    bot_start_grace: float = _duration(120.0)  # a bot younger than this is starting: its heartbeats do not count yet


@dataclass(frozen=True)
class Limits:
    max_position_pct: float = 5.0
    max_daily_loss_pct: float = 2.0
    max_open_positions: int = 3
    require_stop_loss: bool = True
    # A stop at or past the entry (a LONG's at or above it) is CRITICAL: it closes at once or never
    # protects. A bot that trails its stop into profit sets this true: then only the side is judged.
    stop_loss_past_entry: bool = False
    max_leverage: float = 125.0  # leverage above this on an open position is CRITICAL (Binance's maximum is 125)


@dataclass(frozen=True)
class SlotsConfig:
    # Files (relative to a slot) that must be identical in the current and the previous slot.
    must_match: tuple[str, ...] = ("config/asset_universe.json",)
    # JSON config files (relative to a slot) that must parse.
    must_parse: tuple[str, ...] = ("config/live_config.json", "config/asset_universe.json")
    requirements: str = "requirements.lock"


@dataclass(frozen=True)
class TradeStoreConfig:
    sqlite: str | None = None  # path relative to the data root; None: no SQLite store
    query: str = "SELECT id FROM closed_positions"


@dataclass(frozen=True)
class HealConfig:
    enabled: bool = True
    kill_orphans_in_paper: bool = True
    orphan_term_timeout: float = _duration(5.0)
    lock_timeout: float = _duration(2.0)  # how long a write waits for the bot's lock before giving up


@dataclass(frozen=True)
class AlertsConfig:
    jsonl: str | None = None  # None: files.alerts under the data root
    jsonl_max_mb: float = 10.0  # rotate the JSONL log past this size
    jsonl_keep: int = 5  # rotated files kept (operator_alerts.jsonl.1 ... .N)
    stderr: bool = True  # the human [LEVEL] CODE: message lines, for terminals
    journald: bool = True  # native journal fields when the journal socket is there
    journald_socket: Path = Path("/run/systemd/journal/socket")
    command: tuple[str, ...] = ()  # argv run with the alert JSON on stdin (a Telegram/Slack bridge)
    command_timeout: float = _duration(10.0)
    webhook: str | None = None  # URL the alert JSON is POSTed to
    webhook_timeout: float = _duration(5.0)
    webhook_retries: int = 2
    remind_critical: float = _duration(900.0)  # re-send a still-firing alert after this, per level
    remind_high: float = _duration(3600.0)
    remind_medium: float = _duration(21600.0)
    remind_low: float = _duration(86400.0)
    flap_changes: int = 6  # more state changes than this within flap_window: FLAPPING, held until stable
    flap_window: float = _duration(3600.0)
    heal_budget: int = 3  # the same remedy on the same subject more often than this within heal_window: HEAL_LOOP
    heal_window: float = _duration(3600.0)


@dataclass(frozen=True)
class GuardianConfig:
    state_dir: Path = Path("/var/lib/guardian")


@dataclass(frozen=True)
class DaemonConfig:
    sweep: float = _duration(60.0)  # every check, whatever the events said: catches anything an event missed
    coalesce: float = _duration(0.05)  # at most one re-check of a file per this, however fast the bot writes
    cpu_percent: float = 10.0  # re-checks of files that keep changing take at most this share of a core
    heal: bool = True  # heal at runtime as the gate does (heal.enabled still rules both)
    backoff_max: float = _duration(600.0)  # a check that keeps raising is retried after 1 s, 2 s, 4 s ... up to this


@dataclass(frozen=True)
class MetricsConfig:
    textfile: Path | None = None  # Prometheus textfile (node_exporter's collector dir), written atomically
    listen: str | None = None  # "127.0.0.1:9815": also serve /metrics over HTTP


@dataclass(frozen=True)
class Config:
    bot: BotConfig
    files: FilesConfig = FilesConfig()
    thresholds: Thresholds = Thresholds()
    limits: Limits = Limits()
    slots: SlotsConfig = SlotsConfig()
    trade_store: TradeStoreConfig = TradeStoreConfig()
    heal: HealConfig = HealConfig()
    alerts: AlertsConfig = AlertsConfig()
    guardian: GuardianConfig = GuardianConfig()
    daemon: DaemonConfig = DaemonConfig()
    metrics: MetricsConfig = MetricsConfig()


class ConfigError(Exception):
    """The config cannot be used. ``problems`` holds every problem found, each with its key path."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        super().__init__(f"{source}: invalid config")
        self.source = source
        self.problems = list(problems)

    def report(self) -> str:
        lines = [f"guardian: invalid config {self.source} ({len(self.problems)} problem(s)):"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: object) -> float:
    """Return seconds for ``300``, ``"300s"``, ``"5m"``, ``"2h"``. Raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 300, '300s', '5m' or '2h'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("must be a duration like 300, '300s', '5m' or '2h', got a number too large") from None
    else:
        m = _DURATION.match(value) if isinstance(value, str) else None
        if not m:
            raise ValueError(f"must be a duration like 300, '300s', '5m' or '2h', got {_show(value)}")
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(f"must not be negative or NaN, got {_show(value)}")
    return seconds


# --- what each key may be ------------------------------------------------------------------------
# One table, RULES, holds every bound and path rule: the builder enforces it and the key table of
# docs/configuration.md is rendered from it (reference_markdown), so the two cannot drift apart.

MINUTE, HOUR, DAY, WEEK = 60.0, 3600.0, 86400.0, 604800.0

Show = Callable[[Any], str]

# Refused as bot.home, bot.data and guardian.state_dir, as written and as resolved: guardian kills the
# home's orphan processes and repairs, replaces and deletes files in these. A directory inside one of
# them (/srv/tradingbot, /var/lib/tradingbot, /home/bot/tradingbot, /tmp/<test tree>) is fine.
SYSTEM_DIRS: tuple[str, ...] = (
    "/", "/bin", "/boot", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/lost+found", "/media",
    "/mnt", "/opt", "/root", "/run", "/run/lock", "/run/user", "/sbin", "/snap", "/srv", "/tmp",
    "/usr", "/usr/bin", "/usr/include", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec",
    "/usr/local", "/usr/local/bin", "/usr/local/lib", "/usr/local/sbin", "/usr/local/share", "/usr/sbin",
    "/usr/share", "/usr/src", "/var", "/var/backups", "/var/cache", "/var/lib", "/var/local", "/var/lock",
    "/var/log", "/var/mail", "/var/opt", "/var/run", "/var/spool", "/var/tmp",
)  # fmt: skip
# The kernel's views: no directory inside them holds a bot's files either.
KERNEL_TREES: tuple[str, ...] = ("/dev", "/proc", "/sys")
# Compared with the path as written and as resolved, not with where each system directory leads on
# this host: resolving them all (an lstat each) took 0.6 ms of the gate's parse. The usual links'
# targets are in the list themselves: /bin, /sbin and /lib* lead into /usr, /var/run and /var/lock to /run.
_SYSTEM_DIRS = frozenset(SYSTEM_DIRS)


class Rule:
    """What one key may be: ``problem`` says what is wrong with a value, ``describe`` the bound, ``why`` its reason.

    Plain classes, not dataclasses: as dataclasses these five added 3.5 ms to every gate's import, as
    each one compiles its generated methods when it is created.
    """

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why

    def describe(self, show: Show) -> str:
        raise NotImplementedError

    def problem(self, value: Any, show: Show) -> str | None:
        raise NotImplementedError


class Bound(Rule):
    """A number's range: from ``low`` (excluded when ``open_low``) up to ``high`` (None: no limit)."""

    __slots__ = ("high", "low", "open_low")

    def __init__(self, low: float, high: float | None, why: str, *, open_low: bool = False) -> None:
        super().__init__(why)
        self.low, self.high, self.open_low = low, high, open_low

    def describe(self, show: Show) -> str:
        if self.high is None:
            return f"{'more than' if self.open_low else 'at least'} {show(self.low)}"
        return f"{'(' if self.open_low else '['}{show(self.low)}, {show(self.high)}]"

    def problem(self, value: Any, show: Show) -> str | None:
        above = value > self.low if self.open_low else value >= self.low
        if above and (self.high is None or value <= self.high):
            return None
        return f"must be {'' if self.high is None else 'in '}{self.describe(show)}, got {show(value)}"


class Inside(Rule):
    """A relative path that stays inside ``root``."""

    __slots__ = ("root",)

    def __init__(self, root: str, why: str) -> None:
        super().__init__(why)
        self.root = root

    def describe(self, show: Show) -> str:
        return f"relative, inside {self.root} (no `..`, not empty)"

    def problem(self, value: Any, show: Show) -> str | None:
        parts = [p for p in value.split("/") if p not in ("", ".")]  # PurePosixPath's parts, at a tenth of the cost
        if value.startswith("/") or ".." in parts or not parts or "\0" in value:
            return f"must be a relative path inside {self.root}, got {_show(value)}"
        return None


class NotSystemDir(Rule):
    __slots__ = ()

    def describe(self, show: Show) -> str:
        return "not `/` nor a system directory (below), as written or resolved"

    def problem(self, value: Any, show: Show) -> str | None:
        written, resolved = os.path.normpath(value), os.path.realpath(value)
        if not (_is_system_dir(written) or _is_system_dir(resolved)):
            return None
        via = f" (which resolves to {resolved})" if resolved != str(value) else ""
        return f"must not be / or a system directory, got {_show(str(value))}{via}"


class HostPort(Rule):
    __slots__ = ()

    def describe(self, show: Show) -> str:
        return "`HOST:PORT`, the port 1 to 65535"

    def problem(self, value: Any, show: Show) -> str | None:
        host, _, port = value.rpartition(":")
        if host and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
            return None
        return f"must be HOST:PORT such as 127.0.0.1:9815, got {_show(value)}"


class HttpUrl(Rule):
    __slots__ = ()

    def describe(self, show: Show) -> str:
        return "an `http://` or `https://` URL with a host"

    def problem(self, value: Any, show: Show) -> str | None:
        try:
            parts = urllib.parse.urlsplit(value)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a port out of range, a broken [IPv6] host
            ok = False
        return None if ok else f"must be an http:// or https:// URL with a host, got {_show(value)}"


_HOME = Inside("bot.home", "read from the home; out of it, guardian would read another bot's slots or link")
_SLOTS = Inside("bot.slots_dir", "a slot's name; `../x` would take any directory for a slot")
_DATA = Inside("the data root", "guardian creates, repairs and replaces these; out of the root, files not the bot's")
_SLOT = Inside("the slot", "read in the current and the previous slot; out of it, files of neither")
_REMIND = Bound(MINUTE, WEEK, "more often than every minute is noise; a still-firing alert is repeated at least weekly")
_SINK = "a sink that hangs holds up the alerts after it, and the gate sending them"

RULES: dict[str, Rule] = {
    "bot.home": NotSystemDir(
        "every process running code from the home counts as the bot's: with `/` the paper-mode gate"
        " once killed an unrelated python process as an orphan"
    ),
    "bot.data": NotSystemDir("guardian creates directories and repairs, replaces and deletes files in the data root"),
    "bot.slots_dir": _HOME,
    "bot.current_link": _HOME,
    "bot.deployed_slot": _SLOTS,
    "bot.deployed_slot_file": _HOME,
    "bot.previous_slot": _SLOTS,
    "bot.previous_slot_file": _HOME,
    "files.positions": _DATA,
    "files.portfolio": _DATA,
    "files.alerts": _DATA,
    "files.backups": _DATA,
    "files.heartbeats": _DATA,
    "files.wal": _DATA,
    "files.emergency_stop": _DATA,
    "files.required_dirs": _DATA,
    "files.max_state_mb": Bound(1, None, "0 would leave every state file unread (UNKNOWN)"),
    "thresholds.lock_stale": Bound(
        0, DAY, "0: a lock no live process holds is stale at once; a dead soft lock blocks the bot's saves until then"
    ),
    "thresholds.lock_held_max": Bound(0, DAY, "0 would call every held lock contended", open_low=True),
    "thresholds.heartbeat_stale": Bound(
        0, DAY, "0 would call every heartbeat stale; a hung bot is reported within a day at worst", open_low=True
    ),
    "thresholds.clock_skew": Bound(
        0,
        HOUR,
        "0 would flag a beat written just after guardian read the clock; an hour ahead is a wrong clock",
        open_low=True,
    ),
    "thresholds.temp_file_age": Bound(
        1, DAY, "a younger temp file may be a save in progress, which the heal would take for a leftover and delete"
    ),
    "thresholds.min_health_score": Bound(0, 100, "the score's own range"),
    "thresholds.disk_min_free_mb": Bound(0, None, "0 leaves only the floor of twice the positions file"),
    "thresholds.bot_start_grace": Bound(
        0, HOUR, "0: no grace; a bot still starting after an hour is hung, and the grace would hide that"
    ),
    "limits.max_position_pct": Bound(
        0, 100, "a share of the balance; 0 would make every position a breach", open_low=True
    ),
    "limits.max_daily_loss_pct": Bound(0, 100, "a share of the balance; 0 would make any loss a breach", open_low=True),
    "limits.max_open_positions": Bound(1, 1000, "0 would make any open position a breach; 1000 is past any bot's book"),
    "limits.max_leverage": Bound(1, 1000, "1 is no leverage; no exchange offers more than 1000 (Binance: 125)"),
    "slots.must_match": _SLOT,
    "slots.must_parse": _SLOT,
    "slots.requirements": _SLOT,
    "trade_store.sqlite": _DATA,
    "heal.orphan_term_timeout": Bound(
        0,
        MINUTE,
        "the gate waits this long for an orphan to exit before SIGKILL; the bot's start waits too",
        open_low=True,
    ),
    "heal.lock_timeout": Bound(
        0, MINUTE, "a repair waits this long for the bot's lock; the gate, and the bot's start, wait too", open_low=True
    ),
    "alerts.jsonl_max_mb": Bound(0, None, "0 would rotate at every alert", open_low=True),
    "alerts.jsonl_keep": Bound(0, 1000, "0 keeps no rotated file; past 1000 old logs only fill the disk"),
    "alerts.command_timeout": Bound(0, 5 * MINUTE, _SINK, open_low=True),
    "alerts.webhook": HttpUrl(
        "nothing else is a webhook (`file:` would read a local file); refused at load, not at the first alert"
    ),
    "alerts.webhook_timeout": Bound(0, 5 * MINUTE, _SINK, open_low=True),
    "alerts.webhook_retries": Bound(
        0, 10, "each retry waits twice as long as the last: 10 already wait 3.4 min for a dead endpoint"
    ),
    "alerts.remind_critical": _REMIND,
    "alerts.remind_high": _REMIND,
    "alerts.remind_medium": _REMIND,
    "alerts.remind_low": _REMIND,
    "alerts.flap_changes": Bound(1, None, "0 would call every change flapping"),
    "alerts.flap_window": Bound(
        0, DAY, "0 would see no two changes together; past a day, yesterday's changes still count", open_low=True
    ),
    "alerts.heal_budget": Bound(1, None, "0 would call the first heal a loop"),
    "alerts.heal_window": Bound(
        0, DAY, "0 would see no two heals together; past a day, yesterday's heals still count", open_low=True
    ),
    "guardian.state_dir": NotSystemDir("guardian writes its alert state, silences, gate decisions and status there"),
    "daemon.sweep": Bound(
        1, HOUR, "more often than every second is a busy loop; what an event missed waits an hour at most"
    ),
    "daemon.coalesce": Bound(0, 10, "0 re-checks at every event; past 10 s a change is reported late"),
    "daemon.cpu_percent": Bound(0, 100, "a share of one core", open_low=True),
    "daemon.backoff_max": Bound(
        1, DAY, "retries start 1 s apart; a check that keeps raising is retried at least daily"
    ),
    "metrics.listen": HostPort("port 0 would be a random port no Prometheus finds"),
}


def _is_system_dir(path: str) -> bool:
    return path in _SYSTEM_DIRS or any(path == t or path.startswith(f"{t}/") for t in KERNEL_TREES)


def format_duration(seconds: float) -> str:
    """``300`` -> ``5min``: a duration as a config may write it."""
    if seconds == 0 or not math.isfinite(seconds):  # YAML's .inf is a float, so parse_duration takes it
        return f"{seconds:g}"
    for unit, size in (("d", DAY), ("h", HOUR), ("min", MINUTE), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:.15g}{unit}"
    return f"{seconds * 1000:.15g}ms" if seconds < 1 else f"{seconds:.15g}s"


def _format_number(value: float) -> str:
    return f"{value:.15g}" if isinstance(value, float) else str(value)


# --- YAML -> dataclasses ------------------------------------------------------------------------

# Each converter returns the value (a placeholder when it is wrong) and the problem, if any.
Converted = tuple[Any, str | None]


def _to_duration(tp: Any, value: object, base_dir: Path) -> Converted:
    try:
        return parse_duration(value), None
    except ValueError as e:
        return 0.0, str(e)


def _to_choice(tp: Any, value: object, base_dir: Path) -> Converted:
    args = typing.get_args(tp)
    if value in args:
        return value, None
    return value, f"must be {' or '.join(repr(a) for a in args)}, got {_show(value)}"


def _to_strings(tp: Any, value: object, base_dir: Path) -> Converted:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value), None
    return (), f"must be a list of strings, got {_kind(value)}"


def _to_bool(tp: Any, value: object, base_dir: Path) -> Converted:
    return value, None if isinstance(value, bool) else f"must be true or false, got {_show(value)}"


def _to_number(tp: Any, value: object, base_dir: Path) -> Converted:
    if isinstance(value, float) and not math.isfinite(value):
        return 0, f"must be a finite number, got {_show(value)}"
    if isinstance(value, int) and not isinstance(value, bool) and tp is float and abs(value) > 2**1023:
        return 0, "must be a number of a sane size"
    if isinstance(value, bool) or not isinstance(value, int | float) or (tp is int and value != int(value)):
        return 0, f"must be {'an integer' if tp is int else 'a number'}, got {_show(value)}"
    return tp(value), None


def _to_path(tp: Any, value: object, base_dir: Path) -> Converted:
    if not isinstance(value, str) or not value:
        return Path(), f"must be a path, got {_kind(value)}"
    if "\0" in value:
        return Path(), f"must be a path without a NUL byte, got {_show(value)}"
    try:
        p = Path(value).expanduser()
    except RuntimeError as e:  # ~name of a user this host does not know
        return Path(), f"cannot expand {_show(value)}: {e}"
    return (p if p.is_absolute() else base_dir / p), None


def _to_str(tp: Any, value: object, base_dir: Path) -> Converted:
    return value, None if isinstance(value, str) else f"must be a string, got {_kind(value)}"


_CONVERTERS: dict[object, Callable[[Any, object, Path], Converted]] = {
    "duration": _to_duration,
    Literal: _to_choice,
    tuple: _to_strings,
    bool: _to_bool,
    int: _to_number,
    float: _to_number,
    Path: _to_path,
    str: _to_str,
}


def _optional(tp: Any) -> Any:
    """``X`` for ``X | None``, else None."""
    if typing.get_origin(tp) not in (types.UnionType, typing.Union):
        return None
    (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
    return inner


class _Builder:
    """Convert plain YAML data to the dataclasses above, collecting problems instead of raising."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def build(self, cls: type[Any], data: object, path: str) -> Any:
        if not isinstance(data, Mapping):
            self.problem(path or "(top level)", f"must be a mapping, got {_kind(data)}")
            data = {}
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                where = f"{path}.{key}" if path else str(key)
                near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
                hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(fields)}"
                self.problem(where, f"unknown key{hint}")
        values: dict[str, Any] = {}
        for name, f in fields.items():
            where = f"{path}.{name}" if path else name
            if name in data:
                values[name] = self.convert(hints[name], data[name], where, f.metadata)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if dataclasses.is_dataclass(hints[name]):
                    values[name] = self.build(hints[name], {}, where)
                else:
                    self.problem(where, "is required")
                    values[name] = None
        return cls(**values)

    def convert(self, tp: Any, value: object, path: str, meta: Mapping[str, Any]) -> Any:
        inner = _optional(tp)
        if inner is not None:
            if value is None:
                return None
            tp = inner
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, path)  # type: ignore[arg-type]
        kind = "duration" if meta.get("duration") else (typing.get_origin(tp) or tp)
        if kind not in _CONVERTERS:
            raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module, not in the config
        result, problem = _CONVERTERS[kind](tp, value, self.base_dir)
        if problem is not None:
            self.problem(path, problem)
        elif path in RULES:
            self.check(RULES[path], result, path, format_duration if meta.get("duration") else _format_number)
        return result

    def check(self, rule: Rule, value: Any, path: str, show: Show) -> None:
        """A list's rule holds for each of its entries."""
        entries = {f"{path}[{i}]": v for i, v in enumerate(value)} if isinstance(value, tuple) else {path: value}
        for where, v in entries.items():
            problem = rule.problem(v, show)
            if problem is not None:
                self.problem(where, problem)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    # Evaluating the annotations' strings was most of a parse's time; a daemon reloads, tests parse often.
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(type(value)) or _show(value)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80


def _show(value: object) -> str:
    """A value for a problem message: short, and safe for YAML nested thousands deep."""
    return _REPR.repr(value)


_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


def _duplicate_keys(root: yaml.Node) -> list[str]:
    """Every key given twice in one mapping, at any depth, with its key path and lines.

    Found on the composed nodes, before they become dicts, which keep the last of two equal keys
    without a word: ``mode: real`` then ``mode: paper`` once ran a bot in paper mode. Not in the
    constructor's construct_mapping: it does not know the key path, and a ``<<`` merge flattens
    the merged mapping in place before that mapping's own turn (its keys would look duplicated).
    """
    import yaml

    found: list[tuple[int, str]] = []
    seen: set[int] = set()
    collections = (yaml.MappingNode, yaml.SequenceNode)  # only these hold keys; scalars are not walked
    todo: list[tuple[yaml.Node, str]] = [(root, "")] if isinstance(root, collections) else []
    while todo:  # depth first, in document order: an anchored node is met where it is written
        node, path = todo.pop()
        if id(node) in seen:  # an alias: checked where its anchor is
            continue
        seen.add(id(node))
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{i}]") for i, item in enumerate(node.value) if isinstance(item, collections)]
        else:
            keys: dict[object, tuple[str, list[yaml.Mark]]] = {}  # by key: its name and where it is
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:  # `<<` is no key but mappings merged in: checked under this path
                    children.append((value_node, path))
                elif isinstance(key_node, yaml.ScalarNode):
                    # The tag tells `1` from `"1"`; every key guardian knows is a string.
                    key = key_node.value if key_node.tag == _STR_TAG else (key_node.tag, key_node.value)
                    keys.setdefault(key, (key_node.value, []))[1].append(key_node.start_mark)
                    if isinstance(value_node, collections):
                        children.append((value_node, f"{path}.{key_node.value}" if path else key_node.value))
            for name, marks in keys.values():
                if len(marks) > 1:
                    where = f"{path}.{name}" if path else name
                    found.append(
                        (marks[0].line, f"{where}: duplicate key, at {_lines(marks)}: YAML keeps only the last")
                    )
        todo += reversed(children)
    return [message for _, message in sorted(found)]


def _lines(marks: Sequence[yaml.Mark]) -> str:
    """``lines 3 and 5``; ``lines 1:7 and 1:19`` (with columns) for keys that share a line."""
    rows = [m.line for m in marks]
    at = [f"{m.line + 1}:{m.column + 1}" if rows.count(m.line) > 1 else str(m.line + 1) for m in marks]
    return f"lines {', '.join(at[:-1])} and {at[-1]}"


def _load_yaml(text: str) -> tuple[object, list[str]]:
    """The YAML document in ``text`` and its duplicate keys."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # libyaml when present: same rules, faster
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        duplicates = _duplicate_keys(node)  # first: constructing flattens `<<` merges in place
        return loader.construct_document(node), duplicates
    finally:
        loader.dispose()


def leaf_fields(cls: type[Any], prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """Every key of ``cls`` (a section's keys, not the section), in order: key path, field, type."""
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            yield from leaf_fields(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            yield f"{prefix}{f.name}", f, tp


_DOC_TYPES: dict[object, str] = {
    bool: "`true` or `false`",
    int: "integer",
    float: "number",
    str: "string",
    Path: "path",
    tuple: "list of strings",
}


def reference_markdown() -> str:
    """The generated part of docs/configuration.md: every key with its default, its bound and why."""
    rows = ["| Key | Type | Default | Allowed | Why |", "|---|---|---|---|---|"]
    for path, f, tp in leaf_fields(Config):
        show = format_duration if f.metadata.get("duration") else _format_number
        rule = RULES.get(path)
        allowed, why = (rule.describe(show), rule.why) if rule else ("", "")
        if rule and typing.get_origin(tp) is tuple:
            allowed = f"each entry {allowed}"
        rows.append(f"| `{path}` | {_doc_type(tp, f)} | {_doc_default(f, show)} | {allowed} | {why} |")
    keys = [f"`{k}`" for k, rule in RULES.items() if isinstance(rule, NotSystemDir)]
    dirs = ", ".join(f"`{d}`" for d in SYSTEM_DIRS)
    trees = ", ".join(f"`{d}`" for d in KERNEL_TREES)
    return "\n".join(
        [
            *rows,
            "",
            f"System directories, refused as {', '.join(keys[:-1])} and {keys[-1]} (as written, and once"
            f" symlinks and `..` are resolved): {dirs}; and {trees} with everything inside them.",
        ]
    )


def _doc_type(tp: Any, f: dataclasses.Field[Any]) -> str:
    inner = _optional(tp)
    base = tp if inner is None else inner
    if f.metadata.get("duration"):
        text = "duration"
    elif typing.get_origin(base) is Literal:
        text = " or ".join(f"`{a}`" for a in typing.get_args(base))
    else:
        text = _DOC_TYPES[typing.get_origin(base) or base]
    return text if inner is None else f"{text} or `null`"


def _doc_default(f: dataclasses.Field[Any], show: Show) -> str:
    v = f.default
    if v is dataclasses.MISSING:
        return "required"
    if isinstance(v, bool) or v is None:
        return f"`{json.dumps(v)}`"
    if isinstance(v, tuple):
        return f"`{json.dumps(list(v))}`"
    return f"`{show(v)}`" if isinstance(v, int | float) else f"`{v}`"


def resolve_path(cli_value: str | None) -> Path:
    """Where the config comes from: ``--config``, else ``$GUARDIAN_CONFIG``, else the system default."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("GUARDIAN_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def parse(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> Config:
    """Return the Config in ``text``. Raise ConfigError listing every problem."""
    import yaml

    try:
        data, duplicates = _load_yaml(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(source, [f"YAML syntax error at {where}: {e.problem}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError(source, [f"YAML error: {e}"]) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # a value YAML's own constructors reject
        raise ConfigError(source, [f"YAML value error: {type(e).__name__}: {e}"]) from None
    b = _Builder(base_dir or Path.cwd())
    b.problems += duplicates
    cfg: Config = b.build(Config, {} if data is None else data, "")
    if b.problems:
        raise ConfigError(source, b.problems)
    return cfg


def load(path: Path) -> Config:
    """Read and parse the config at ``path``. Raise ConfigError for any problem, I/O included."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), [f"cannot read: {e}"]) from None
    return parse(text, source=str(path), base_dir=path.resolve().parent)
