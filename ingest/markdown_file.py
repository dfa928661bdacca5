"""Markdown (.md, .markdown): FAQ pairs and passages with their sections (see ingest/sections.py).

markdown-it-py renders CommonMark with tables and definition lists ("Question?\n: Answer") to HTML; front
matter is skipped, and raw HTML inside the Markdown is shown as text, never interpreted.
"""

from __future__ import annotations

from pathlib import Path

from bs4 import BeautifulSoup

from ingest.sections import Sections, read_tree
from ingest.textfile import read_utf8


def read_markdown(path: str | Path) -> Sections:
    from markdown_it import MarkdownIt
    from mdit_py_plugins.deflist import deflist_plugin
    from mdit_py_plugins.front_matter import front_matter_plugin

    path = Path(path)
    text = read_utf8(path, "Markdown")
    parser = MarkdownIt("commonmark", {"html": False}).enable("table").use(front_matter_plugin).use(deflist_plugin)
    return read_tree(path, BeautifulSoup(parser.render(text), "lxml").body)


__all__ = ["read_markdown"]
