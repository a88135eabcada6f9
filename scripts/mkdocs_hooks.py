"""MkDocs hook: links from a docs page to repository files outside docs/ (bench/results.md,
llmtool/settings/, README.md) are relative links that work on GitHub; the site has no copy of
those files, so here they become links into the repository when mkdocs.yml sets repo_url, and plain
text otherwise. tests/test_docs.py checks that every such link names a file that exists."""

from __future__ import annotations

import posixpath
import re
from typing import Any

LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")


def outside_docs(page_uri: str, target: str) -> str | None:
    """The repository path a relative link points to when it leaves docs/, else None."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("/", "#")):
        return None
    path = posixpath.normpath(posixpath.join(posixpath.dirname(page_uri), target.split("#")[0]))
    return path[len("../") :] if path.startswith("../") else None


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    repo_url = (config.get("repo_url") or "").rstrip("/")

    def rewrite(match: re.Match[str]) -> str:
        text, target = match.group(1), match.group(2)
        path = outside_docs(page.file.src_uri, target)
        if path is None:
            return match.group(0)
        return f"[{text}]({repo_url}/blob/main/{path})" if repo_url else text

    return LINK.sub(rewrite, markdown)
