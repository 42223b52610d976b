"""Render a report Document as one self-contained HTML file (plots embedded as base64 PNG), with
a table of contents of its sections, laid out for a laptop screen: nothing wider than the page
(wide tables scroll inside their own box)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence

from .content import Bullets, Document, Heading, Image, Para, Table

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem auto;max-width:1200px;padding:0 1rem;
color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.85rem;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
nav.toc{background:#f7f7f7;border:1px solid #e3e3e3;padding:.5rem 1rem;margin:1rem 0;font-size:.9rem}
nav.toc ol{margin:.2rem 0;padding-left:1.4rem;columns:3}
section#answers{border-left:4px solid #1a7f37;padding-left:.8rem}
pre,code{overflow-wrap:anywhere}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}
caption{caption-side:bottom;text-align:left;font-style:italic;font-size:.8rem;padding-top:.3rem}
figure{margin:1rem 0}
img{max-width:100%;border:1px solid #eee}
code{background:#f3f3f3;padding:0 .2rem}
li{margin:.2rem 0}
"""

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    escaped = html.escape(text)
    return _BOLD.sub(r"<b>\1</b>", _CODE.sub(r"<code>\1</code>", escaped))


def anchor(text: str, taken: set[str]) -> str:
    """A unique id for a heading: its words in lower case joined by '-'."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def _toc(headings: Sequence[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="#{a}">{_inline(text)}</a></li>' for a, text in headings)
    return f'<nav class="toc" id="contents"><b>Contents</b><ol>{items}</ol></nav>'


def render(doc: Document, images: Mapping[str, bytes]) -> str:
    """`images` maps an Image block's file name to its PNG bytes; a missing one is linked instead.
    Each level-2 heading opens a <section> with its anchor, listed in the table of contents."""
    taken: set[str] = set()
    ids = [anchor(b.text, taken) if isinstance(b, Heading) else "" for b in doc.blocks]
    toc = [(ids[i], b.text) for i, b in enumerate(doc.blocks) if isinstance(b, Heading) and b.level <= 2]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(doc.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    open_section = False
    for i, block in enumerate(doc.blocks):
        if isinstance(block, Heading):
            if block.level <= 2:
                out.append(("</section>" if open_section else "") + f'<section id="{ids[i]}">')
                open_section = True
            tag = f"h{block.level}"
            out.append(f'<{tag} id="h-{ids[i]}">{_inline(block.text)}</{tag}>')
        elif isinstance(block, Para):
            out.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            cap = f"<caption>{_inline(block.caption)}</caption>" if block.caption else ""
            out.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            data = images.get(block.file)
            alt = html.escape(block.alt)
            if data:
                src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
                out.append(f'<figure><img src="{src}" alt="{alt}"><figcaption>{alt}</figcaption></figure>')
            else:
                out.append(f'<p><a href="{html.escape(block.file)}">{alt}</a></p>')
    if open_section:
        out.append("</section>")
    if len(toc) > 1:  # after the first paragraph (what the run was), before the answers
        first = next((k for k, line in enumerate(out) if line.startswith("<section")), len(out))
        out.insert(first, _toc(toc))
    out.append("</body></html>")
    return "\n".join(out) + "\n"
