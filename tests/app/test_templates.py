"""Template rendering: variables, HTML escaping and the errors for unknown names."""

from __future__ import annotations

import datetime as dt

import pytest

from app_jobs.templates import (
    VARIABLES,
    TemplateError,
    html_to_text,
    render,
    render_email,
    template_values,
    text_to_html,
)

VALUES = template_values(
    vendor_name="Ann <Lee>",
    vendor_company="Lee & Daughters",
    event_title="Spring Market",
    event_starts_at=dt.datetime(2026, 5, 6, 9, 30, tzinfo=dt.UTC),
    event_venue='Hall "A"',
)


def test_values_of_every_variable() -> None:
    assert sorted(VALUES) == sorted(VARIABLES)
    assert VALUES == {
        "vendor_name": "Ann <Lee>",
        "vendor_first_name": "Ann",
        "vendor_company": "Lee & Daughters",
        "event_title": "Spring Market",
        "event_date": "6 May 2026",
        "event_time": "09:30 UTC",
        "event_venue": 'Hall "A"',
    }


def test_missing_optional_values_are_empty() -> None:
    values = template_values(
        vendor_name="Bo",
        vendor_company=None,
        event_title="Fair",
        event_starts_at=None,
        event_venue=None,
    )
    assert values["vendor_company"] == ""
    assert values["event_date"] == ""
    assert values["event_venue"] == ""


def test_html_body_escapes_values() -> None:
    email = render_email(
        "Hi {{vendor_name}} from {{vendor_company}}",
        "<p>Hello {{ vendor_name }} of {{vendor_company}} at {{event_venue}}</p>",
        VALUES,
    )
    assert email.subject == "Hi Ann <Lee> from Lee & Daughters"
    assert email.html == (
        "<p>Hello Ann &lt;Lee&gt; of Lee &amp; Daughters at Hall &quot;A&quot;</p>"
    )
    assert email.text == 'Hello Ann <Lee> of Lee & Daughters at Hall "A"'


def test_text_body_gets_html_copy() -> None:
    email = render_email("S", "Hello {{vendor_name}},\n\nSee you on\n{{event_date}}.", VALUES)
    assert email.text == "Hello Ann <Lee>,\n\nSee you on\n6 May 2026."
    assert email.html == "<p>Hello Ann &lt;Lee&gt;,</p>\n<p>See you on<br>\n6 May 2026.</p>"


def test_subject_newlines_collapse() -> None:
    email = render_email("Line one\r\nline {{event_title}}", "x", VALUES)
    assert email.subject == "Line one line Spring Market"


def test_unknown_variable_names_it() -> None:
    with pytest.raises(TemplateError) as caught:
        render_email("Hi", "<p>{{vendor_email}}</p>", VALUES)
    message = str(caught.value)
    assert "{{vendor_email}}" in message
    assert "body" in message
    assert "vendor_name" in message


def test_unknown_variable_in_subject() -> None:
    with pytest.raises(TemplateError, match=r"\{\{evnt_title\}\} in the subject"):
        render_email("{{evnt_title}}", "body", VALUES)


def test_malformed_placeholder() -> None:
    with pytest.raises(TemplateError, match="malformed placeholder"):
        render("Hello {{vendor name}}", VALUES, part="body")


def test_html_to_text_keeps_links_and_lists() -> None:
    markup = (
        "<html><head><style>p {color: red}</style></head><body>"
        '<h1>Welcome</h1><p>Read the <a href="https://example.org/guide">guide</a>.</p>'
        "<ul><li>One</li><li>Two &amp; three</li></ul></body></html>"
    )
    assert html_to_text(markup) == (
        "Welcome\n\nRead the guide (https://example.org/guide).\n\n- One\n- Two & three"
    )


def test_text_to_html_escapes() -> None:
    assert text_to_html("a < b\n\n& c") == "<p>a &lt; b</p>\n<p>&amp; c</p>"
