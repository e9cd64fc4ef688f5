"""A non-editable install ships the config schema: the wheel holds tina/schema.yaml, and
``tina.config`` imported from the installed copy (not the checkout) finds and uses it.

The wheel is built offline from a copy of the package's sources, with the setuptools of this
environment (no build isolation, no index).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import sys
from pathlib import Path

import tina.config

installed = Path(sys.argv[1]).resolve()
assert Path(tina.config.__file__).resolve().is_relative_to(installed), tina.config.__file__
assert Path(tina.config.SCHEMA_PATH).resolve() == installed / "tina" / "schema.yaml"
schema = tina.config.load_schema()
assert schema["properties"]["tina"]["type"] == "object", sorted(schema)
config = tina.config.validate_config({})
print(config["run"], config["tasks"]["k"])
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the project, built from a copy of pyproject.toml, README.md and src/tina."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src" / "tina",
        source / "src" / "tina",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--quiet", "--wheel-dir", str(out), str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("tina-*.whl")
    return wheel


def test_the_wheel_ships_the_schema(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "tina/schema.yaml" in names
    assert "tina/config.py" in names
    shipped = zipfile.ZipFile(wheel).read("tina/schema.yaml")
    assert shipped == (ROOT / "src" / "tina" / "schema.yaml").read_bytes()


def test_the_installed_package_loads_its_schema(wheel, tmp_path):
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # what installing a pure-Python wheel lays out
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(target)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(target)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["default", "10"]
