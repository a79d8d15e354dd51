"""Rendering of scheduled emails: ``{{variable}}`` placeholders filled per recipient.

A body written as HTML gets HTML-escaped values and a plain-text copy made
from the rendered HTML; a plain-text body gets a simple HTML copy. Subjects
are plain text. A placeholder that names no known variable raises
TemplateError, which the sender stores on that scheduled email.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re
from collections.abc import Mapping
from html.parser import HTMLParser

# {{ name }}, spaces inside the braces allowed.
PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A start or end tag: enough to tell an HTML body from a plain-text one.
HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")

VARIABLES = (
    "vendor_name",
    "vendor_first_name",
    "vendor_company",
    "event_title",
    "event_date",
    "event_time",
    "event_venue",
)

BLOCK_TAGS = {
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "hr",
}


class TemplateError(ValueError):
    """Raised when a template uses an unknown variable or a malformed placeholder."""


@dataclasses.dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


def template_values(
    *,
    vendor_name: str,
    vendor_company: str | None,
    event_title: str,
    event_starts_at: dt.datetime | None,
    event_venue: str | None,
) -> dict[str, str]:
    """Return the value of every variable. Missing optional fields render as ""."""
    starts = event_starts_at.astimezone(dt.UTC) if event_starts_at else None
    return {
        "vendor_name": vendor_name,
        "vendor_first_name": vendor_name.split()[0] if vendor_name.split() else "",
        "vendor_company": vendor_company or "",
        "event_title": event_title,
        # Events have no time zone of their own yet, so dates and times are UTC.
        "event_date": f"{starts.day} {starts:%B %Y}" if starts else "",
        "event_time": f"{starts:%H:%M} UTC" if starts else "",
        "event_venue": event_venue or "",
    }


def render(template: str, values: Mapping[str, str], *, part: str, escape: bool = False) -> str:
    """Replace every placeholder in ``template``; ``part`` names it in errors.

    Raises TemplateError naming the first unknown variable or malformed placeholder.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if not NAME.fullmatch(name):
            raise TemplateError(
                f"malformed placeholder {match.group(0)!r} in the {part}; "
                "write a variable name between double braces, e.g. {{vendor_name}}"
            )
        if name not in values:
            raise TemplateError(
                f"unknown template variable {{{{{name}}}}} in the {part}; "
                f"known variables: {', '.join(sorted(values))}"
            )
        value = values[name]
        return html.escape(value) if escape else value

    return PLACEHOLDER.sub(replace, template)


def render_email(subject: str, body: str, values: Mapping[str, str]) -> RenderedEmail:
    """Render a subject and a body (HTML or plain text) into subject, HTML and text."""
    rendered_subject = " ".join(render(subject, values, part="subject").split())
    if is_html(body):
        html_body = render(body, values, part="body", escape=True)
        text_body = html_to_text(html_body)
    else:
        text_body = render(body, values, part="body")
        html_body = text_to_html(text_body)
    return RenderedEmail(subject=rendered_subject, html=html_body, text=text_body)


def is_html(body: str) -> bool:
    return HTML_TAG.search(body) is not None


def text_to_html(text: str) -> str:
    """Escape ``text`` and wrap its paragraphs (split at blank lines) in <p>."""
    paragraphs = [part.strip() for part in re.split(r"\n\s*\n", text.strip()) if part.strip()]
    return "\n".join(
        "<p>" + html.escape(part).replace("\n", "<br>\n") + "</p>" for part in paragraphs
    )


def html_to_text(markup: str) -> str:
    """Make the plain-text alternative of an HTML body: tags dropped, links kept."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._links: list[str | None] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head"):
            self._skip += 1
        elif tag == "a":
            self._links.append(dict(attrs).get("href"))
        elif tag in BLOCK_TAGS:
            self.parts.append("\n\n" if tag == "p" else "\n")
            if tag == "li":
                self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._links:
            href = self._links.pop()
            if href and not href.startswith(("#", "mailto:")):
                self.parts.append(f" ({href})")
        elif tag in BLOCK_TAGS and tag != "li":
            self.parts.append("\n\n" if tag == "p" else "\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)
