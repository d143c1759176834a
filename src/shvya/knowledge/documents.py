"""Knowledge-base files to text: blocks of paragraphs under their headings.

Markdown and HTML keep their headings (a passage is found by its section's title too);
plain text and PDF give paragraphs. No network, no external programs.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath

from shvya.errors import InvalidInput

SUPPORTED = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".txt": "text/plain",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}


class UnsupportedDocument(InvalidInput):
    code = "unsupported_document"


@dataclass(frozen=True)
class Block:
    """One paragraph and the headings above it (outermost first)."""

    headings: tuple[str, ...]
    text: str


def mime_type_for(filename: str, declared: str | None = None) -> str:
    suffix = PurePath(filename).suffix.lower()
    if suffix in SUPPORTED:
        return SUPPORTED[suffix]
    if declared in set(SUPPORTED.values()):
        return declared
    raise UnsupportedDocument(
        f"{filename!r}: SHVYA reads .md, .txt, .html and .pdf knowledge-base files"
    )


def decode_text(data: bytes, *, filename: str) -> str:
    """UTF-8 (with or without a BOM), or UTF-16 when its BOM says so; anything else is refused
    rather than guessed, since a wrong guess turns prices into mojibake."""
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnsupportedDocument(f"{filename!r} is not UTF-8 text; save it as UTF-8") from None
    if "\x00" in text:
        raise UnsupportedDocument(f"{filename!r} holds binary data, not text")
    return text


def extract_text(data: bytes, *, mime_type: str, filename: str) -> str:
    """The document as markdown-ish text: what is stored and what blocks are read from."""
    if mime_type == "application/pdf":
        return _pdf_text(data, filename=filename)
    text = decode_text(data, filename=filename)
    if mime_type == "text/html":
        return _html_to_markdown(text)
    return text


def blocks_of(text: str) -> list[Block]:
    """Paragraphs under their markdown headings (`#` to `######`)."""
    blocks: list[Block] = []
    headings: list[tuple[int, str]] = []
    paragraph: list[str] = []

    def flush() -> None:
        body = _clean_markdown(" ".join(line.strip() for line in paragraph)).strip()
        paragraph.clear()
        if body:
            blocks.append(Block(headings=tuple(h for _, h in headings), text=body))

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        heading = re.match(r"^(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if heading:
            flush()
            level = len(heading.group(1))
            headings = [(lvl, h) for lvl, h in headings if lvl < level]
            headings.append((level, _clean_markdown(heading.group(2)).strip()))
        elif not line.strip():
            flush()
        elif re.match(r"^\s*([-*+]|\d+[.)])\s+", line) and paragraph:
            flush()  # each list item its own paragraph: prices often sit in lists
            paragraph.append(line)
        else:
            paragraph.append(line)
    flush()
    return blocks


def _clean_markdown(text: str) -> str:
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)  # images: their alt text
    text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"\1 (\2)", text)  # links: text (url)
    text = re.sub(r"(\*\*|__|\*|_|`)(\S(?:.*?\S)?)\1", r"\2", text)  # emphasis, code
    text = re.sub(r"^\s*([-*+]|\d+[.)])\s+", "", text)  # list markers
    text = re.sub(r"^\s*>\s?", "", text)  # quotes
    return re.sub(r"[ \t]+", " ", text)


class _HTMLText(HTMLParser):
    BLOCK = {"p", "div", "li", "tr", "br", "section", "article", "table", "ul", "ol", "dd", "dt"}
    SKIP = {"script", "style", "noscript", "template", "head", "svg"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skipping = 0
        self.heading_level: int | None = None

    def _break(self) -> None:
        text = re.sub(r"\s+", " ", "".join(self.current)).strip()
        self.current = []
        if text:
            prefix = "#" * self.heading_level + " " if self.heading_level else ""
            self.lines.extend([prefix + text, ""])

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._break()
            self.heading_level = int(tag[1])
        elif tag in self.BLOCK:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif re.fullmatch(r"h[1-6]", tag):
            self._break()
            self.heading_level = None
        elif tag in self.BLOCK:
            self._break()

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.current.append(data)


def _html_to_markdown(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    parser._break()
    return "\n".join(parser.lines).strip() + "\n"


def _pdf_text(data: bytes, *, filename: str) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise UnsupportedDocument(f"{filename!r} is not a readable PDF ({exc})") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise UnsupportedDocument(f"{filename!r} has no text layer (scanned pages?)")
    # PDF lines end mid-sentence; a blank line is the only paragraph break worth keeping.
    return re.sub(r"(?<![.\n:])\n(?!\n)", " ", text)
