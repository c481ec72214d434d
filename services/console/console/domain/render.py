"""How untrusted trace content becomes HTML: as escaped text, or as markdown that is rendered without raw HTML
and then sanitised by nh3 (a maintained Rust sanitiser), never as live HTML. Long content is folded."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

# Markdown with raw HTML disabled: a '<script>' in the source stays text. nh3 then removes anything a markdown
# construct could still smuggle in (javascript: links, odd attributes).
_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")

_ALLOWED_TAGS = {
    "p", "br", "hr", "pre", "code", "blockquote", "em", "strong", "del", "a", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
}
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}}
_URL_SCHEMES = {"http", "https", "mailto"}


MARKDOWN_LIMIT = 8000


def sanitised_markdown(text: str) -> Markup:
    """Markdown as sanitised HTML, for at most the first MARKDOWN_LIMIT characters (the whole text stays
    available as plain text). Cached: the same prompt often repeats across a trace's generations."""
    return _markdown(text[:MARKDOWN_LIMIT])


@functools.lru_cache(maxsize=512)
def _markdown(text: str) -> Markup:
    html = _md.render(text)
    clean = nh3.clean(
        html, tags=_ALLOWED_TAGS, attributes=_ALLOWED_ATTRIBUTES, url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow", strip_comments=True,
    )
    return Markup(clean)


def as_text(value: Any) -> str:
    """A readable text form of any JSON value: strings as they are, everything else pretty-printed JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)
    except (TypeError, ValueError):
        return str(value)


@dataclass(frozen=True)
class Message:
    role: str
    text: str


def chat_messages(value: Any) -> list[Message] | None:
    """A chat transcript (``[{role, content}]`` or ``{"messages": [...]}``), shown as turns; None otherwise."""
    if isinstance(value, dict) and isinstance(value.get("messages"), list) and len(value) <= 3:
        value = value["messages"]
    if not isinstance(value, list) or not value:
        return None
    out = []
    for m in value:
        if not isinstance(m, dict) or "role" not in m or not ({"content", "text"} & m.keys()):
            return None
        content = m.get("content", m.get("text"))
        if isinstance(content, list):  # multi-part content: keep the text parts
            parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
            content = "\n".join(x for x in parts if x)
        out.append(Message(str(m["role"]), as_text(content)))
    return out


@dataclass(frozen=True)
class Folded:
    text: str
    preview: str
    folded: bool
    size: int


def fold(text: str, limit: int) -> Folded:
    """Long text keeps a preview of its first ``limit`` characters (cut at a line end where one is near)."""
    if len(text) <= limit and text.count("\n") < 40:
        return Folded(text, text, False, len(text))
    cut = text[:limit]
    nl = cut.rfind("\n")
    if nl > limit // 2:
        cut = cut[:nl]
    lines = cut.split("\n")
    if len(lines) > 40:
        cut = "\n".join(lines[:40])
    return Folded(text, cut, True, len(text))
