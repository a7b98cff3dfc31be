"""A fresh install gets what the suite was run against: the README's commands use constraints.txt,
`.ci/run` runs exactly the README's test command, and every dependency the package or its test
extra names is pinned there, so a new upstream release cannot change a green install unannounced."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_every_declared_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    pins = _pins()
    unpinned = sorted({_name(r) for r in declared} - pins.keys())
    assert not unpinned, f"add these to constraints.txt: {unpinned}"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = next(
        line for line in readme.splitlines() if line.startswith("python3 -m venv") and "pytest" in line
    )
    assert "-c constraints.txt" in command
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci
    assert any("-c constraints.txt" in line and "pointsman demo" in line for line in readme.splitlines())
