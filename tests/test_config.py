"""Settings: precedence, the YAML file, queues and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyqueue import config
from pyqueue.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pyqueue.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_match_sidekiq_7() -> None:
    settings = config.load(environ={})
    assert settings.concurrency == 5
    assert settings.queues == (("default", 0),)
    assert settings.timeout == 25.0
    assert settings.heartbeat_interval == 10.0
    assert settings.legacy_workers_key is True
    # Sidekiq's open-source fetch is basic; pyqueue defaults to reliable fetch,
    # which recovers the jobs of a killed process.
    assert settings.fetch == "reliable"
    assert settings.max_recoveries == 3
    assert settings.strict
    assert settings.pool_size == 10


def test_flag_beats_environment_beats_file(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency: 7\ntimeout: 8\ntag: from-file\n")
    environ = {"PYQUEUE_CONCURRENCY": "11", "PYQUEUE_TIMEOUT": "12"}

    settings = config.load(path, {"concurrency": "20"}, environ)

    assert settings.concurrency == 20
    assert settings.timeout == 12.0
    assert settings.tag == "from-file"
    assert settings.labels == ()


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency: 3\n")
    settings = config.load(environ={"PYQUEUE_CONFIG": str(path)})
    assert settings.concurrency == 3


def test_redis_url_from_redis_url_variable() -> None:
    settings = config.load(environ={"REDIS_URL": "redis://127.0.0.1:6390/2"})
    assert settings.redis_url == "redis://127.0.0.1:6390/2"


def test_yaml_queues_names_and_pairs(tmp_path: Path) -> None:
    names = write(tmp_path, "queues:\n  - critical\n  - default\n")
    assert config.load(names, environ={}).queues == (("critical", 0), ("default", 0))

    pairs = write(tmp_path, "queues:\n  - [critical, 3]\n  - [default, 1]\n")
    settings = config.load(pairs, environ={})
    assert settings.queues == (("critical", 3), ("default", 1))
    assert not settings.strict
    assert settings.queue_names == ["critical", "default"]


def test_sidekiq_style_symbol_keys(tmp_path: Path) -> None:
    path = write(tmp_path, ":concurrency: 4\n:queues:\n  - [mail, 2]\n")
    settings = config.load(path, environ={})
    assert settings.concurrency == 4
    assert settings.queues == (("mail", 2),)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("critical,3 default,1", (("critical", 3), ("default", 1))),
        (["critical,3", "default"], (("critical", 3), ("default", 0))),
        ([["low", 0]], (("low", 0),)),
    ],
)
def test_queue_spellings(value: Any, expected: tuple[tuple[str, int], ...]) -> None:
    assert config.parse_queues(value) == expected


def test_environment_section_overrides_top_level(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "concurrency: 5\ntag: base\nproduction:\n  concurrency: 25\ndevelopment:\n  tag: dev\n",
    )

    production = config.load(path, {"environment": "production"}, {})
    assert production.concurrency == 25
    assert production.tag == "base"

    development = config.load(path, environ={})
    assert development.concurrency == 5
    assert development.tag == "dev"

    from_environment = config.load(path, environ={"PYQUEUE_ENVIRONMENT": "production"})
    assert from_environment.concurrency == 25


def test_environment_flag_beats_file_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "environment: production\nproduction:\n  concurrency: 25\n")
    assert config.load(path, environ={}).concurrency == 25
    assert config.load(path, {"environment": "staging"}, {}).concurrency == 5
    assert config.load(path, environ={"PYQUEUE_ENVIRONMENT": "test"}).concurrency == 5


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "many"}, "concurrency"),
        ({"timeout": -1}, "timeout"),
        ({"queues": [["critical", -1]]}, "weight"),
        ({"queues": "critical,abc"}, "weight"),
        ({"queues": []}, "queues"),
        ({"log_format": "xml"}, "log_format"),
        ({"log_level": "loud"}, "log_level"),
        ({"fetch": "fast"}, "fetch"),
        ({"max_recoveries": -1}, "max_recoveries"),
        ({"legacy_workers_key": "maybe"}, "legacy_workers_key"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"concurency": 5}, "concurency"),
    ],
)
def test_invalid_setting_is_named(values: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as error:
        config.build(values)
    assert setting in str(error.value)


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency: 5\nworkers: 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'workers'"):
        config.load(path, environ={})


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.yml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(write(tmp_path, "queues: [unclosed\n"), environ={})
    with pytest.raises(ConfigError, match="mapping"):
        config.load(write(tmp_path, "- just\n- a list\n"), environ={})


def test_environment_strings_are_converted() -> None:
    environ = {
        "PYQUEUE_LEGACY_WORKERS_KEY": "false",
        "PYQUEUE_HEARTBEAT_INTERVAL": "2.5",
        "PYQUEUE_LABELS": "blue, green",
        "PYQUEUE_QUEUES": "critical,2 default",
        "PYQUEUE_METRICS_PORT": "9394",
    }
    settings = config.load(environ=environ)
    assert settings.legacy_workers_key is False
    assert settings.heartbeat_interval == 2.5
    assert settings.labels == ("blue", "green")
    assert settings.queues == (("critical", 2), ("default", 0))
    assert settings.metrics_port == 9394
