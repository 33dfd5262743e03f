"""Render report blocks to one self-contained HTML file (PNG images inlined as base64 data URIs)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from engine.report.document import Block

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
h1 { font-size: 1.6em; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _inline(text: str) -> str:
    """Escaped text with the Markdown emphasis the blocks use (**verdict**, *label*) as <strong>/<em>."""
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", html.escape(text))
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", out)


def to_html(blocks: list[Block], image_dir: Path) -> str:
    """HTML for ``blocks``; image blocks name PNG files in ``image_dir``, embedded inline."""
    e = html.escape
    title = next((b.text for b in blocks if b.kind == "h1"), "Scaling report")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3", "h4"):
            parts.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "img":
            parts.append(f"<figure><img alt='{e(b.header[0])}' src='{data_uri(image_dir / b.text)}'>"
                         f"<figcaption>{e(b.header[0])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
