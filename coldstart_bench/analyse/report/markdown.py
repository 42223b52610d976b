"""Render a report Document as GitHub-flavoured Markdown."""

from __future__ import annotations

from .content import Bullets, Document, Heading, Image, Para, Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(t: Table) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in t.headers) + " |", "|" + "---|" * len(t.headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", f"*{t.caption}*"]
    return lines


def render(doc: Document) -> str:
    out = [f"# {doc.title}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Para):
            out += [block.text, ""]
        elif isinstance(block, Bullets):
            out += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            out += [*render_table(block), ""]
        elif isinstance(block, Image):
            out += [f"![{block.alt}]({block.file})", "", f"[{block.file}]({block.file}) — {block.alt}", ""]
    return "\n".join(out).rstrip() + "\n"
