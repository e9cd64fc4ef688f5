"""Config validation: defaults fill in, and each bad config is rejected with the key named;
the config dataclasses' defaults are the schema's (the defaults live in one place)."""

import ast
import copy
import dataclasses
import importlib
from pathlib import Path

import pytest
import yaml

from tina.config import SCHEMA_PATH, ConfigError, load_config, load_schema, validate_config

ROOT = Path(__file__).resolve().parents[1]


def default():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def with_change(path: str, value):
    config = default()
    *parents, leaf = path.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return config


def test_shipped_configs_validate_and_fill_defaults():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        config = load_config(path)
        assert config["run"] and config["tina"]["steps"] >= 1, path.name
    config = validate_config({})
    assert config["run"] == "default" and config["data"]["dataset"] == "openmoji"
    assert config["tasks"]["k"] == 10 and config["zoo"]["shards"] >= 1


def test_paper_configs_validate():
    for path in sorted((ROOT / "config" / "paper").glob("*.yaml")):
        assert load_config(path)["run"], path.name


BAD = [
    # (dotted key, value, text the message must contain)
    ("seed", "zero", "seed"),
    ("seed", -1, "seed"),
    ("run", "bad/name", "run"),
    ("colour", "blue", "unknown key"),
    ("data.dataset", "imagenet", "data.dataset"),
    ("data.image_size", 4, "data.image_size"),
    ("data.download", "yes", "data.download"),
    ("data.augment", "extreme", "data.augment"),
    ("data.train_per_class", 0, "data.train_per_class"),
    ("data.frobnicate", 1, "unknown key"),
    ("resources.train_tina.mem", 1, "unknown key"),
    ("resources.train_tina.mem_mb", 0, "resources.train_tina.mem_mb"),
    ("resources.train_tin", {}, "unknown key"),
    ("tasks.k", 1, "tasks.k"),
    ("tasks.k", "ten", "tasks.k"),
    ("tasks.unseen_fraction", 1.5, "tasks.unseen_fraction"),
    ("tasks.n_train", 0, "tasks.n_train"),
    ("tasks.ood_unseen", [20], "tasks.ood_unseen"),
    ("tasks.kway", [10], "tasks.kway"),
    ("tasks.grouped", 1, "tasks.grouped"),
    ("net.arch", "resnet152", "net.arch"),
    ("zoo.shards", 0, "zoo.shards"),
    ("zoo.steps", -5, "zoo.steps"),
    ("zoo.lr", 0, "zoo.lr"),
    ("tina.steps", -5, "tina.steps"),
    ("tina.schedule", "quadratic", "tina.schedule"),
    ("tina.prompt_dropout", 2.0, "tina.prompt_dropout"),
    ("encoder.name", "bert", "encoder.name"),
    ("generic.classes", "some", "generic.classes"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_config_is_rejected_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match="invalid config") as err:
        validate_config(with_change(key, value))
    assert message in str(err.value)


def test_k_larger_than_the_classes_of_the_dataset():
    config = with_change("data.dataset", "fashion_mnist")
    config["tasks"].update(k=12, kway=[2])
    with pytest.raises(ConfigError, match="larger than the number of seen classes"):
        validate_config(config)


def test_more_tasks_than_class_combinations():
    config = with_change("data.dataset", "fashion_mnist")
    config["tasks"].update(k=5, unseen_fraction=0.2, n_train=100, ood_unseen=[1, 2], kway=[2])
    with pytest.raises(ConfigError, match="class sets"):
        validate_config(config)


def test_fresh_tasks_need_the_functional_loss_and_split_over_devices():
    config = default()
    config["tina"].update(functional_tasks=16, functional_weight=0.0)
    with pytest.raises(ConfigError, match="functional_weight is 0"):
        validate_config(config)
    config["tina"].update(functional_weight=1.0, devices=3)
    with pytest.raises(ConfigError, match="does not split over tina.devices = 3"):
        validate_config(config)
    config["tina"].update(devices=4)
    validate_config(config)


def test_validation_does_not_change_a_valid_config_value():
    config = default()
    before = copy.deepcopy(config)
    validate_config(config)
    for key, value in before.items():
        assert config[key] == value or isinstance(value, dict)
    assert config["tasks"]["n_train"] == before["tasks"]["n_train"]


def test_preflight_checks_openmoji_class_budget():
    from tina.preflight import check_resources

    config = validate_config(default())
    check_resources(config)  # the embedded default has what it needs here
    config["data"]["max_classes"] = 12
    with pytest.raises(ConfigError, match="class sets|seen classes"):
        check_resources(config)


@pytest.mark.parametrize(
    ("dataset", "tasks", "message"),
    [
        ("openmoji", {"grouped": False}, "openmoji has no superclasses"),
        ("cifar100", {"grouped": True}, "exclude each other.*grouped: false"),
        ("cifar100", {"grouped": False, "k": 21}, "cifar100 has 20 superclasses"),
    ],
)
def test_superclass_tasks_need_a_data_set_with_superclasses(dataset, tasks, message):
    config = with_change("data.dataset", dataset)
    config["tasks"].update(tasks, superclasses=True, n_kway=0, n_test_ood=0)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)
    ok = with_change("data.dataset", "cifar100")
    ok["tasks"].update(superclasses=True, grouped=False)
    assert validate_config(ok)["tasks"]["superclasses"] is True


