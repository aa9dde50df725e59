"""The code's shape: imports go one way, and the command line maps every error to an exit code."""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from guardian import cli
from guardian.commands import REGISTRY
from guardian.commands.base import MONITORED, Command

PACKAGE = Path(__file__).resolve().parents[1] / "guardian"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def top_level_imports(path: Path) -> Iterator[str]:
    """What a module imports when it is imported: not inside functions, not under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for n in ast.walk(node) if isinstance(node, ast.If | ast.Try) else [node]:
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("guardian"):
                yield n.module
                for alias in n.names:  # `from guardian.checks import slot` imports guardian.checks.slot
                    yield f"{n.module}.{alias.name}"
            elif isinstance(n, ast.Import):
                yield from (a.name for a in n.names if a.name.startswith("guardian"))


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in top_level_imports(path) if m in modules and m != name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_two_modules_import_each_other_at_import_time_directly_or_through_others() -> None:
    graph = import_graph()
    assert "guardian.verdict" in graph and graph["guardian.pipeline"] >= {"guardian.verdict", "guardian.heal"}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_the_model_and_the_verdict_import_no_other_layer() -> None:
    graph = import_graph()
    assert graph["guardian.model"] == set()
    assert graph["guardian.verdict"] == {"guardian.model"}


def _raising(_: argparse.Namespace) -> int:
    raise ZeroDivisionError("a bug")


@pytest.mark.parametrize(("error_exit", "debug"), [(1, False), (MONITORED, False), (1, True)])
def test_an_error_no_command_handled_is_one_line_and_the_commands_error_exit_with_its_traceback_only_on_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error_exit: int, debug: bool
) -> None:
    buggy = Command("buggy", "a command with a bug", _raising, error_exit=error_exit)
    monkeypatch.setattr(cli, "REGISTRY", (*REGISTRY, buggy))
    code = cli.main(["--debug", "buggy"] if debug else ["buggy"])
    err = capsys.readouterr().err
    assert code == error_exit
    assert err.splitlines()[0] == "guardian buggy: internal error: ZeroDivisionError: a bug"
    assert ("Traceback (most recent call last)" in err) is debug
    if not debug:
        assert err.splitlines()[1] == "guardian buggy: run with --debug for the traceback"


def test_every_command_is_in_the_registry_once_and_has_its_module() -> None:
    names = [c.name for c in REGISTRY]
    assert len(names) == len(set(names))
    modules = {p.stem for p in (PACKAGE / "commands").glob("*.py")} - {"__init__", "base"}
    owners = {c.run.__module__.rsplit(".", 1)[-1] for c in REGISTRY}
    assert owners == modules
