"""The config's bounds and path rules: one table (RULES), enforced with each key's path, and documented."""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from guardian.config import (
    KERNEL_TREES,
    RULES,
    SYSTEM_DIRS,
    Bound,
    Config,
    ConfigError,
    NotSystemDir,
    leaf_fields,
    load,
    parse,
    reference_markdown,
)
from guardian.demo import BotTree

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
HOME = "/srv/tradingbot"


def config(section: str, key: str, value: Any, *, base_dir: Path | None = None) -> Config:
    """Parse a config setting ``section.key`` to ``value`` (JSON is YAML)."""
    doc: dict[str, Any] = {"bot": {"home": HOME, "mode": "real"}}
    doc.setdefault(section, {})[key] = value
    return parse(json.dumps(doc), base_dir=base_dir)


def problems(section: str, key: str, value: Any, *, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as e:
        config(section, key, value, base_dir=base_dir)
    return e.value.problems


def _numeric(tp: Any) -> bool:
    inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return inner[0] in (int, float)


# --- the table -----------------------------------------------------------------------------------


def test_every_number_and_duration_key_has_a_bound() -> None:
    unbounded = [path for path, _, tp in leaf_fields(Config) if _numeric(tp) and not isinstance(RULES.get(path), Bound)]
    assert unbounded == [], "add each to RULES in guardian/config.py, then regenerate docs/configuration.md"


def test_every_rule_names_a_key_of_the_config() -> None:
    keys = {path for path, _, _ in leaf_fields(Config)}
    assert sorted(set(RULES) - keys) == []


BOUNDED = sorted((path, rule) for path, rule in RULES.items() if isinstance(rule, Bound))


def _int_key(path: str) -> bool:
    return {p: tp for p, _, tp in leaf_fields(Config)}[path] is int


@pytest.mark.parametrize(("path", "bound"), BOUNDED, ids=[p for p, _ in BOUNDED])
def test_a_value_at_its_bound_is_accepted_and_one_past_it_refused_with_the_key_path(path: str, bound: Bound) -> None:
    section, key = path.split(".")
    step = 1 if _int_key(path) else 0.5
    inside = [bound.low + step if bound.open_low else bound.low] + ([] if bound.high is None else [bound.high])
    for value in inside:
        assert getattr(getattr(config(section, key, value), section), key) == value
    outside = [bound.low if bound.open_low else bound.low - step] + ([] if bound.high is None else [bound.high + step])
    for value in outside:
        [problem] = problems(section, key, value)
        assert problem.startswith(f"{path}: must "), problem


@pytest.mark.parametrize(
    ("section", "key", "value", "problem"),
    [
        ("heal", "lock_timeout", "61s", "heal.lock_timeout: must be in (0, 1min], got 61s"),
        ("heal", "lock_timeout", 0, "heal.lock_timeout: must be in (0, 1min], got 0"),
        ("heal", "orphan_term_timeout", "2m", "heal.orphan_term_timeout: must be in (0, 1min], got 2min"),
        ("thresholds", "clock_skew", "2h", "thresholds.clock_skew: must be in (0, 1h], got 2h"),
        ("thresholds", "heartbeat_stale", "2d", "thresholds.heartbeat_stale: must be in (0, 1d], got 2d"),
        ("thresholds", "temp_file_age", "500ms", "thresholds.temp_file_age: must be in [1s, 1d], got 500ms"),
        ("thresholds", "min_health_score", 101, "thresholds.min_health_score: must be in [0, 100], got 101"),
        ("limits", "max_position_pct", 0, "limits.max_position_pct: must be in (0, 100], got 0"),
        ("limits", "max_daily_loss_pct", 100.5, "limits.max_daily_loss_pct: must be in (0, 100], got 100.5"),
        ("limits", "max_open_positions", 0, "limits.max_open_positions: must be in [1, 1000], got 0"),
        ("limits", "max_leverage", 0.5, "limits.max_leverage: must be in [1, 1000], got 0.5"),
        ("limits", "max_leverage", 1001, "limits.max_leverage: must be in [1, 1000], got 1001"),
        ("files", "max_state_mb", 0, "files.max_state_mb: must be at least 1, got 0"),
        ("alerts", "webhook_timeout", "10m", "alerts.webhook_timeout: must be in (0, 5min], got 10min"),
        ("alerts", "webhook_retries", 11, "alerts.webhook_retries: must be in [0, 10], got 11"),
        ("alerts", "jsonl_keep", -1, "alerts.jsonl_keep: must be in [0, 1000], got -1"),
        ("alerts", "remind_critical", "10s", "alerts.remind_critical: must be in [1min, 7d], got 10s"),
        ("daemon", "coalesce", "11s", "daemon.coalesce: must be in [0, 10s], got 11s"),
        ("daemon", "sweep", "500ms", "daemon.sweep: must be in [1s, 1h], got 500ms"),
        ("daemon", "backoff_max", "0.5s", "daemon.backoff_max: must be in [1s, 1d], got 500ms"),
        ("metrics", "listen", "127.0.0.1:0", "metrics.listen: must be HOST:PORT such as 127.0.0.1:9815, got '127.0.0.1:0'"),
        ("metrics", "listen", "127.0.0.1:65536", "metrics.listen: must be HOST:PORT such as 127.0.0.1:9815, got '127.0.0.1:65536'"),
        ("metrics", "listen", ":9815", "metrics.listen: must be HOST:PORT such as 127.0.0.1:9815, got ':9815'"),
        ("metrics", "listen", "localhost:９８", "metrics.listen: must be HOST:PORT such as 127.0.0.1:9815, got 'localhost:９８'"),
        ("metrics", "listen", "localhost:²", "metrics.listen: must be HOST:PORT such as 127.0.0.1:9815, got 'localhost:²'"),  # was: int() raised
        ("alerts", "webhook", "file:///etc/passwd", "alerts.webhook: must be an http:// or https:// URL with a host, got 'file:///etc/passwd'"),
        ("alerts", "webhook", "https://hooks:99999/x", "alerts.webhook: must be an http:// or https:// URL with a host, got 'https://hooks:99999/x'"),
    ],
)  # fmt: skip
def test_a_value_out_of_its_bound_is_refused_with_the_bound_and_the_value(
    section: str, key: str, value: Any, problem: str
) -> None:
    assert problems(section, key, value) == [problem]


def test_an_infinite_duration_is_out_of_its_bound() -> None:
    with pytest.raises(ConfigError) as e:
        parse(f"bot: {{home: {HOME}, mode: real}}\ndaemon: {{sweep: .inf}}\n")
    assert e.value.problems == ["daemon.sweep: must be in [1s, 1h], got inf"]


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("thresholds", "lock_stale", 0),  # a lock no live process holds is stale at once (soft locks' tests)
        ("thresholds", "bot_start_grace", 0),  # no grace: a test's bot is a stale one at once
        ("thresholds", "disk_min_free_mb", 10**12),  # DISK_LOW on purpose
        ("alerts", "flap_changes", 1_000_000),  # flap detection off, for a test that makes many changes
        ("alerts", "heal_budget", 1_000_000),
        ("daemon", "coalesce", "20ms"),
        ("daemon", "sweep", "1h"),
        ("heal", "lock_timeout", 0.2),
        ("metrics", "listen", "[::1]:9815"),
        ("alerts", "webhook", "https://user:secret@hooks.example:8443/guardian"),
    ],
)
def test_values_the_tests_and_operators_rely_on_stay_valid(section: str, key: str, value: Any) -> None:
    config(section, key, value)