def test_preflight_names_a_missing_dataset_root(tmp_path):
    from tina.preflight import check_resources

    config = validate_config(with_change("data.dataset", "cifar100"))
    config["data"]["root"] = str(tmp_path / "nowhere")
    config["tasks"].update(ood_unseen=[1, 5])
    with pytest.raises(FileNotFoundError, match="CIFAR-100"):
        check_resources(config)


# --------------------------------------------------------------------------- one set of defaults
# Each config dataclass and the schema section it reads (its ``from_config(section)``).
CONFIG_CLASSES = {
    "TinaConfig": ("tina.sampling", "tina"),
    "EvalConfig": ("tina.evaluate.context", "evaluate"),
    "TaskConfig": ("tina.tasks", "tasks"),
    "ScalingConfig": ("tina.scaling", "scaling"),
}
# Module constants that repeat a schema default: (module, name, key) -> schema section path.
CONSTANTS = [
    ("tina.generate", "DEFAULT_IMAGE_SIZE", ("data", "image_size")),
    ("tina.wordnet", "DEFAULT_ROOT", ("data", "wordnet_root")),
]


def schema_section(name: str) -> dict:
    return load_schema()["properties"][name]["properties"]


def as_tuples(value):
    """Schema lists compare with dataclass tuples."""
    return tuple(as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def test_the_schema_ships_in_the_package():
    assert SCHEMA_PATH.is_file() and SCHEMA_PATH.parent.name == "tina"
    assert not (ROOT / "config" / "schema.yaml").exists()


def test_every_config_dataclass_is_checked():
    """Every ``*Config`` dataclass of the package is in CONFIG_CLASSES (a new one joins it)."""
    found = set()
    for path in sorted((ROOT / "src" / "tina").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
                decorators = [ast.unparse(d) for d in node.decorator_list]
                if any(d.startswith(("dataclass", "dataclasses.dataclass")) for d in decorators):
                    module = path.relative_to(ROOT / "src").with_suffix("").parts
                    found.add((node.name, ".".join(p for p in module if p != "__init__")))
    assert found == {(name, module) for name, (module, _) in CONFIG_CLASSES.items()}


@pytest.mark.parametrize("name", list(CONFIG_CLASSES))
def test_dataclass_defaults_are_the_schema_defaults(name):
    module, section = CONFIG_CLASSES[name]
    cls = getattr(importlib.import_module(module), name)
    keys = schema_section(section)
    for field in dataclasses.fields(cls):
        assert field.name in keys, f"{name}.{field.name} is not a key of the {section} section"
        assert "default" in keys[field.name], f"{section}.{field.name} has no schema default"
        if field.default is dataclasses.MISSING:
            continue
        expected = as_tuples(keys[field.name]["default"])
        assert field.default == expected and type(field.default) is type(expected), (
            f"{name}.{field.name} defaults to {field.default!r}, "
            f"the schema's {section}.{field.name} to {expected!r}"
        )


@pytest.mark.parametrize("name", list(CONFIG_CLASSES))
def test_the_default_config_gives_the_dataclass_defaults(name):
    """``from_config`` of the schema-filled default section equals the dataclass's defaults."""
    module, section = CONFIG_CLASSES[name]
    cls = getattr(importlib.import_module(module), name)
    built = cls.from_config(validate_config({})[section])
    for field in dataclasses.fields(cls):
        value = getattr(built, field.name)
        if field.default is not dataclasses.MISSING:
            assert value == field.default, f"{name}.{field.name}"
        assert as_tuples(value) == value, f"{name}.{field.name}: a list where a tuple belongs"


@pytest.mark.parametrize(("module", "name", "key"), CONSTANTS, ids=[c[1] for c in CONSTANTS])
def test_module_constants_are_the_schema_defaults(module, name, key):
    section, field = key
    value = getattr(importlib.import_module(module), name)
    assert value == schema_section(section)[field]["default"], f"{module}.{name}"


def test_the_generator_s_default_encoder_is_the_schema_s():
    from tina.generate import DEFAULT_ENCODER

    keys = schema_section("encoder")
    for name, value in DEFAULT_ENCODER.items():
        assert value == keys[name]["default"], f"DEFAULT_ENCODER[{name!r}]"
