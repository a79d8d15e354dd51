"""pyqueue: background jobs for Python on Sidekiq's Redis layout.

A job pushed by pyqueue runs on Ruby Sidekiq and the other way round, and
Sidekiq's Web UI shows pyqueue's processes, queues, retries and cron jobs.
"""

from __future__ import annotations

from pyqueue.client import Client, configure_client, default_client
from pyqueue.errors import (
    ArgumentError,
    ConfigError,
    JobDefinitionError,
    PayloadError,
    PyQueueError,
    RedisVersionError,
    UnknownJobClass,
)
from pyqueue.job import Job, JobSetter, foreign, job
from pyqueue.middleware import ClientChain, ServerChain

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "Client",
    "ClientChain",
    "ConfigError",
    "Job",
    "JobDefinitionError",
    "JobSetter",
    "PayloadError",
    "PyQueueError",
    "RedisVersionError",
    "ServerChain",
    "UnknownJobClass",
    "__version__",
    "configure_client",
    "default_client",
    "foreign",
    "job",
]
