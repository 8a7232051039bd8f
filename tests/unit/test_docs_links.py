"""Every relative link of the user docs (README.md, CHANGELOG.md, docs/*.md) reaches a file and a heading.

Anchors follow GitHub's rule for heading ids, written out here on its own: the heading's text
(markup removed) in lower case — Unicode lower case, so ``İ`` becomes ``i`` + U+0307 COMBINING DOT
ABOVE, which a link spells ``i%CC%87`` — keeping letters, marks, digits, ``_``, ``-`` and spaces,
every space a ``-``; a repeated heading gets ``-1``, ``-2``, ….
"""

from __future__ import annotations

import pathlib
import re
import unicodedata
from urllib.parse import unquote

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
ISSUE_NUMBER = re.compile(r"(?<![\w&/])#\d+\b|\bissues?\b", re.IGNORECASE)


def prose_lines(path: pathlib.Path) -> list[tuple[int, str]]:
    """The file's lines outside fenced code blocks, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    text = INLINE_CODE.sub(lambda match: match.group(2), heading)
    text = LINK.sub(lambda match: match.group(1), text)
    kept = "".join(char for char in text.lower() if char in "-_ " or unicodedata.category(char)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def relative_links(path: pathlib.Path) -> list[tuple[int, str]]:
    links = []
    for number, line in prose_lines(path):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            target = match.group(2)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                links.append((number, target))
    return links


def test_the_slug_rule_on_headings_of_these_docs():
    assert slug("The İYS page") == "the-i\u0307ys-page"
    assert unquote("the-i%CC%87ys-page") == slug("The İYS page")
    assert slug("Several accounts, one IP — or several IPs") == "several-accounts-one-ip--or-several-ips"
    assert slug("Reading `iys.reconciliations`") == "reading-iysreconciliations"
    assert slug("`iys_initial_sync`") == "iys_initial_sync"
    assert slug("Users who leave (KVKK erasure)") == "users-who-leave-kvkk-erasure"
    assert slug("Taşınma: ş, ğ, ü, ö, ç") == "taşınma-ş-ğ-ü-ö-ç"


def test_the_docs_exist():
    assert (ROOT / "README.md") in DOCS
    assert len(DOCS) > 3, DOCS


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_a_heading(path: pathlib.Path):
    broken = []
    for number, target in relative_links(path):
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{path.name}:{number}: {target}: no such file")
            continue
        if fragment and linked.suffix == ".md" and unquote(fragment) not in anchors(linked):
            broken.append(f"{path.name}:{number}: {target}: no heading with that anchor in {linked.name}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_internal_issue_numbers(path: pathlib.Path):
    """User docs say what the package does, not which ticket changed it."""
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ISSUE_NUMBER.search(line)
    ]
    assert not found, "\n".join(found)
