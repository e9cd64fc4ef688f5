"""The conda route cannot run here, so check that its env files agree with pyproject.toml: the
pins come from pyproject's dependencies, never from a literal in this file."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))


def pins(requirements):
    """name -> version for 'name==version' strings (extras dropped, names PEP 503-folded)."""
    out = {}
    for req in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]+\])?==([^\s;]+)", req.strip())
        assert match, f"not an exact pin: {req!r}"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        assert name not in out, f"pinned twice: {name}"
        out[name] = match.group(3)
    return out


def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def project_pins():
    return pins(project()["dependencies"])


def env_pins(path):
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return pins(pip), env


def python_version():
    """'3.11' from requires-python '>=3.11'."""
    return re.fullmatch(r">=\s*(\d+\.\d+)", project()["requires-python"]).group(1)


def test_the_project_pins_every_dependency_exactly():
    assert project_pins()
    for extra in project()["optional-dependencies"].values():
        assert pins(extra)


@pytest.mark.parametrize("path", ENVS, ids=[p.name for p in ENVS])
def test_every_env_pins_the_project_versions(path):
    expected = project_pins()
    got, env = env_pins(path)
    assert f"python={python_version()}" in env["dependencies"], path.name
    wrong = {name: v for name, v in got.items() if expected.get(name) != v}
    assert not wrong, f"{path.name} pins differ from pyproject.toml: {wrong}"


def test_the_workflow_env_declares_every_project_dependency():
    """envs/tina.yaml is the conda user's whole environment: the same packages, the same pins."""
    got, _ = env_pins(ROOT / "envs" / "tina.yaml")
    expected = project_pins()
    assert got == expected, (
        f"missing from envs/tina.yaml: {sorted(set(expected) - set(got))}; "
        f"not in pyproject.toml: {sorted(set(got) - set(expected))}"
    )


def test_rules_name_existing_env_files():
    rules = "\n".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    names = set(re.findall(r'"\.\./(envs/[^"]+\.yaml)"', rules))
    assert names, "no conda env named in rules"
    for name in names:
        assert (ROOT / name).is_file(), name
    # every rule declares an env: count rule blocks against conda directives
    assert rules.count("\nrule ") <= rules.count("conda:")