# --- bot.home, bot.data, guardian.state_dir: never / or a system directory -------------------------

DIR_KEYS = [(path.split(".")[0], path.split(".")[1]) for path, r in RULES.items() if isinstance(r, NotSystemDir)]


def test_home_data_and_state_dir_are_the_keys_kept_out_of_system_directories() -> None:
    assert DIR_KEYS == [("bot", "home"), ("bot", "data"), ("guardian", "state_dir")]


@pytest.mark.parametrize(("section", "key"), DIR_KEYS)
@pytest.mark.parametrize("directory", [*SYSTEM_DIRS, "/etc/", "/proc/1", "/sys/fs/cgroup", "/dev/shm"])
def test_a_system_directory_is_refused(section: str, key: str, directory: str) -> None:
    [problem] = problems(section, key, directory)
    assert problem.startswith(f"{section}.{key}: must not be / or a system directory"), problem


@pytest.mark.parametrize("directory", ["/srv/tradingbot", "/var/lib/tradingbot", "/home/bot/tradingbot", "/opt/bot"])
def test_a_directory_inside_a_system_directory_is_accepted(directory: str) -> None:
    assert parse(
        json.dumps({"bot": {"home": directory, "mode": "paper", "data": directory + "/data"}})
    ).bot.home == Path(directory)


def test_a_path_that_leads_back_to_a_system_directory_through_dotdot_is_refused() -> None:
    assert problems("bot", "data", "/srv/tradingbot/../../etc") == [
        "bot.data: must not be / or a system directory, got '/srv/tradingbot/../../etc' (which resolves to /etc)"
    ]


@pytest.mark.parametrize("target", ["/", "/etc", "/var/lib"])
def test_a_symlink_to_a_system_directory_is_refused(tmp_path: Path, target: str) -> None:
    link = tmp_path / "looks-fine"
    link.symlink_to(target)
    assert problems("bot", "data", str(link)) == [
        f"bot.data: must not be / or a system directory, got '{link}' (which resolves to {target})"
    ]


