"""Minimal PDFs written byte by byte, for the adversarial cases no real producer makes
(thousands of pages, objects nested 100,000 deep). A fake file made on purpose: the
ordinary cases use the real files in tests/files/ (scripts/make_test_files.sh)."""
from __future__ import annotations

import zlib


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[str], extra_page_entry: str = "", deflate: bool = False, depth: int = 1,
             title: str | None = None, to_unicode: dict[str, str] | None = None, cmap_pad: int = 0) -> bytes:
    """A PDF 1.4 with one page per string (Helvetica, one line of text each), valid xref;
    `deflate`: content streams compressed; `depth`: the page tree's depth (its nodes above
    the root's /Kids one a level, each holding the next); `title`: the document's /Info /Title;
    `to_unicode`: the font's /ToUnicode CMap, a character of the text -> the text it reads as,
    `cmap_pad` blanks longer."""
    objs: list[bytes] = []
    n = len(pages)
    # 1: catalog, 2: pages, 3: font, then per page: page object, content stream
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({_escape(text)}) Tj ET".encode()
        flate = b""
        if deflate:
            stream, flate = zlib.compress(stream, 9), b" /Filter /FlateDecode"
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                    f"/Contents {5 + 2 * i} 0 R {extra_page_entry if i == 0 else ''}>>".encode())
        objs.append(b"<< /Length %d%s >>\nstream\n" % (len(stream), flate) + stream + b"\nendstream")
    if depth > 1:   # 2 holds the next node, ..., the last holds the pages (their /Parent stays 2)
        nodes = list(range(len(objs) + 1, len(objs) + depth))
        objs[1] = f"<< /Type /Pages /Kids [{nodes[0]} 0 R] /Count {n} >>".encode()
        for k, node in enumerate(nodes):
            below = f"{nodes[k + 1]} 0 R" if k + 1 < len(nodes) else kids
            parent = nodes[k - 1] if k else 2
            objs.append(f"<< /Type /Pages /Parent {parent} 0 R /Kids [{below}] /Count {n} >>".encode())
    if to_unicode is not None:
        pairs = "".join(f"<{ord(a):02X}> <{b.encode('utf-16-be', 'surrogatepass').hex().upper()}>\n" for a, b in to_unicode.items())
        cmap = ("/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n1 begincodespacerange\n"
                f"<00> <FF>\nendcodespacerange\n{len(to_unicode)} beginbfchar\n{pairs}endbfchar\n"
                "endcmap\nend end\n").encode() + b" " * cmap_pad
        objs.append(b"<< /Length %d >>\nstream\n" % len(cmap) + cmap + b"\nendstream")
        objs[2] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode %d 0 R >>" % len(objs)
    info = b""
    if title is not None:
        objs.append(f"<< /Title ({_escape(title)}) >>".encode())
        info = b" /Info %d 0 R" % len(objs)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for k, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % k + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, info, xref)
    return bytes(out)
