"""Configuration: JSON-schema validation with defaults, plus the checks a schema cannot express.

``load_config`` is what the Snakefile and the command line use: a wrong key, type or value
raises :class:`ConfigError` naming the key, before any job runs.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# The schema ships inside the package (package data), so an installed `tina` finds it too.
SCHEMA_PATH = Path(__file__).resolve().with_name("schema.yaml")

# Classes of the data sets whose size is fixed (openmoji depends on the installed glyphs).
KNOWN_CLASS_COUNTS = {
    "fashion_mnist": 10,
    "cifar100": 100,
    "caltech101": 101,
    "tiny_imagenet": 200,
    "medmnist_npz": 11,
}
# Superclasses of the data sets that have them (CIFAR-100's coarse labels).
SUPERCLASS_COUNTS = {"cifar100": 20}


class ConfigError(ValueError):
    """An invalid configuration; the message names the key."""


def _with_defaults(validator_class):
    """A validator that fills in schema defaults while it validates (objects first)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _key(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"{_key(error)}: unknown key(s) {extra}; allowed keys: {allowed}"
    if error.validator == "enum":
        return f"{_key(error)}: {error.instance!r} is not one of {error.validator_value}"
    return f"{_key(error)}: {error.message}"


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Validate ``config`` in place (defaults filled in) and return it."""
    schema = schema or load_schema()
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid config: " + "; ".join(_describe(e) for e in errors))
    check_semantics(config)
    return config


def check_semantics(config: dict) -> None:
    """Checks across keys that a JSON schema cannot express."""
    data, tasks = config["data"], config["tasks"]
    k = tasks["k"]
    for name in ("ood_unseen", "kway"):
        too_big = [v for v in tasks[name] if v > k or (name == "kway" and v == k)]
        if too_big:
            raise ConfigError(
                f"invalid config: tasks.{name}: {too_big} must be "
                + ("at most tasks.k" if name == "ood_unseen" else "smaller than tasks.k")
                + f" ({k})"
            )
    tina = config["tina"]
    if tina["functional_tasks"] > 0 and tina["functional_weight"] == 0:
        raise ConfigError(
            "invalid config: tina.functional_tasks = "
            f"{tina['functional_tasks']} trains by the functional loss alone, but "
            "tina.functional_weight is 0; give it a weight (e.g. 1.0) or set functional_tasks: 0"
        )
    if not any(rate > 0 for rate in tina["prompt_kinds"].values()):
        raise ConfigError(
            "invalid config: tina.prompt_kinds: every rate is 0; give at least one prompt kind "
            "(names, descriptions, images, unknown) a positive rate"
        )
    if tina["devices"] > 1 and tina["functional_tasks"] % tina["devices"]:
        raise ConfigError(
            f"invalid config: tina.functional_tasks = {tina['functional_tasks']} does not split "
            f"over tina.devices = {tina['devices']}: make it a multiple of it"
        )
    if tasks["superclasses"]:
        check_superclasses(data["dataset"], tasks)
    n_classes = KNOWN_CLASS_COUNTS.get(data["dataset"])
    if data["dataset"] == "medmnist_npz" and data.get("class_names"):
        n_classes = len(data["class_names"])
    if data.get("max_classes"):
        n_classes = min(n_classes or data["max_classes"], data["max_classes"])
    if n_classes is not None:
        check_class_budget(tasks, n_classes)


def check_superclasses(dataset: str, tasks: dict) -> None:
    """Tasks drawn one class per superclass need a data set with at least k superclasses."""
    if dataset not in SUPERCLASS_COUNTS:
        raise ConfigError(
            f"invalid config: tasks.superclasses: {dataset} has no superclasses (only "
            f"{', '.join(SUPERCLASS_COUNTS)} has); set tasks.superclasses: false"
        )
    if tasks["grouped"]:
        raise ConfigError(
            "invalid config: tasks.superclasses and tasks.grouped exclude each other (a task "
            "from one group, or one class from each of k superclasses): set tasks.grouped: false"
        )
    if tasks["k"] > SUPERCLASS_COUNTS[dataset]:
        raise ConfigError(
            f"invalid config: tasks.k = {tasks['k']} classes from different superclasses, but "
            f"{dataset} has {SUPERCLASS_COUNTS[dataset]} superclasses"
        )


def check_class_budget(tasks: dict, n_classes: int) -> None:
    """Enough classes for k-way tasks, and enough class combinations for the tasks asked for."""
    k = tasks["k"]
    n_unseen = int(round(tasks["unseen_fraction"] * n_classes))
    n_seen = n_classes - n_unseen
    if k > n_seen:
        raise ConfigError(
            f"invalid config: tasks.k = {k} is larger than the number of seen classes ({n_seen} of "
            f"{n_classes} classes, tasks.unseen_fraction = {tasks['unseen_fraction']})"
        )
    if tasks["n_test_ood"] > 0 and max(tasks["ood_unseen"], default=0) > n_unseen:
        raise ConfigError(
            f"invalid config: tasks.ood_unseen asks for {max(tasks['ood_unseen'])} unseen classes "
            f"per task but only {n_unseen} classes are unseen; raise tasks.unseen_fraction"
        )
    needed = tasks["n_train"] + tasks["n_val"] + tasks["n_test_id"]
    if needed > math.comb(n_seen, k):
        raise ConfigError(
            f"invalid config: tasks.n_train + n_val + n_test_id = {needed} distinct {k}-way tasks, "
            f"but {n_seen} seen classes give only {math.comb(n_seen, k)} class sets"
        )


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict:
    """Read a YAML config, apply ``overrides`` (top-level keys), validate, fill defaults."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"invalid config: {path} does not hold a mapping")
    config.update(overrides or {})
    return validate_config(config)


def from_section(cls, section: dict):
    """A config dataclass ``cls`` from a config section: known keys only, lists as tuples."""
    from dataclasses import fields

    values = {f.name: section[f.name] for f in fields(cls) if f.name in section}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
