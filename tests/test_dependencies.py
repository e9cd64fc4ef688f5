"""Every third-party package that the code imports is declared in pyproject.toml.

The imports are read with ``ast`` (function-local ones too, e.g. a lazy ``import transformers``)
from the package, the rule scripts, the workflow files and the tests; each import name is mapped
to its distribution through the installed metadata (``yaml`` -> PyYAML, ``PIL`` -> pillow).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"tina"}
# The workflow's Python lines that import (Snakefile and rules are not plain Python).
WORKFLOW_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.MULTILINE)


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them (case, '-', '_' and '.' folded)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """'snakemake[reports]==9.27.1' -> 'snakemake'."""
    return canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def declared(extra: str | None = None) -> set[str]:
    """Distributions that pyproject.toml declares (the runtime ones, plus an extra's)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    if extra:
        requirements += project["optional-dependencies"][extra]
    return {requirement_name(r) for r in requirements}


def python_imports(path: Path) -> set[str]:
    """Top-level module names of every absolute import in a Python file, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def workflow_imports(path: Path) -> set[str]:
    return {(a or b).split(".")[0] for a, b in WORKFLOW_IMPORT.findall(path.read_text())}


def third_party(names: set[str], local: set[str] = frozenset()) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names | FIRST_PARTY | set(local)}


def undeclared(imports: dict[str, set[str]], allowed: set[str]) -> list[str]:
    """'module (distribution) in files' for each import whose distribution is not declared."""
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module, files in sorted(imports.items()):
        owners = {canonical(d) for d in distributions.get(module, [])}
        if not owners & allowed:
            where = ", ".join(sorted(files)[:3])
            missing.append(f"{module} ({', '.join(sorted(owners)) or 'not installed'}) in {where}")
    return missing


def collect(paths, reader, local: set[str] = frozenset()) -> dict[str, set[str]]:
    imports: dict[str, set[str]] = {}
    for path in paths:
        for module in third_party(reader(path), local):
            imports.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return imports


def code_files() -> list[Path]:
    return sorted((ROOT / "src" / "tina").rglob("*.py")) + sorted(
        (ROOT / "src" / "scripts").rglob("*.py")
    )


def test_the_walk_sees_known_imports():
    """The walk finds a top-level import and a function-local one (not just the file heads)."""
    imports = collect(code_files(), python_imports)
    assert {"torch", "yaml", "transformers"} <= set(imports)
    assert not {"os", "json", "tina"} & set(imports)


def test_every_imported_package_is_a_declared_dependency():
    imports = collect(code_files(), python_imports)
    workflow = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
    for module, files in collect(workflow, workflow_imports).items():
        imports.setdefault(module, set()).update(files)
    missing = undeclared(imports, declared())
    assert not missing, "imported but not in pyproject's dependencies: " + "; ".join(missing)


def test_every_package_the_tests_import_is_declared_with_the_test_extra():
    tests = sorted((ROOT / "tests").glob("*.py"))
    local = {path.stem for path in tests}  # helper modules of the tests (shapes, workflow, ...)
    missing = undeclared(collect(tests, python_imports, local), declared("test"))
    assert not missing, "imported by tests but not declared: " + "; ".join(missing)


@pytest.mark.parametrize("extra", [None, "test"])
def test_installed_versions_are_the_pinned_ones(extra):
    """The environment the tests run in is the one pyproject.toml pins (setup.sh makes it)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["optional-dependencies"][extra] if extra else project["dependencies"]
    wrong = []
    for requirement in requirements:
        name, version = requirement_name(requirement), requirement.split("==")[1].strip()
        installed = importlib.metadata.version(name).split("+")[0]  # drop a local tag (+cpu)
        if installed != version:
            wrong.append(f"{name}: pinned {version}, installed {installed}")
    assert not wrong, "; ".join(wrong)
