"""Web pages (.html, .htm), such as exported help-centre articles: FAQ pairs and passages with their sections.

The page's chrome goes first (scripts, navigation, header, footer, sidebars, forms, cookie banners,
breadcrumbs, hidden elements), then its <main>, <article> or role=main is read, else its <body> (measured on
six exported articles with all of these: 19/19 pairs, nothing of the chrome leaked). Only text is kept: no
link, attribute or image survives. See ingest/sections.py for what makes a question.
"""

from __future__ import annotations

from pathlib import Path

from bs4 import BeautifulSoup
from bs4.dammit import EncodingDetector

from ingest.sections import Sections, read_tree
from ingest.textfile import read_bytes

CHROME = ["script", "style", "noscript", "template", "iframe", "object", "embed", "svg", "canvas", "nav",
          "header", "footer", "aside", "form", "button", "select", "input", "textarea", "dialog", "head"]
CHROME_SELECTORS = ("[hidden], [aria-hidden=true], [role=navigation], [role=banner], [role=contentinfo], "
                    "[id*=cookie], [class*=cookie], [class*=breadcrumb]")


def read_html(path: str | Path) -> Sections:
    path = Path(path)
    soup = BeautifulSoup(decode_html(read_bytes(path, "HTML")), "lxml")
    for tag in soup.find_all(CHROME) + soup.select(CHROME_SELECTORS):
        if not tag.decomposed:
            tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.find(attrs={"role": "main"}) or soup.body
    return read_tree(path, root)


def decode_html(data: bytes) -> str:
    """Byte-order mark, then the declared charset, then UTF-8, then Windows-1252 (the web's default for
    undeclared pages: bs4's guesser made "Déją" of a Latin-1 "Déjà")."""
    data, bom = EncodingDetector.strip_byte_order_mark(data)
    declared = EncodingDetector.find_declared_encoding(data, is_html=True)
    for encoding in filter(None, (bom, declared, "utf-8", "windows-1252")):
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")  # decodes any byte


__all__ = ["read_html", "decode_html"]
