"""Render a report Document as one self-contained HTML file (plots embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping

from .content import Bullets, Document, Heading, Image, Para, Table

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;
color:#222}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.85rem;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right;white-space:nowrap}
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


def render(doc: Document, images: Mapping[str, bytes]) -> str:
    """`images` maps an Image block's file name to its PNG bytes; a missing one is linked instead."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(doc.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
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
    out.append("</body></html>")
    return "\n".join(out) + "\n"
