"""Document -> plain text with its structure kept (stage 1 of the data path).

Markdown and plain text pass through (newlines normalised). HTML is converted to
markdown-like text: headings become `#`..`######` lines (so the chunker can split on
them), paragraphs and block elements are separated by blank lines, list items become
`- ` lines, `<pre>` keeps its whitespace, table rows become ` | `-joined lines, and
scripts, styles and navigation chrome are dropped. Only the standard library is used.

HTML is read by a tokenizer of our own (`_Scanner`), not html.parser: the standard one
rescans the rest of the input at each construct left open (`<a b='` 40,000 times takes
minutes) and raises on `<![` (a traceback). `_Scanner` reads each character a bounded
number of times and checks for interrupts as it goes. On the PostgreSQL manual its
events are html.parser's; on malformed markup it follows html.parser where that is
cheap and HTML5 otherwise: `<!...>`, `<?...>` and `<![CDATA[...` are bogus comments up
to the next `>`, and a construct never closed leaves its `<` as text.
"""
from __future__ import annotations

import html as _html
import re
from collections.abc import Iterator

from . import interrupts
from .errors import InvalidParameter, shown

FORMATS = ("auto", "markdown", "text", "html")

_BLOCK = {"p", "div", "section", "article", "main", "blockquote", "dl", "dt", "dd", "ul", "ol",
          "table", "thead", "tbody", "tfoot", "figure", "figcaption", "header", "footer", "br", "hr",
          "address", "caption"}
_SKIP = {"script", "style", "head", "title", "noscript", "template", "svg", "nav", "button", "form", "iframe"}
_SKIP_CLASSES = {"navheader", "navfooter", "toc", "breadcrumbs", "nav"}
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_VOID = ("br", "hr", "img", "meta", "link", "input", "wbr")
_RAW_TEXT = ("script", "style")  # their content is not markup (html.parser's CDATA_CONTENT_ELEMENTS)
_HTML_SNIFF = re.compile(r"^\s*(<!doctype html|<html|<\?xml[^>]*>\s*<!doctype html)", re.I)
_TAGS = re.compile(r"</?(p|div|h[1-6]|body|table|ul|li|br|span|a)\b", re.I)
_MD_TITLE = re.compile(r"^#[ \t]+(\S.*)$", re.M)

# the HTML tokenizer: each pattern is a run of one character class, or a literal, so no
# match backtracks more than the run it matched
_TAG_NAME = re.compile(r"[a-zA-Z][^\t\n\r\f />\x00]*")
_ATTR_NAME = re.compile(r"[^\t\n\r\f />][^\t\n\r\f /=>]*")
_SPACE = re.compile(r"[\t\n\r\f ]*")
_EQUALS = re.compile(r"[\t\n\r\f ]*=+[\t\n\r\f ]*")
_UNQUOTED = re.compile(r"[^\t\n\r\f >]*")
_END_TAG = re.compile(r"</\s*([a-zA-Z][-.a-zA-Z0-9:_]*)\s*>")  # html.parser's endtagfind
_COMMENT_END = re.compile(r"--!?>")
_RAW_END = {t: re.compile(rf"</\s*{t}(?=[\s/>])", re.I) for t in _RAW_TEXT}
_TEXT_SLICE = 1 << 16   # characters of text handed on at a time
# html.unescape's own pattern: one reference a match (see _unescape)
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")


def _one_ref(m: re.Match) -> str:
    ref = m.group(1)
    if ref[0] == "#" and ref[1] not in "xX":
        # (html.unescape's int() raises past 4,300 digits, leading zeros counted: review 47b)
        digits = ref[1:].rstrip(";").lstrip("0") or "0"
        if len(digits) > 7:
            return "\ufffd"  # > 0x10FFFF
        return _html.unescape("&#" + digits + ";" * ref.endswith(";"))
    return _html.unescape(m.group(0))


def _unescape(s: str) -> str:
    """html.unescape, without its ValueError on a decimal reference of > 4300 digits."""
    return _CHARREF.sub(_one_ref, s) if "&" in s else s


def detect_format(content: str) -> str:
    if _HTML_SNIFF.match(content[:1000]):
        return "html"
    if len(_TAGS.findall(content[:20000])) >= 3:
        return "html"
    return "markdown"


