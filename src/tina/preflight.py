"""Checks run when the workflow loads, before any job: missing resources fail fast.

Each check is cheap (file existence, a glance at a folder, a class count) and its error names
what is missing and how to provide it.
"""

from __future__ import annotations

from tina import data
from tina.config import check_class_budget
from tina.encoders import check_encoder


def check_resources(config: dict) -> None:
    """Raise FileNotFoundError naming the first missing resource the config needs, or
    ConfigError when the data set has too few classes for the configured tasks."""
    section = config["data"]
    data.check_resources(
        section["dataset"],
        root=section["root"],
        download=section["download"],
        wordnet_root=section["wordnet_root"],
    )
    if section["dataset"] == "openmoji":  # its class count depends on the installed glyphs
        n_classes = len(data.openmoji_classes(section["wordnet_root"]))
        if section["max_classes"]:
            n_classes = min(n_classes, section["max_classes"])
        check_class_budget(config["tasks"], n_classes)
    encoder = config["encoder"]
    check_encoder(encoder["name"], path=encoder["path"], allow_download=encoder["allow_download"])
