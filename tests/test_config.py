"""The config: minimal configs work, the example is complete, and a bad config is reported whole."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from guardian.config import EX_CONFIG, Config, ConfigError, load, parse
from tests.conftest import Result

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "guardian.yaml"


def _keys(cls: type, prefix: str = "") -> set[str]:
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):  # a section: its keys, not its name
            out |= _keys(tp, path + ".")  # type: ignore[arg-type]
        else:
            out.add(path)
    return out


def _flatten(d: dict[str, object], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


def test_a_config_with_only_home_and_mode_gets_the_layout_defaults(tmp_path: Path) -> None:
    cfg = parse(f"bot: {{home: {tmp_path}, mode: real}}")
    assert cfg.bot.mode == "real"
    assert cfg.files.positions == "logs/positions_futures.json"
    assert cfg.thresholds.lock_stale == 300
    assert cfg.thresholds.heartbeat_stale == 600
    assert cfg.thresholds.min_health_score == 50
    assert (cfg.limits.max_position_pct, cfg.limits.max_daily_loss_pct, cfg.limits.max_open_positions) == (5, 2, 3)


def test_the_documented_example_loads_and_names_every_key() -> None:
    cfg = load(EXAMPLE)
    assert isinstance(cfg, Config)
    documented = _flatten(yaml.safe_load(EXAMPLE.read_text()))
    assert documented == _keys(Config)


def test_every_default_can_be_overridden(tmp_path: Path) -> None:
    cfg = parse(
        f"bot: {{home: {tmp_path}, mode: paper, data: /srv/shared}}\n"
        "thresholds: {lock_stale: 2m, heartbeat_stale: 90s, min_health_score: 70}\n"
        "limits: {max_position_pct: 2.5, max_open_positions: 1}\n"
        "files: {positions: state/pos.json}\n"
    )
    assert cfg.bot.data == Path("/srv/shared")
    assert (cfg.thresholds.lock_stale, cfg.thresholds.heartbeat_stale, cfg.thresholds.min_health_score) == (120, 90, 70)
    assert (cfg.limits.max_position_pct, cfg.limits.max_open_positions) == (2.5, 1)
    assert cfg.files.positions == "state/pos.json"


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    text = (
        "bot: {home: /x, mode: live, slots_dri: s}\n"
        "thresholds: {lock_stale: soon, min_health_score: 150}\n"
        "limits: {max_open_positions: three}\n"
        "alertz: {}\n"
    )
    with pytest.raises(ConfigError) as e:
        parse(text)
    problems = e.value.problems
    assert "bot.mode: must be 'paper' or 'real', got 'live'" in problems
    assert any(p.startswith("bot.slots_dri: unknown key; did you mean 'slots_dir'?") for p in problems)
    assert any(p.startswith("alertz: unknown key; did you mean 'alerts'?") for p in problems)
    assert any(p.startswith("thresholds.lock_stale: must be a duration") for p in problems)
    assert any(p.startswith("limits.max_open_positions: must be an integer") for p in problems)
    assert "thresholds.min_health_score: must be in [0, 100], got 150" in problems  # beside the type errors
    assert len(problems) == 6


def test_missing_required_keys_are_named() -> None:
    with pytest.raises(ConfigError) as e:
        parse("bot: {}\n")
    assert e.value.problems == ["bot.home: is required", "bot.mode: is required"]


def test_a_yaml_syntax_error_gives_line_and_column() -> None:
    with pytest.raises(ConfigError) as e:
        parse("bot:\n  home: /x\n  mode: [paper\n")
    assert len(e.value.problems) == 1
    assert e.value.problems[0].startswith("YAML syntax error at line 4, column 1")


def test_yaml_tags_that_construct_objects_are_refused() -> None:
    with pytest.raises(ConfigError) as e:
        parse("bot: !!python/object/apply:os.system [echo hi]\n")
    assert "YAML" in e.value.problems[0]


def test_validate_config_exits_78_without_a_traceback(tmp_path: Path, cli: Callable[..., Result]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("bot: {home: /x, mode: live}\n")
    r = cli(bad, "validate-config")
    assert r.code == EX_CONFIG
    assert "bot.mode: must be 'paper' or 'real', got 'live'" in r.err
    assert "Traceback" not in r.err


def test_validate_config_accepts_the_example(cli: Callable[..., Result]) -> None:
    r = cli(EXAMPLE, "validate-config")
    assert r.code == 0
    assert "valid" in r.out


def test_a_missing_config_file_is_a_config_error(tmp_path: Path, cli: Callable[..., Result]) -> None:
    r = cli(tmp_path / "nope.yaml", "check")
    assert r.code == EX_CONFIG
    assert "file not found" in r.err


def test_the_config_comes_from_the_environment_when_no_flag_is_given(tmp_path: Path) -> None:
    bad = tmp_path / "env.yaml"
    bad.write_text("bot: {home: /x, mode: nope}\n")
    env = {"GUARDIAN_CONFIG": str(bad), "PATH": "/usr/bin:/bin"}
    p = subprocess.run(
        [sys.executable, "-m", "guardian", "validate-config"], env=env, capture_output=True, text=True, check=False
    )
    assert p.returncode == EX_CONFIG
    assert str(bad) in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("value", [0, -5, 101])
def test_a_daemon_cpu_budget_outside_0_to_100_percent_is_refused(value: int) -> None:
    with pytest.raises(ConfigError) as e:
        parse(f"bot: {{home: /x, mode: paper}}\ndaemon: {{cpu_percent: {value}}}\n")
    [problem] = e.value.problems
    assert problem.startswith("daemon.cpu_percent: must") and problem.endswith(f"got {value}"), problem


# --- duplicate keys ------------------------------------------------------------------------------


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(text)
    return e.value.problems


def test_a_duplicate_mode_key_is_refused_with_both_lines() -> None:
    # Was: the second `mode` silently won, and a bot meant to trade for real ran in paper mode.
    text = "bot:\n  home: /srv/tradingbot\n  mode: real\n  unit: tradingbot.service\n  mode: paper\n"
    assert problems_of(text) == ["bot.mode: duplicate key, at lines 3 and 5: YAML keeps only the last"]


def test_a_duplicate_top_level_section_is_refused_with_both_lines() -> None:
    text = (
        "bot: {home: /srv/tradingbot, mode: real}\nlimits: {max_open_positions: 1}\nlimits: {max_open_positions: 9}\n"
    )
    assert problems_of(text) == ["limits: duplicate key, at lines 2 and 3: YAML keeps only the last"]


def test_a_duplicate_key_deep_in_a_list_is_found_with_its_key_path() -> None:
    text = "bot: {home: /srv/tradingbot, mode: paper}\nalerts:\n  command:\n    - {a: 1, b: 2}\n    - {x: 1, x: 2}\n"
    problems = problems_of(text)
    assert "alerts.command[1].x: duplicate key, at lines 5:8 and 5:14: YAML keeps only the last" in problems
    assert any(p.startswith("alerts.command: must be a list of strings") for p in problems)


def test_a_key_given_three_times_on_one_line_is_named_with_each_column() -> None:
    [problem] = problems_of("bot: {home: /srv/tradingbot, mode: real, mode: paper, mode: real}\n")
    assert problem == "bot.mode: duplicate key, at lines 1:30, 1:42 and 1:55: YAML keeps only the last"


def test_a_duplicate_key_is_reported_with_every_other_problem() -> None:
    text = "bot: {home: /srv/tradingbot, mode: real, mode: paper, colour: x}\nheal: {lock_timeout: 1h}\n"
    problems = problems_of(text)
    assert problems[0].startswith("bot.mode: duplicate key")
    assert any(p.startswith("bot.colour: unknown key") for p in problems)
    assert any(p.startswith("heal.lock_timeout: must be in") for p in problems)
    assert len(problems) == 3


def test_keys_equal_only_as_text_are_not_duplicates() -> None:
    # `1` is an integer, "1" a string: two keys for YAML (both unknown to guardian).
    problems = problems_of('bot: {home: /srv/tradingbot, mode: paper, 1: a, "1": b}\n')
    assert not any("duplicate" in p for p in problems), problems
    assert len(problems) == 2


def test_overriding_a_merged_key_is_not_a_duplicate() -> None:
    # `<<` merges are what the override is for. The anchor sits deeper than the mapping merging it,
    # and it merges another anchor itself: PyYAML flattens it in place before its own turn.
    text = (
        "bot:\n"
        "  home: /srv/tradingbot\n"
        "  mode: paper\n"
        "thresholds: &t {lock_stale: 1m, heartbeat_stale: 5m}\n"
        "daemon: {sweep: 10s}\n"
        "alerts:\n"
        "  command: []\n"
        "heal: {<<: *t, lock_timeout: 1s}\n"
    )
    problems = problems_of(text)
    assert not any("duplicate" in p for p in problems), problems
    text = (
        "x-base: &base {lock_stale: 1m}\n"
        "x-outer: {inner: &mid {<<: *base, lock_stale: 2m}}\n"
        "x-late: {<<: *mid}\n"
        "bot: {home: /srv/tradingbot, mode: paper}\n"
    )
    assert not any("duplicate" in p for p in problems_of(text))


def test_a_duplicate_in_a_mapping_merged_in_place_is_named_under_the_merging_key() -> None:
    text = "bot: {<<: {home: /srv/a, home: /srv/b}, mode: paper}\n"
    assert problems_of(text) == ["bot.home: duplicate key, at lines 1:12 and 1:26: YAML keeps only the last"]


def test_a_duplicate_in_an_anchored_mapping_is_reported_once_where_the_anchor_is() -> None:
    text = "bot: &b {home: /srv/tradingbot, mode: real, mode: paper}\nx-copy: *b\nx-merge: {<<: *b}\n"
    problems = [p for p in problems_of(text) if "duplicate" in p]
    assert problems == ["bot.mode: duplicate key, at lines 1:33 and 1:45: YAML keeps only the last"]


def test_a_recursive_alias_is_not_walked_forever() -> None:
    problems = problems_of("bot: {home: /srv/tradingbot, mode: paper}\nx: &loop [*loop, {a: 1, a: 2}]\n")
    assert "x[1].a: duplicate key, at lines 2:19 and 2:25: YAML keeps only the last" in problems


def test_duplicates_are_found_without_libyaml_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)  # the pure-Python loader, as on a host without libyaml
    assert problems_of("bot:\n  home: /srv/tradingbot\n  mode: real\n  mode: paper\n") == [
        "bot.mode: duplicate key, at lines 3 and 4: YAML keeps only the last"
    ]


def test_validate_config_exits_78_for_a_duplicate_key(tmp_path: Path, cli: Callable[..., Result]) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text(f"bot:\n  home: {tmp_path / 'bot'}\n  mode: real\n  mode: paper\n")
    r = cli(dup, "validate-config")
    assert r.code == EX_CONFIG
    assert "bot.mode: duplicate key, at lines 3 and 4" in r.err
