"""Checks run when the workflow loads, before any job: missing resources fail fast.

Each check is cheap (file existence, a glance at a folder) and its error names what is missing
and how to provide it.
"""

from __future__ import annotations

from tina import data


def check_resources(config: dict) -> None:
    """Raise FileNotFoundError naming the first missing resource the config needs."""
    section = config["data"]
    data.check_resources(
        section["dataset"],
        root=section["root"],
        download=section["download"],
        wordnet_root=section["wordnet_root"],
    )
