"""The docs stay true to the code: every setting documented, every link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app_jobs.settings import ENVIRONMENT as APP_ENVIRONMENT
from pyqueue import config
from pyqueue.cli.run import run

ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION = ROOT / "docs" / "configuration.md"
# A table row of the worker settings: | `name` | `ENV` | flags | default | meaning |
SETTING_ROW = re.compile(r"^\| `([a-z_]+)` \| `([A-Z_]+)` \| ([^|]+) \|", re.MULTILINE)
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def documented_settings() -> dict[str, tuple[str, str]]:
    """Return setting name -> (environment variable, flags cell) from configuration.md."""
    text = CONFIGURATION.read_text()
    return {name: (env, flags.strip()) for name, env, flags in SETTING_ROW.findall(text)}


def run_flags() -> dict[str, str]:
    """Return setting name -> the flags of `pyqueue run` that set it, as the docs write them."""
    flags = {}
    for param in run.params:
        if param.name in config.field_names():
            flags[param.name] = ", ".join(f"`{opt}`" for opt in param.opts)
    return flags


@pytest.mark.parametrize("field", config.field_names())
def test_setting_documented(field: str) -> None:
    documented = documented_settings()

    assert field in documented, f"docs/configuration.md has no row for setting {field!r}"
    env, flags = documented[field]
    assert env == config.env_name(field)
    assert flags == run_flags().get(field, "none"), f"flags of {field!r}"


def test_documented_settings_exist() -> None:
    unknown = set(documented_settings()) - set(config.field_names())

    assert unknown == set()


def test_app_variables_documented() -> None:
    text = CONFIGURATION.read_text()

    for field, variables in APP_ENVIRONMENT.items():
        for variable in variables:
            assert f"`{variable}`" in text, f"{variable} ({field}) is not in configuration.md"


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_relative_links_resolve(page: Path) -> None:
    for target, _anchor in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_readme_names_first_and_test_commands() -> None:
    readme = (ROOT / "README.md").read_text()

    assert "    bin/demo\n" in readme
    assert "    bin/test\n" in readme
    assert (ROOT / "bin" / "demo").stat().st_mode & 0o111
