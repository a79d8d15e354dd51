"""Static checks of render.yaml, docker/Dockerfile and docker/compose.yaml.

No Docker engine or Render account is available to the tests, so these
checks only read the files. The files must parse, and every command they
run must exist in this project and accept its arguments. Every path they
name must exist, and the settings that a deployment depends on must be set.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from app_jobs.settings import ENVIRONMENT as APP_ENVIRONMENT
from app_jobs.webhooks import HEALTH_PATH
from pyqueue import config

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
# Variables that the platform or the Python runtime reads, not the app.
PLATFORM_VARIABLES = {"PYTHON_VERSION"}


def read_yaml(relative: str) -> Any:
    return yaml.safe_load((ROOT / relative).read_text())


def known_variables() -> set[str]:
    app = {name for names in APP_ENVIRONMENT.values() for name in names}
    pyqueue = {config.env_name(field) for field in config.field_names()}
    return app | pyqueue | {"PYQUEUE_CONFIG"} | PLATFORM_VARIABLES


def check_command(argv: list[str], cwd: Path = ROOT) -> None:
    """Assert that ``argv`` is a console script of this project that accepts its arguments.

    The command runs with ``--help`` appended, so click resolves every
    subcommand and option without doing any work. Files named after
    ``-C``/``--config`` must exist, relative to ``cwd``.
    """
    assert argv[0] in SCRIPTS, f"{argv[0]!r} is not a console script in pyproject.toml"
    module_name, _, attribute = SCRIPTS[argv[0]].partition(":")
    entry_point = getattr(importlib.import_module(module_name), attribute)

    result = CliRunner().invoke(entry_point, [*argv[1:], "--help"], prog_name=argv[0])

    assert result.exit_code == 0, f"{' '.join(argv)} --help: {result.output}"
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("-C", "--config"):
            assert (cwd / value).is_file(), f"{' '.join(argv)}: {value} does not exist"


def check_pip_install(command: str) -> None:
    """Assert that ``pip install '.[extra]'`` names extras that pyproject.toml defines."""
    words = shlex.split(command)
    assert words[:2] == ["pip", "install"], command
    match = re.fullmatch(r"\.\[([\w,-]+)\]", words[2])
    assert match, f"{command!r} does not install the project with an extra"
    for extra in match.group(1).split(","):
        assert extra in EXTRAS, f"{command!r}: extra {extra!r} is not in pyproject.toml"


# -- render.yaml --------------------------------------------------------------


@pytest.fixture(scope="module")
def render() -> dict[str, Any]:
    data = read_yaml("render.yaml")
    assert isinstance(data, dict)
    return data


def render_service(render: dict[str, Any], service_type: str) -> dict[str, Any]:
    matches = [service for service in render["services"] if service["type"] == service_type]
    assert len(matches) == 1, f"expected one {service_type} service, found {len(matches)}"
    return matches[0]


def test_render_web_service(render: dict[str, Any]) -> None:
    web = render_service(render, "web")

    check_pip_install(web["buildCommand"])
    check_command(shlex.split(web["preDeployCommand"]))
    check_command(shlex.split(web["startCommand"]))
    assert shlex.split(web["startCommand"]) == ["app-jobs", "web"]
    assert shlex.split(web["preDeployCommand"]) == ["app-jobs", "migrate"]
    assert web["healthCheckPath"] == HEALTH_PATH
    values = {entry["key"]: entry.get("value") for entry in web["envVars"]}
    assert values["APP_JOBS_WEB_HOST"] == "0.0.0.0"


def test_render_worker_service(render: dict[str, Any]) -> None:
    worker = render_service(render, "worker")

    check_pip_install(worker["buildCommand"])
    check_command(shlex.split(worker["startCommand"]))
    assert shlex.split(worker["startCommand"]) == ["pyqueue", "run", "-C", "config/pyqueue.yml"]


def test_render_redis_never_evicts(render: dict[str, Any]) -> None:
    redis_service = render_service(render, "keyvalue")

    assert redis_service["maxmemoryPolicy"] == "noeviction"
    assert redis_service["ipAllowList"] == []


def test_render_environment_references(render: dict[str, Any]) -> None:
    """Every variable is one the app reads, and every reference names a resource in the file."""
    services = {(service["type"], service["name"]) for service in render["services"]}
    databases = {database["name"] for database in render["databases"]}
    known = known_variables()

    for service in render["services"]:
        for entry in service.get("envVars", []):
            assert entry["key"] in known, f"{service['name']}: unknown variable {entry['key']}"
            source = entry.get("fromService")
            if source is not None:
                assert (source["type"], source["name"]) in services, entry
                assert source["property"] == "connectionString", entry
            database = entry.get("fromDatabase")
            if database is not None:
                assert database["name"] in databases, entry
                assert database["property"] == "connectionString", entry

    for service_type in ("web", "worker"):
        keys = {entry["key"] for entry in render_service(render, service_type)["envVars"]}
        assert {"REDIS_URL", "DATABASE_URL", "SENDGRID_API_KEY"} <= keys, service_type


def test_worker_config_file_loads() -> None:
    """config/pyqueue.yml, which every deployment runs, loads and names what exists."""
    settings = config.load(ROOT / "config/pyqueue.yml", environ={})

    assert settings.require == ("app_jobs.jobs",)
    for module in settings.require:
        importlib.import_module(module)
    assert settings.schedule_file is not None
    schedule = read_yaml(settings.schedule_file)
    assert set(schedule) == {"email_sender_worker", "email_retry_scanner_job"}
    queues = {name for name, _ in settings.queues}
    for entry in schedule.values():
        assert entry["queue"] in queues, entry


# -- docker/ -----------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs, with continuation lines joined."""
    text = (ROOT / "docker/Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            name, _, arguments = stripped.partition(" ")
            instructions.append((name.upper(), arguments.strip()))
    return instructions


def test_dockerfile_paths_and_command() -> None:
    instructions = dockerfile_instructions()

    copies = [arguments.split() for name, arguments in instructions if name == "COPY"]
    assert copies
    for *sources, _destination in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    runs = [arguments for name, arguments in instructions if name == "RUN"]
    pip_commands = [part.strip() for run in runs for part in run.split("&&") if "pip" in part]
    assert pip_commands
    for command in pip_commands:
        check_pip_install(command)
    commands = [json.loads(arguments) for name, arguments in instructions if name == "CMD"]
    assert len(commands) == 1
    check_command(commands[0])
    # The command's -C file is read inside the image, so its folder must be copied in.
    copied = {source for *sources, _destination in copies for source in sources}
    assert "config" in copied


def test_dockerfile_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    names = [name for name, _ in instructions]

    users = [arguments for name, arguments in instructions if name == "USER"]
    assert users, "the Dockerfile has no USER instruction, so the container runs as root"
    assert users[-1] not in ("root", "0", "0:0")
    last_user = max(index for index, name in enumerate(names) if name == "USER")
    assert names.index("CMD") > last_user
    runs = " ".join(arguments for name, arguments in instructions if name == "RUN")
    assert f"useradd --create-home --uid 10001 {users[-1]}" in runs


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = read_yaml("docker/compose.yaml")
    assert isinstance(data, dict)
    return data


def test_compose_builds_and_commands(compose: dict[str, Any]) -> None:
    built = {name: s for name, s in compose["services"].items() if "build" in s}
    assert set(built) == {"migrate", "worker", "web"}

    for name, service in built.items():
        context = (ROOT / "docker" / service["build"]["context"]).resolve()
        assert context == ROOT, name
        assert (context / service["build"]["dockerfile"]).is_file(), name
        check_command(service["command"])
        for variable in service["environment"]:
            assert variable in known_variables(), f"{name}: unknown variable {variable}"
    assert built["migrate"]["command"] == ["app-jobs", "migrate"]
    assert built["worker"]["command"] == ["pyqueue", "run", "-C", "config/pyqueue.yml"]
    assert built["web"]["command"] == ["app-jobs", "web"]


def test_compose_startup_order(compose: dict[str, Any]) -> None:
    """Migrations wait for a healthy PostgreSQL; the worker and receiver wait for migrations."""
    services = compose["services"]

    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["redis"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "web"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert depends_on["redis"]["condition"] == "service_healthy", name
    assert "noeviction" in services["redis"]["command"]


def test_compose_web_port(compose: dict[str, Any]) -> None:
    """The receiver listens on every interface inside its container, on the published port."""
    web = compose["services"]["web"]

    assert web["environment"]["APP_JOBS_WEB_HOST"] == "0.0.0.0"
    published = [str(port).rsplit(":", 1)[-1] for port in web["ports"]]
    assert published == [web["environment"]["PORT"]]
