"""Every relative link of README.md and docs/*.md points to a file that exists, and every `#anchor` to a heading.

Anchors follow GitHub's rules for heading ids: the heading's text (inline code and link markup reduced to
their text) lowercased, every character other than a letter, digit, space, '-' or '_' removed, spaces
turned into '-'; a repeated heading gets '-1', '-2', ... Links inside fenced code blocks and inline code
are not links. Absolute URLs (http:, https:, mailto:, ...) are not checked: the tests run offline.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`+[^`]*`+")
# [text](target) and ![alt](target); the target may be <...> and may be followed by a "title".
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's id for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.replace("`", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The ids of every heading of a markdown file, with GitHub's suffixes for repeated ones."""
    seen: dict[str, int] = {}
    ids = set()
    for _, line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in the file's prose."""
    found = []
    for number, line in prose_lines(path.read_text()):
        line = INLINE_CODE.sub("", line)
        targets = [m.group(1) for m in INLINE_LINK.finditer(line)]
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
        found += [(number, target.strip("<>")) for target in targets]
    return found


def broken_links(path: Path) -> list[str]:
    """What is wrong with the relative links of one markdown file, one line per broken link."""
    problems = []
    for number, target in links(path):
        if SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{number}: {target}"
        if not linked.exists():
            problems.append(f"{where}: no such file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{where}: no heading with id '{anchor}' in {linked.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_the_readme_links_every_docs_page() -> None:
    linked = {
        (REPO / target.partition("#")[0]).resolve()
        for _, target in links(REPO / "README.md")
        if not SCHEME.match(target)
    }
    missing = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_slugs_follow_github() -> None:
    assert slug("Retrain -> evaluate -> promote") == "retrain---evaluate---promote"
    assert (
        slug("The stream edge: many subscribers, fast lookups")
        == "the-stream-edge-many-subscribers-fast-lookups"
    )
    assert (
        slug("gRPC serving: unary, fan-out, candle to client")
        == "grpc-serving-unary-fan-out-candle-to-client"
    )
    assert slug("Running `cryptopredict stack` by_hand") == "running-cryptopredict-stack-by_hand"


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#a-section) [ok too](other.md#a-section-1) [self](#page) [web](https://example.com/x)\n"
        "[gone](missing.md) [bad anchor](other.md#no-such-section) [bad self](#nowhere)\n\n"
        "```\n[in code](missing-too.md)\n```\n"
        "`[inline code](missing-three.md)`\n"
    )
    problems = broken_links(page)
    assert [p.split(": ", 1)[1].split(":")[0] for p in problems] == [
        "missing.md",
        "other.md#no-such-section",
        "#nowhere",
    ], problems