def test_a_relative_home_is_taken_from_the_config_files_directory_and_checked_there() -> None:
    # /etc/guardian/guardian.yaml with `home: ..` names /etc.
    with pytest.raises(ConfigError) as e:
        parse(json.dumps({"bot": {"home": "..", "mode": "paper"}}), base_dir=Path("/etc/guardian"))
    assert e.value.problems == [
        "bot.home: must not be / or a system directory, got '/etc/guardian/..' (which resolves to /etc)"
    ]


def test_a_home_with_a_nul_byte_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        parse('{"bot": {"home": "/srv/x\\u0000y", "mode": "paper"}}')
    assert e.value.problems == ["bot.home: must be a path without a NUL byte, got '/srv/x\\x00y'"]


def test_a_bot_tree_under_pytests_tmp_is_accepted_though_tmp_itself_is_not(
    tree: BotTree, make_config: Callable[..., Path]
) -> None:
    assert str(tree.home).startswith(os.path.realpath("/tmp") + "/")  # where pytest's tmp_path is on this host
    assert load(make_config(tree)).bot.home == tree.home
    assert any(p.startswith("bot.home: must not be") for p in problems("bot", "home", "/tmp"))


def test_the_kernel_trees_are_refused_whole() -> None:
    assert KERNEL_TREES == ("/dev", "/proc", "/sys")
    assert problems("bot", "data", "/proc/self/cwd/x")[0].startswith("bot.data: must not be / or a system directory")


# --- paths that must stay inside their root ----------------------------------------------------

INSIDE = [
    ("files", "positions"),
    ("files", "portfolio"),
    ("files", "alerts"),
    ("files", "backups"),
    ("files", "heartbeats"),
    ("files", "wal"),
    ("files", "emergency_stop"),
    ("trade_store", "sqlite"),
    ("slots", "requirements"),
    ("bot", "slots_dir"),
    ("bot", "current_link"),
    ("bot", "deployed_slot"),
    ("bot", "deployed_slot_file"),
    ("bot", "previous_slot"),
    ("bot", "previous_slot_file"),
]
LISTS = [("files", "required_dirs"), ("slots", "must_match"), ("slots", "must_parse")]
OUTSIDE = ["", ".", "./", "/etc/passwd", "../other-bot/x", "logs/../../x", "logs/\x00x"]


@pytest.mark.parametrize(("section", "key"), INSIDE)
@pytest.mark.parametrize("value", OUTSIDE)
def test_a_path_that_leaves_its_root_is_refused(section: str, key: str, value: str) -> None:
    [problem] = problems(section, key, value)
    assert problem.startswith(f"{section}.{key}: must be a relative path inside "), problem


@pytest.mark.parametrize(("section", "key"), LISTS)
def test_each_list_entry_that_leaves_its_root_is_refused_by_its_index(section: str, key: str) -> None:
    found = problems(section, key, ["config/ok.json", *OUTSIDE])
    assert [p.split(":")[0] for p in found] == [f"{section}.{key}[{i}]" for i in range(1, len(OUTSIDE) + 1)]


@pytest.mark.parametrize("value", ["logs/positions.json", "a/./b", "..hidden/x", "x..y"])
def test_a_path_inside_its_root_is_accepted(value: str) -> None:
    assert config("files", "positions", value).files.positions == value
    assert config("files", "required_dirs", [value]).files.required_dirs == (value,)


def test_the_shipped_example_names_the_leverage_limit() -> None:
    example = Path(__file__).resolve().parents[1] / "config" / "guardian.yaml"
    assert load(example).limits.max_leverage == 125.0
    assert "max_leverage: 125.0" in example.read_text()


# --- docs/configuration.md -------------------------------------------------------------------------


def test_docs_configuration_md_holds_the_key_table_rendered_from_the_code() -> None:
    rendered = reference_markdown()
    assert rendered in DOC.read_text(encoding="utf-8"), (
        "docs/configuration.md is out of date with RULES in guardian/config.py: replace the part between its"
        " 'generated' markers with the output of\n"
        "  .venv/bin/python -c 'from guardian.config import reference_markdown; print(reference_markdown())'"
    )


def test_the_rendered_table_has_a_row_for_every_key_with_its_bound() -> None:
    rows = {
        line.split(" | ")[0].strip("| `"): line for line in reference_markdown().splitlines() if line.startswith("| `")
    }
    assert list(rows) == [path for path, _, _ in leaf_fields(Config)]
    assert "| (0, 1min] |" in rows["heal.lock_timeout"]
    assert "| `125` | [1, 1000] |" in rows["limits.max_leverage"]
