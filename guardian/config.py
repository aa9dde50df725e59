"""YAML config -> frozen dataclasses, with every problem reported at once with its key path.

A config holding only ``bot.home`` and ``bot.mode`` is valid: every other key defaults to the bot
layout of ``shared/bot-layout.md`` and the seeds' thresholds.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import reprlib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
        hints = typing.get_type_hints(cls)
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
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (types.UnionType, typing.Union):
            if value is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.convert(inner, value, path, meta)
        if meta.get("duration"):
            try:
                return parse_duration(value)
            except ValueError as e:
                self.problem(path, str(e))
                return 0.0
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, path)  # type: ignore[arg-type]
        if origin is Literal:
            if value not in args:
                choices = " or ".join(repr(a) for a in args)
                self.problem(path, f"must be {choices}, got {_show(value)}")
            return value
        if origin is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                self.problem(path, f"must be a list of strings, got {_kind(value)}")
                return ()
            return tuple(value)
        if tp is bool:
            if not isinstance(value, bool):
                self.problem(path, f"must be true or false, got {_show(value)}")
            return value
        if tp is int or tp is float:
            if isinstance(value, float) and not math.isfinite(value):
                self.problem(path, f"must be a finite number, got {_show(value)}")
                return 0
            if isinstance(value, int) and not isinstance(value, bool) and tp is float and abs(value) > 2**1023:
                self.problem(path, "must be a number of a sane size")
                return 0
            if isinstance(value, bool) or not isinstance(value, int | float) or (tp is int and value != int(value)):
                self.problem(path, f"must be {'an integer' if tp is int else 'a number'}, got {_show(value)}")
                return 0
            if value < 0:
                self.problem(path, f"must not be negative, got {_show(value)}")
            return tp(value)
        if tp is Path:
            if not isinstance(value, str) or not value:
                self.problem(path, f"must be a path, got {_kind(value)}")
                return Path()
            try:
                p = Path(value).expanduser()
            except RuntimeError as e:  # ~name of a user this host does not know
                self.problem(path, f"cannot expand {_show(value)}: {e}")
                return Path()
            return p if p.is_absolute() else (self.base_dir / p)
        if tp is str:
            if not isinstance(value, str):
                self.problem(path, f"must be a string, got {_kind(value)}")
            return value
        raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module, not in the config


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(type(value)) or _show(value)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80


def _show(value: object) -> str:
    """A value for a problem message: short, and safe for YAML nested thousands deep."""
    return _REPR.repr(value)


def _semantic_checks(cfg: Config, b: _Builder) -> None:
    if not 0 <= cfg.thresholds.min_health_score <= 100:
        b.problem("thresholds.min_health_score", f"must be between 0 and 100, got {cfg.thresholds.min_health_score}")
    for name in ("max_position_pct", "max_daily_loss_pct"):
        v = getattr(cfg.limits, name)
        if isinstance(v, float) and not 0 < v <= 100:
            b.problem(f"limits.{name}", f"must be a percentage in (0, 100], got {v}")
    for fname in ("positions", "portfolio", "alerts", "backups", "heartbeats", "wal", "emergency_stop"):
        v = getattr(cfg.files, fname)
        if isinstance(v, str) and (v.startswith("/") or ".." in Path(v).parts):
            b.problem(f"files.{fname}", f"must be a path inside the data root, got {v!r}")
    listen = cfg.metrics.listen
    if listen is not None:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            b.problem("metrics.listen", f"must be HOST:PORT such as 127.0.0.1:9815, got {listen!r}")
    if cfg.daemon.sweep < 1:
        b.problem("daemon.sweep", f"must be at least 1s, got {cfg.daemon.sweep}")
    if not 0 < cfg.daemon.cpu_percent <= 100:
        b.problem("daemon.cpu_percent", f"must be a percentage in (0, 100], got {cfg.daemon.cpu_percent:g}")


def resolve_path(cli_value: str | None) -> Path:
    """Where the config comes from: ``--config``, else ``$GUARDIAN_CONFIG``, else the system default."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("GUARDIAN_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def parse(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> Config:
    """Return the Config in ``text``. Raise ConfigError listing every problem."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: same rules, faster
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 -- a SafeLoader, equivalent to safe_load
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(source, [f"YAML syntax error at {where}: {e.problem}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError(source, [f"YAML error: {e}"]) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # a value YAML's own constructors reject
        raise ConfigError(source, [f"YAML value error: {type(e).__name__}: {e}"]) from None
    b = _Builder(base_dir or Path.cwd())
    if data is None:
        data = {}
    cfg: Config = b.build(Config, data, "")
    if not b.problems:
        _semantic_checks(cfg, b)
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
