"""The README is the manual: its test command is what CI runs, and its links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # no code blocks
    return {slug(h) for h in re.findall(r"^#+\s+(.+)$", text, re.MULTILINE)}


def test_ci_runs_the_readme_test_command():
    """.ci/run's command (setup, lint, tests) appears verbatim in the README's commands."""
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command.startswith("bash setup.sh --test && ")
    assert command.endswith(".venv/bin/python -m pytest")
    for check in ("ruff check", "ruff format --check", "snakefmt --check", "snakemake --lint"):
        assert check in command, check
    readme = (ROOT / "README.md").read_text()
    assert f"\n{command}\n" in readme


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_lead_to_files_and_headings(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            linked.suffix == ".md" and anchor and anchor not in anchors(linked)
        ):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_the_readme_keeps_the_openmoji_credit_and_links_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert "All emojis designed by OpenMoji" in readme and "CC BY-SA 4.0" in readme
    assert "(docs/results.md)" in readme and "(docs/paper.md)" in readme
