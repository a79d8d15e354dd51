"""Reading Redis ``MONITOR`` traffic: live from a thread, or from the captures directory.

Both give ``Command`` records with the arguments unescaped, so a capture of
Ruby Sidekiq and a recording of pyqueue can be compared command by command.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from pyqueue.payload import loads

CAPTURES = Path(__file__).resolve().parent / "captures"

_LINE = re.compile(r"^(?P<time>\d+\.\d+) \[(?P<db>\d+) (?P<client>[^\]]*)\] (?P<args>.*)$")
_ARGUMENT = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


@dataclasses.dataclass(frozen=True)
class Command:
    """One command as MONITOR printed it: time, client address ("lua" inside scripts), args."""

    time: float
    client: str
    args: tuple[str, ...]

    @property
    def name(self) -> str:
        """Return the lowercased command name; HMSET counts as HSET, which replaced it."""
        name = self.args[0].lower()
        return "hset" if name == "hmset" else name

    @property
    def key(self) -> str:
        return self.args[1] if len(self.args) > 1 else ""


def unescape(text: str) -> str:
    """Undo MONITOR's quoting (``\\"``, ``\\n``, ``\\xHH`` for bytes) and decode UTF-8."""
    out = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if char != "\\":
            out += char.encode()
            index += 1
            continue
        follower = text[index + 1]
        if follower == "x":
            out.append(int(text[index + 2 : index + 4], 16))
            index += 4
        else:
            out += _ESCAPES[follower].encode()
            index += 2
    return out.decode("utf-8")


def parse_line(line: str) -> Command | None:
    """Parse one MONITOR line; return None for comments and other lines."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    args = tuple(unescape(raw) for raw in _ARGUMENT.findall(match["args"]))
    return Command(float(match["time"]), match["client"], args)


def read_capture(name: str) -> list[Command]:
    """Return the commands of ``captures/<name>.txt``."""
    text = (CAPTURES / f"{name}.txt").read_text(encoding="utf-8")
    commands = [parse_line(line) for line in text.splitlines()]
    return [command for command in commands if command is not None]


class MonitorRecorder:
    """Records MONITOR output in a background thread while the ``with`` block runs.

    Leaving the block sends an ECHO with a random marker and stops reading when
    the marker arrives, so every command sent before the exit is included.
    """

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.commands: list[Command] = []
        self._marker = f"monitor-stop-{secrets.token_hex(8)}"
        self._client = redis.Redis.from_url(redis_url)
        self._monitor: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> MonitorRecorder:
        self._monitor = self._client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._read, name="monitor", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            while True:
                response = self._monitor.connection.read_response()
                line = response.decode() if isinstance(response, bytes) else str(response)
                command = parse_line(line)
                if command is None:
                    continue
                if command.name == "echo" and command.key == self._marker:
                    return
                self.commands.append(command)
        except BaseException as error:  # reported by __exit__ in the test's thread
            self._error = error

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        sender = redis.Redis.from_url(self.redis_url)
        try:
            sender.echo(self._marker)
        finally:
            sender.close()
        assert self._thread is not None
        self._thread.join(timeout=10)
        self._monitor.__exit__(None, None, None)
        self._client.close()
        if self._error is not None and exc is None:
            raise AssertionError(f"reading MONITOR output failed: {self._error!r}")

    def matching(self, *names: str) -> list[Command]:
        """Return the recorded commands with one of ``names``, minus connection set-up."""
        return [c for c in self.commands if c.name in names]


def json_type(value: Any) -> str:
    """Return the JSON type name of a decoded value; an int and a float differ."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "string", list: "array", dict: "object"}[type(value)]


def field_types(payload_json: str) -> dict[str, str]:
    """Return field name to JSON type for a payload string."""
    payload = loads(payload_json)
    assert isinstance(payload, dict), f"payload is not a JSON object: {payload_json[:200]}"
    return {field: json_type(value) for field, value in payload.items()}
