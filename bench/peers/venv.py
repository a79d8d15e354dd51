"""The separate virtual environment of the Python peers: .bench-venv at the repository root.

The peers stay out of pyqueue's own environment so that their dependencies
cannot change what pyqueue runs with.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".bench-venv"
PYTHON = VENV / "bin" / "python"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
_STAMP = VENV / ".installed-requirements"


def ensure(echo: Callable[[str], None]) -> Path:
    """Create .bench-venv and pip-install the pinned peers unless they are there; return its python.

    Raises SystemExit with pip's output when the install fails.
    """
    pinned = REQUIREMENTS.read_text()
    if PYTHON.exists() and _STAMP.exists() and _STAMP.read_text() == pinned:
        return PYTHON
    if not PYTHON.exists():
        echo(f"creating {VENV}")
        _run([sys.executable, "-m", "venv", "--clear", str(VENV)])
    echo("installing Dramatiq, Huey and Celery into .bench-venv from PyPI")
    _run([str(PYTHON), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)])
    _STAMP.write_text(pinned)
    return PYTHON


def version(package: str) -> str:
    """Return the installed version of a package in .bench-venv, or '?'."""
    result = subprocess.run(
        [str(PYTHON), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "?"


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(
            f"command failed with exit code {result.returncode}: {' '.join(command)}\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