class _HtmlToText:
    """Turns the tokenizer's events (html.parser's handle_* interface) into text."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.tails: list[tuple[bool, int]] = []  # per piece of out: only blanks?, newlines at its end
        self.skip_depth = 0
        self.stack: list[tuple[str, bool]] = []  # (tag, started skipping here)
        self.open: dict[str, int] = {}  # tag -> how many in stack
        self.pre = 0
        self.title: list[str] = []
        self.in_title = False
        self.cell_open = False

    def _put(self, piece: str) -> None:
        body = piece.rstrip(" \n")
        self.out.append(piece)
        self.tails.append((not body, piece.count("\n", len(body))))

    def _newlines(self, n: int) -> None:
        """End the current line and leave n-1 blank lines (no-op at the very start)."""
        if not self.out:
            return
        have = 0
        for blank, newlines in reversed(self.tails[-4:]):  # the blanks that end the last 4 pieces
            have += newlines
            if not blank:
                break
        if have < n:
            self._put("\n" * (n - have))

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            if tag == "br" and not self.skip_depth:
                self._put("\n")
            return
        classes = set((dict(attrs).get("class") or "").split())
        skipping = tag in _SKIP or bool(classes & _SKIP_CLASSES)
        self.stack.append((tag, skipping))
        self.open[tag] = self.open.get(tag, 0) + 1
        if tag == "title":
            self.in_title = True
        if skipping:
            self.skip_depth += 1
        if self.skip_depth:
            return
        if tag in _HEADINGS:
            self._newlines(2)
            self._put("#" * _HEADINGS[tag] + " ")
        elif tag == "li":
            self._newlines(1)
            self._put("- ")
        elif tag == "pre":
            self._newlines(2)
            self._put("```\n")
            self.pre += 1
        elif tag == "tr":
            self._newlines(1)
            self.cell_open = False
        elif tag in ("td", "th"):
            if self.cell_open:
                self._put(" | ")
            self.cell_open = True
        elif tag in _BLOCK:
            self._newlines(2)

    def handle_endtag(self, tag):
        if not self.open.get(tag):
            return  # stray end tag
        while self.stack:
            t, skipping = self.stack.pop()
            self.open[t] -= 1
            if skipping:
                self.skip_depth -= 1
            if t == "title":
                self.in_title = False
            if not self.skip_depth:
                if t in _HEADINGS:
                    self._put("\n\n")
                elif t == "pre":
                    self.pre = max(0, self.pre - 1)
                    self._newlines(1)
                    self._put("```\n\n")
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
            self._put(data)
            return
        collapsed = re.sub(r"\s+", " ", data)
        last = next((piece for piece in reversed(self.out) if piece), "")
        if not last or last.endswith(("\n", " ")):
            collapsed = collapsed.lstrip()  # no space at the start of a line
        if collapsed:
            self._put(collapsed)


class _Next:
    """The first match of `pattern` at or after a position. Each search is remembered, so
    asking again from a later position costs nothing while the answer still holds: a
    construct left open cannot make the parser scan the rest of the input again and again."""

    def __init__(self, html: str, pattern: re.Pattern) -> None:
        self.html, self.pattern = html, pattern
        self.at, self.m = len(html) + 1, None  # the last search: from where, what it found

    def __call__(self, pos: int) -> re.Match | None:
        if not (self.at <= pos and (self.m is None or self.m.start() >= pos)):
            self.at, self.m = pos, self.pattern.search(self.html, pos)
        return self.m


class _Scanner:
    """One pass over an HTML document, calling the handler's handle_* methods."""

    def __init__(self, html: str, h: _HtmlToText) -> None:
        self.html, self.h = html, h
        self.gt = _Next(html, re.compile(">"))
        self.quote = {q: _Next(html, re.compile(q)) for q in "\"'"}
        self.comment_end = _Next(html, _COMMENT_END)
        self.raw_end = {t: _Next(html, p) for t, p in _RAW_END.items()}

    def run(self) -> None:
        html, h, check = self.html, self.h, interrupts.check_interrupts
        n, i = len(html), 0
        while i < n:
            check()
            lt = html.find("<", i)
            if lt < 0:
                self._text(i, n)
                return
            if lt > i:
                self._text(i, lt)
            i = self._markup(lt)
            if i < 0:  # not markup, or never closed: the '<' is text (as html.parser does)
                h.handle_data("<")
                i = lt + 1

    def _text(self, i: int, end: int) -> None:
        """The text html[i:end] between two tags."""
        for piece in self._decoded(i, end):
            self.h.handle_data(piece)

    def _decoded(self, i: int, end: int) -> Iterator[str]:
        """html[i:end], its references decoded, a slice at a time, with a cancel check
        between two (a run of 2 M references took 1.4 s to decode: review 47). A slice ends
        before an '&', where no reference is cut."""
        html = self.html
        while i < end:
            cut = end
            if end - i > _TEXT_SLICE:
                cut = html.rfind("&", i + 1, i + _TEXT_SLICE)
                if cut < 0:   # no reference starts in the slice; one may start at i
                    cut = i + _TEXT_SLICE if html[i] != "&" else html.find("&", i + 1, end)
                    cut = end if cut < 0 else cut
            interrupts.check_interrupts()
            yield _unescape(html[i:cut])
            i = cut

    def _markup(self, lt: int) -> int:
        """Read the tag, comment or declaration at html[lt] == '<'; the index after it, or
        -1 if there is none there or it is never closed."""
        html, h = self.html, self.h
        nxt = html[lt + 1:lt + 2]
        if nxt.isascii() and nxt.isalpha():
            return self._start_tag(lt)
        if nxt == "/":
            m = _END_TAG.match(html, lt)
            if m:
                h.handle_endtag(m.group(1).lower())
                return m.end()
            gt = self.gt(lt + 2)
            if gt is None:
                return -1
            m = _TAG_NAME.match(html, lt + 2)
            if m:  # '</a junk>'; '</>' and '</ 3>' (a bogus comment) say nothing
                h.handle_endtag(m.group().lower())
            return gt.end()
        if html.startswith("<!--", lt):
            if html.startswith(("<!-->", "<!--->"), lt):
                return html.index(">", lt) + 1
            m = self.comment_end(lt + 4)
            return m.end() if m else -1
        if nxt in ("!", "?"):  # doctype, <![CDATA[, <?xml ...: up to the next '>'
            gt = self.gt(lt + 2)
            return gt.end() if gt else -1
        return -1

    def _start_tag(self, lt: int) -> int:
        html, h, check = self.html, self.h, interrupts.check_interrupts
        if self.gt(lt) is None:
            return -1
        n = len(html)
        m = _TAG_NAME.match(html, lt + 1)
        tag, j = m.group().lower(), m.end()
        attrs: list[tuple[str, str]] = []   # (those the converter reads: _attribute)
        while True:
            check()
            j = _SPACE.match(html, j).end()
            if j >= n:
                return n  # the tag runs to the end (a quote closed, then no ">"): dropped
            c = html[j]
            if c == ">":
                h.handle_starttag(tag, attrs)
                return self._raw_text(tag, j + 1)
            if c == "/":
                if html.startswith("/>", j):
                    h.handle_starttag(tag, attrs)
                    h.handle_endtag(tag)
                    return j + 2
                j += 1
                continue
            m = _ATTR_NAME.match(html, j)
            name, j = m.group().lower(), m.end()
            eq = _EQUALS.match(html, j)
            if eq:
                j = eq.end()
                if j < n and html[j] in "\"'":
                    close = self.quote[html[j]](j + 1)
                    if close is None:  # never closed: the value runs to the next '>', which ends the tag
                        gt = self.gt(j + 1)
                        if gt is None:
                            return n
                        h.handle_starttag(tag, attrs + self._attribute(name, j + 1, gt.start()))
                        return self._raw_text(tag, gt.end())
                    attrs += self._attribute(name, j + 1, close.start())
                    j = close.end()
                else:
                    m = _UNQUOTED.match(html, j)
                    attrs += self._attribute(name, *m.span())
                    j = m.end()

    def _attribute(self, name: str, i: int, end: int) -> list[tuple[str, str]]:
        """The attribute whose value is html[i:end], as handle_starttag takes it, if it is one
        the converter reads (class); the others are not decoded (a value of 2 M references
        was one call of 2.5 s: review 56)."""
        return [(name, "".join(self._decoded(i, end)))] if name == "class" else []

    def _raw_text(self, tag: str, j: int) -> int:
        """After <script> or <style>: their text up to the matching end tag is not markup;
        left open, the rest of the document is theirs (and dropped)."""
        if tag not in _RAW_TEXT:
            return j
        html, n = self.html, len(self.html)
        m = self.raw_end[tag](j)
        if m is None:
            return n
        if m.start() > j:
            self.h.handle_data(html[j:m.start()])
        gt = self.gt(m.end())
        self.h.handle_endtag(tag)
        return n if gt is None else gt.end()


