from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from guardian.demo import BotTree
from tests.conftest import Result


def test_a_healthy_tree_checks_clean_and_the_gate_allows_it_in_real_mode(
    tree: BotTree, make_config: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    cfg = make_config(tree, mode="real")
    checked = cli(cfg, "check", "--json")
    assert checked.code == 0, checked.out
    assert checked.json()["findings"] == []
    gate = cli(cfg, "gate")
    assert gate.code == 0
    assert "ALLOWED (real mode)" in gate.err.strip().splitlines()[-1]
