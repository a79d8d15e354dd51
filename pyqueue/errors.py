"""Exceptions raised by pyqueue.

PyQueueError
├── ConfigError          a setting is missing or invalid
├── JobDefinitionError   a job class is declared wrongly (duplicate name, bad option)
├── ArgumentError        (also TypeError) a job argument cannot be stored as JSON
├── PayloadError         a payload read from Redis is not a valid job hash
├── UnknownJobClass      no registered job has the payload's class name
└── RedisVersionError    the Redis server is older than the supported version
"""

from __future__ import annotations


class PyQueueError(Exception):
    """Base class of every error pyqueue raises on purpose."""


class ConfigError(PyQueueError):
    """Raised when a setting is missing or invalid; the message names the setting."""


class JobDefinitionError(PyQueueError):
    """Raised at import time when a job class or its options are invalid."""


class ArgumentError(PyQueueError, TypeError):
    """Raised at enqueue time when an argument is not a native JSON value."""


class PayloadError(PyQueueError):
    """Raised when a payload read from Redis is not a valid job hash."""


class UnknownJobClass(PyQueueError):
    """Raised when a payload names a class that no registered job has."""


class RedisVersionError(PyQueueError):
    """Raised at start when the Redis server is older than 6.2."""


class Shutdown(BaseException):  # noqa: N818 - a control-flow signal, like KeyboardInterrupt
    """Raised inside a job thread when the process stops; never counted as a job failure."""
