"""The line shown after an action, built from the counts that the redirect carries.

Only the action name and two numbers travel in the URL, and the text comes
from the table below, so a crafted link cannot put words on the page.
"""

from __future__ import annotations

from pyqueue.web.http import Request

NOTICE_PARAMS = ("done", "count", "skipped")

# action -> (sentence with {count}, singular noun, plural noun)
NOTICES = {
    "retry": ("Retried {count}.", "job", "jobs"),
    "add_to_queue": ("Added {count} to their queues.", "job", "jobs"),
    "delete": ("Deleted {count}.", "job", "jobs"),
    "kill": ("Moved {count} to the dead set.", "job", "jobs"),
    "clear": ("Cleared the queue: {count} deleted.", "job", "jobs"),
    "quiet": ("Sent quiet to {count}.", "process", "processes"),
    "stop": ("Sent stop to {count}.", "process", "processes"),
    "enable": ("Enabled {count}.", "cron job", "cron jobs"),
    "disable": ("Disabled {count}.", "cron job", "cron jobs"),
    "enqueue": ("Enqueued {count} now.", "cron job", "cron jobs"),
}
SKIPPED = (
    "{skipped} skipped: gone meanwhile, or the payload cannot be pushed "
    "(delete such an entry instead)."
)


def notice_text(request: Request) -> str | None:
    """Return the notice for ``?done=&count=&skipped=``, or None when there is none."""
    known = NOTICES.get(request.arg("done"))
    if known is None:
        return None
    sentence, singular, plural = known
    count = _number(request.arg("count"))
    text = sentence.format(count=f"{count} {singular if count == 1 else plural}")
    skipped = _number(request.arg("skipped"))
    if skipped:
        text += " " + SKIPPED.format(skipped=skipped)
    return text


def _number(value: str) -> int:
    return int(value) if value.isdigit() and len(value) < 10 else 0