FOUND_TITLE_CHARS = 500   # a title found in a document is cut here (rag.documents takes 4,096)


def found_title(title: str | None) -> str | None:
    """A title found in a document (its first heading, <title>, a file's metadata): one
    line, at most FOUND_TITLE_CHARS; None if blank. (A 30 MB one was carried by every
    reader's citation: review 44b.)"""
    return (" ".join(title.split())[:FOUND_TITLE_CHARS] or None) if title else None


def html_to_text(html: str) -> tuple[str, str | None]:
    """Return (text, title) for an HTML document."""
    parser = _HtmlToText()
    _Scanner(html, parser).run()
    lines = "".join(parser.out).split("\n")
    for i in range(0, len(lines), 1 << 16):
        interrupts.check_interrupts()
        lines[i:i + (1 << 16)] = [ln.rstrip() for ln in lines[i:i + (1 << 16)]]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text, found_title("".join(parser.title))   # (entities already decoded)


def to_text(content: str, fmt: str = "auto") -> tuple[str, str | None]:
    """Normalise a document for chunking. Returns (text, title found in the document)."""
    fmt = (fmt or "auto").lower()
    if fmt not in FORMATS:
        raise InvalidParameter(f"rag: unknown document format {shown(fmt)}",
                               hint="metadata->>'format' must be one of " + ", ".join(FORMATS))
    if fmt == "auto":
        fmt = detect_format(content)
    if fmt == "html":
        return html_to_text(content)
    text = content.replace("\r\n", "\n").replace("\r", "\n")
    m = _MD_TITLE.search(text)
    return text, found_title(m.group(1) if m else None)
