"""The README and docs/*.md: every link stays inside the repository and resolves, and the README stays
short enough for a newcomer.

A link is a Markdown inline link or image (``[text](target)``), a reference definition
(``[name]: target``), an autolink (``<https://...>``), a bare web address, or an HTML ``href``/``src``,
outside code blocks and code spans. It must be relative, stay inside the repository once resolved,
and name a file or directory that exists; an anchor (``page.md#heading``, ``#heading``) must name a
heading of that Markdown page, as GitHub spells it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 220

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)")
INLINE = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^<>\s]*)>")
BARE_URL = re.compile(r"(?<![\w/(<])(?:https?://|www\.)[^\s<>)]+")
HTML_ATTR = re.compile(r"\b(?:href|src)\s*=\s*[\"']([^\"']*)[\"']", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def prose(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with code spans blanked out."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        yield number, CODE_SPAN.sub("code", line)


def links(text: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for number, line in prose(text):
        targets = [m.group(1) for m in INLINE.finditer(line)]
        targets += [m.group(1) for m in REFERENCE.finditer(line)]
        targets += [m.group(1) for m in AUTOLINK.finditer(line)]
        targets += [m.group(0) for m in BARE_URL.finditer(INLINE.sub("", AUTOLINK.sub("", line)))]
        targets += [m.group(1) for m in HTML_ATTR.finditer(line)]
        found += [(number, t[1:-1] if t.startswith("<") and t.endswith(">") else t) for t in targets]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    fence: str | None = None
    for line in text.splitlines():  # headings in code blocks (a comment in a shell block) are none
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if h := HEADING.match(line):
            base = slug(h.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def problems(page: Path, root: Path = ROOT) -> list[str]:
    """Every link of ``page`` that leaves ``root`` or points to nothing, as ``page:line: target: why``."""
    root = root.resolve()
    out: list[str] = []
    text = page.read_text(encoding="utf-8")
    for number, target in links(text):
        where = f"{page.relative_to(root)}:{number}: {target}"
        if SCHEME.match(target) or target.startswith("www.") or target.startswith("//"):
            out.append(f"{where}: leaves the repository (a URL)")
            continue
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        if path_part.startswith("/"):
            out.append(f"{where}: leaves the repository (an absolute path)")
            continue
        resolved = (page.parent / path_part).resolve() if path_part else page.resolve()
        if not resolved.is_relative_to(root):
            out.append(f"{where}: leaves the repository")
            continue
        if not resolved.exists():
            out.append(f"{where}: no such file in the repository")
            continue
        if anchor:
            if resolved.suffix != ".md" or not resolved.is_file():
                out.append(f"{where}: an anchor into something that is not a Markdown page")
            elif unquote(anchor) not in anchors(resolved.read_text(encoding="utf-8")):
                out.append(f"{where}: no heading #{anchor} in {resolved.relative_to(root)}")
    return out


def test_the_link_checker_catches_links_out_of_the_repository_to_missing_files_and_to_missing_headings(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "notes.md").write_text("# Notes\n")
    (repo / "docs" / "page.md").write_text("# A page\n\n## The gate: `guardian gate`\n\n## Twice\n\n## Twice\n")
    (repo / "README.md").write_text(
        "# r\n\n"
        "[good](docs/page.md) [anchor](docs/page.md#the-gate-guardian-gate) [again](docs/page.md#twice-1)\n"
        "[self](#r) [dir](docs/) [`code in text`](docs/page.md)\n"
        "[up](../shared/notes.md)\n"
        "[host](/work/main/README.md)\n"
        "[web](https://example.com/x) <https://example.com/y> see www.example.com\n"
        "[gone](docs/missing.md)\n"
        "[no heading](docs/page.md#nowhere)\n"
        '<a href="../shared/notes.md">html</a>\n'
        "[ref]: ../outside.md\n"
        "`[in a code span](../nowhere.md)`\n"
        "```\n[in a code block](../nowhere.md)\n```\n"
    )
    found = problems(repo / "README.md", root=repo)
    assert found == [
        "README.md:5: ../shared/notes.md: leaves the repository",
        "README.md:6: /work/main/README.md: leaves the repository (an absolute path)",
        "README.md:7: https://example.com/x: leaves the repository (a URL)",
        "README.md:7: https://example.com/y: leaves the repository (a URL)",
        "README.md:7: www.example.com: leaves the repository (a URL)",
        "README.md:8: docs/missing.md: no such file in the repository",
        "README.md:9: docs/page.md#nowhere: no heading #nowhere in docs/page.md",
        "README.md:10: ../shared/notes.md: leaves the repository",
        "README.md:11: ../outside.md: leaves the repository",
    ]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_in_the_readme_and_the_docs_stays_in_the_repository_and_resolves(page: Path) -> None:
    found = problems(page)
    assert not found, "\n".join(found)


def test_the_readme_is_short_enough_for_a_newcomer() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_readme_opens_with_the_demo_and_the_test_commands() -> None:
    lines = [line for line in README.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines[0].startswith("# ")
    assert lines[1].startswith("```")
    assert lines[2].startswith("./scripts/demo.sh ")
    assert lines[3].startswith("./scripts/test.sh ")
    assert lines[4] == "```"
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert (ROOT / script).is_file(), script


def test_the_readme_links_every_docs_page() -> None:
    linked = {(ROOT / unquote(t.partition("#")[0])).resolve() for _, t in links(README.read_text(encoding="utf-8"))}
    missing = [p.name for p in pages()[1:] if p.resolve() not in linked]
    assert missing == [], f"README.md does not link {missing}"
