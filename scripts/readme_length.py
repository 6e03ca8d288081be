#!/usr/bin/env python3
"""Keeps the README short and the documentation's links whole.

Fails (exit 1, one line per problem) when
- README.md is longer than 250 lines (issue 18: what a newcomer needs; the
  rest belongs in docs/, see docs/README.md), or
- a relative link in README.md or docs/*.md points at a file or directory
  that does not exist, or at a `#heading` that the linked Markdown page (or
  the page itself) does not have.

Links inside code blocks and code spans are not links. Absolute URLs
(http:, https:, mailto:) and links that leave the repository (the design in
../shared/, which not every checkout has) are not checked. Usage, from anywhere:
    python3 scripts/readme_length.py
"""

import re
import sys
from pathlib import Path

MAX_README_LINES = 250

ROOT = Path(__file__).resolve().parent.parent

# [text](target) or [text](target "title"); images too (the leading ! is irrelevant).
INLINE_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def prose_lines(text):
    """(line number, line) of the lines outside fenced code blocks, code spans blanked."""
    in_fence = None
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if fence:
            if in_fence is None:
                in_fence = fence.group(1)
            elif fence.group(1) == in_fence:
                in_fence = None
            continue
        if in_fence is None:
            yield number, CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)


def raw_headings(path):
    """Heading texts with code spans kept (for slugs)."""
    in_fence = None
    for line in path.read_text(encoding="utf-8").splitlines():
        fence = FENCE.match(line)
        if fence:
            if in_fence is None:
                in_fence = fence.group(1)
            elif fence.group(1) == in_fence:
                in_fence = None
            continue
        if in_fence is None:
            match = HEADING.match(line)
            if match:
                yield match.group(1)


def slugify(heading):
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def heading_anchors(path):
    seen = {}
    result = set()
    for heading in raw_headings(path):
        slug = slugify(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(path):
    """(line number, target) of every link in a Markdown file."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            yield number, definition.group(1)
            continue
        for match in INLINE_LINK.finditer(line):
            yield number, match.group(1)


def broken_links(path):
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # http:, https:, mailto:, ...
        file_part, _, fragment = target.partition("#")
        file_part = file_part.split("?", 1)[0]
        linked = (path.parent / file_part).resolve() if file_part else path
        if ROOT not in linked.parents and linked != ROOT:
            continue  # outside the repository (../shared/ARCHITECTURE.md): not in every checkout
        where = f"{path.relative_to(ROOT)}:{number}"
        if not linked.exists():
            problems.append(f"{where}: the link {target} points at {file_part}, which does not exist")
            continue
        if fragment and linked.is_file() and linked.suffix == ".md":
            if fragment.lower() not in heading_anchors(linked):
                problems.append(f"{where}: the link {target}: {linked.name} has no heading #{fragment}")
    return problems


def main():
    problems = []
    readme = ROOT / "README.md"
    lines = len(readme.read_text(encoding="utf-8").splitlines())
    if lines > MAX_README_LINES:
        problems.append(
            f"README.md has {lines} lines, more than {MAX_README_LINES}: keep it to what a newcomer needs "
            "and move the rest into a page under docs/ (listed in docs/README.md)"
        )
    for path in [readme, *sorted((ROOT / "docs").glob("*.md"))]:
        problems.extend(broken_links(path))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"README.md: {lines} lines (at most {MAX_README_LINES}); every relative link of README.md and docs/*.md resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
