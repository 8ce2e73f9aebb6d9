"""Document -> plain text with its structure kept (stage 1 of the data path).

Markdown and plain text pass through (newlines normalised). HTML is converted to
markdown-like text: headings become `#`..`######` lines (so the chunker can split on
them), paragraphs and block elements are separated by blank lines, list items become
`- ` lines, `<pre>` keeps its whitespace, table rows become ` | `-joined lines, and
scripts, styles and navigation chrome are dropped. Only the standard library is used.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

FORMATS = ("auto", "markdown", "text", "html")

_BLOCK = {"p", "div", "section", "article", "main", "blockquote", "dl", "dt", "dd", "ul", "ol",
          "table", "thead", "tbody", "tfoot", "figure", "figcaption", "header", "footer", "br", "hr",
          "address", "caption"}
_SKIP = {"script", "style", "head", "title", "noscript", "template", "svg", "nav", "button", "form", "iframe"}
_SKIP_CLASSES = {"navheader", "navfooter", "toc", "breadcrumbs", "nav"}
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_HTML_SNIFF = re.compile(r"^\s*(<!doctype html|<html|<\?xml[^>]*>\s*<!doctype html)", re.I)
_TAGS = re.compile(r"</?(p|div|h[1-6]|body|table|ul|li|br|span|a)\b", re.I)


def detect_format(content: str) -> str:
    if _HTML_SNIFF.match(content[:1000]):
        return "html"
    if len(_TAGS.findall(content[:20000])) >= 3:
        return "html"
    return "markdown"


class _HtmlToText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_depth = 0
        self.stack: list[tuple[str, bool]] = []  # (tag, started skipping here)
        self.pre = 0
        self.title: list[str] = []
        self.in_title = False
        self.cell_open = False

    def _newlines(self, n: int) -> None:
        """End the current line and leave n-1 blank lines (no-op at the very start)."""
        if not self.out:
            return
        tail = "".join(self.out[-4:])
        have = tail[len(tail.rstrip(" \n")):].count("\n")
        if have < n:
            self.out.append("\n" * (n - have))

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "hr", "img", "meta", "link", "input", "wbr"):  # void elements
            if tag == "br" and not self.skip_depth:
                self.out.append("\n")
            return
        classes = set((dict(attrs).get("class") or "").split())
        skipping = tag in _SKIP or bool(classes & _SKIP_CLASSES)
        self.stack.append((tag, skipping))
        if tag == "title":
            self.in_title = True
        if skipping:
            self.skip_depth += 1
        if self.skip_depth:
            return
        if tag in _HEADINGS:
            self._newlines(2)
            self.out.append("#" * _HEADINGS[tag] + " ")
        elif tag == "li":
            self._newlines(1)
            self.out.append("- ")
        elif tag == "pre":
            self._newlines(2)
            self.out.append("```\n")
            self.pre += 1
        elif tag == "tr":
            self._newlines(1)
            self.cell_open = False
        elif tag in ("td", "th"):
            if self.cell_open:
                self.out.append(" | ")
            self.cell_open = True
        elif tag in _BLOCK:
            self._newlines(2)

    def handle_endtag(self, tag):
        if not any(t == tag for t, _ in self.stack):
            return  # stray end tag
        while self.stack:
            t, skipping = self.stack.pop()
            if skipping:
                self.skip_depth -= 1
            if t == "title":
                self.in_title = False
            if not self.skip_depth:
                if t in _HEADINGS:
                    self.out.append("\n\n")
                elif t == "pre":
                    self.pre = max(0, self.pre - 1)
                    self._newlines(1)
                    self.out.append("```\n\n")
                elif t in _BLOCK:
                    self._newlines(2)
            if t == tag:
                break

    def handle_data(self, data):
        if self.in_title:
            self.title.append(data)
        if self.skip_depth:
            return
        if self.pre:
            self.out.append(data)
            return
        collapsed = re.sub(r"\s+", " ", data)
        last = next((piece for piece in reversed(self.out) if piece), "")
        if not last or last.endswith(("\n", " ")):
            collapsed = collapsed.lstrip()  # no space at the start of a line
        if collapsed:
            self.out.append(collapsed)


def html_to_text(html: str) -> tuple[str, str | None]:
    """Return (text, title) for an HTML document."""
    parser = _HtmlToText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    lines = [ln.rstrip() for ln in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    title = re.sub(r"\s+", " ", "".join(parser.title)).strip() or None  # entities already decoded
    return text, title


def to_text(content: str, fmt: str = "auto") -> tuple[str, str | None]:
    """Normalise a document for chunking. Returns (text, title found in the document)."""
    fmt = (fmt or "auto").lower()
    if fmt not in FORMATS:
        from .errors import InvalidParameter
        raise InvalidParameter(f"rag: unknown document format {fmt!r}",
                               hint="metadata->>'format' must be one of " + ", ".join(FORMATS))
    if fmt == "auto":
        fmt = detect_format(content)
    if fmt == "html":
        return html_to_text(content)
    text = content.replace("\r\n", "\n").replace("\r", "\n")
    m = re.search(r"^#[ \t]+(\S.*)$", text, re.M)
    return text, (m.group(1).strip() if m else None)
