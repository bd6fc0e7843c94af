"""The `# --` comments of values.yaml (helm-docs style): which key each one documents."""

from __future__ import annotations

import re
from dataclasses import dataclass

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+|\"[^\"]+\"):(?:\s|$)")
_DOC = re.compile(r"^ *# -- ?(?P<text>.*)$")
_MORE = re.compile(r"^ *#(?! --) ?(?P<text>.*)$")


@dataclass(frozen=True)
class Doc:
    """A documented values key, in file order."""

    path: str
    text: str


def parse(source: str) -> list[Doc]:
    """Each `# --` comment (with the `#` lines after it) and the key right below it."""
    docs: list[Doc] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in source.splitlines():
        if not line.strip():
            pending = None
            continue
        if match := _DOC.match(line):
            pending = [match["text"].strip()]
            continue
        if pending is not None and (match := _MORE.match(line)):
            pending.append(match["text"].strip())
            continue
        if line.lstrip().startswith("#"):
            continue
        match = _KEY.match(line)
        if match is None:  # a list item or a continuation: documents nothing
            pending = None
            continue
        indent, key = len(match["indent"]), match["key"].strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if pending is not None:
            docs.append(Doc(".".join(k for _, k in stack), " ".join(pending).strip()))
            pending = None
    return docs
