"""The conda route cannot run here, so check that its env files agree with pyproject.toml."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(requirements):
    """name -> version for 'name==version' strings (extras dropped from the name)."""
    out = {}
    for req in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]+\])?==([^\s;]+)", req.strip())
        assert match, f"not an exact pin: {req!r}"
        out[match.group(1).lower()] = match.group(3)
    return out


def project_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return pins(project["dependencies"])


def env_pins(path):
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return pins(pip), env


def test_every_env_pins_the_project_versions():
    expected = project_pins()
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert envs
    for path in envs:
        got, env = env_pins(path)
        assert "python=3.11" in env["dependencies"], path.name
        for name, version in got.items():
            assert expected.get(name) == version, f"{path.name}: {name}=={version}"
    got, _ = env_pins(ROOT / "envs" / "tina.yaml")
    assert got == expected


def test_torch_pins_match_the_machine_wheels():
    expected = project_pins()
    assert expected["torch"] == "2.14.1" and expected["torchvision"] == "0.29.1"


def test_rules_name_existing_env_files():
    rules = "\n".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    names = set(re.findall(r'"\.\./(envs/[^"]+\.yaml)"', rules))
    assert names, "no conda env named in rules"
    for name in names:
        assert (ROOT / name).is_file(), name
    # every rule declares an env: count rule blocks against conda directives
    assert rules.count("\nrule ") <= rules.count("conda:")
