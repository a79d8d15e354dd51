"""`pyqueue run` flags: settings from flags, job module imports, exit codes."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from pyqueue.cli import main
from pyqueue.cli.common import EXIT_CONFIG, EXIT_IMPORT, EXIT_REDIS
from pyqueue.cli.run import import_job_module, load_settings
from pyqueue.job import lookup, unregister
from tests.fixtures.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Remove the log handler that `pyqueue run` installs on CliRunner's stream."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    level = root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", *args])
    return result.exit_code, result.output


def test_help_exits_zero() -> None:
    code, output = invoke("--help")
    assert code == 0
    for flag in ("--concurrency", "--queue", "--timeout", "--require", "--schedule", "--fetch"):
        assert flag in output


def test_flags_map_to_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pyqueue.yml"
    path.write_text("concurrency: 3\ntag: file\nproduction:\n  timeout: 9\n", encoding="utf-8")
    monkeypatch.setenv("PYQUEUE_TAG", "env")
    monkeypatch.setenv("PYQUEUE_CONCURRENCY", "4")

    settings = load_settings(
        str(path),
        "production",
        {
            "concurrency": "12",
            "queues": ("critical,3", "default"),
            "labels": ("blue", "green"),
            "require": (),
            "tag": None,
        },
    )

    assert settings.concurrency == 12
    assert settings.tag == "env"
    assert settings.timeout == 9.0
    assert settings.queues == (("critical", 3), ("default", 0))
    assert settings.labels == ("blue", "green")
    assert settings.environment == "production"


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["-c", "0"], "concurrency"),
        (["-q", "critical,-1"], "weight -1"),
        (["--log-format", "xml"], "log_format"),
        (["-t", "soon"], "timeout"),
        (["--fetch", "fast"], "setting fetch is 'fast'"),
    ],
)
def test_invalid_flag_exits_5(args: list[str], setting: str) -> None:
    code, output = invoke(*args)
    assert code == EXIT_CONFIG
    assert setting in output
    assert output.startswith("error: ")
    assert len(output.strip().splitlines()) == 1


def test_unknown_key_in_config_exits_5(tmp_path: Path) -> None:
    path = tmp_path / "pyqueue.yml"
    path.write_text("concurrency: 2\nthreads: 4\n", encoding="utf-8")
    code, output = invoke("-C", str(path))
    assert code == EXIT_CONFIG
    assert "threads" in output


def test_missing_module_exits_4() -> None:
    code, output = invoke("-r", "no_such_package.jobs", "--redis-url", "redis://127.0.0.1:1/0")
    assert code == EXIT_IMPORT
    assert "'no_such_package.jobs'" in output
    assert "ModuleNotFoundError" in output


def test_module_that_raises_exits_4(tmp_path: Path) -> None:
    broken = tmp_path / "broken_jobs.py"
    broken.write_text("raise RuntimeError('settings missing')\n", encoding="utf-8")
    code, output = invoke("-r", str(broken))
    assert code == EXIT_IMPORT
    assert "broken_jobs.py" in output
    assert "RuntimeError: settings missing" in output


def test_require_accepts_file_path(tmp_path: Path) -> None:
    module = tmp_path / "path_jobs.py"
    module.write_text(
        "from pyqueue import Job\n\n"
        "class PathJob(Job, name='WorkerSuite::PathJob'):\n"
        "    def perform(self):\n"
        "        pass\n",
        encoding="utf-8",
    )
    try:
        import_job_module(str(module))
        assert lookup("WorkerSuite::PathJob").__module__ == "path_jobs"
    finally:
        unregister("WorkerSuite::PathJob")
        sys.modules.pop("path_jobs", None)


def test_subprocess_reports_bad_module(r: redis.Redis, redis_url: str) -> None:
    """The installed command prints one error line and exits 4."""
    command = [str(Path(sys.executable).with_name("pyqueue")), "run", "-r", "tests.nope"]
    result = subprocess.run(
        command + ["--redis-url", redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == EXIT_IMPORT
    assert "cannot import job module 'tests.nope'" in result.stderr
    assert r.scard("processes") == 0


def test_unreachable_redis_exits_3() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    command = [str(Path(sys.executable).with_name("pyqueue")), "run", "--redis-url", url]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == EXIT_REDIS
    assert result.stderr.startswith("error: cannot reach Redis")
    assert "stopping" not in result.stdout
