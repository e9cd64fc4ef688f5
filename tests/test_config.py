"""Config validation: defaults fill in, and each bad config is rejected with the key named."""

import copy
from pathlib import Path

import pytest
import yaml

from tina.config import ConfigError, load_config, validate_config

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
        if path.name == "schema.yaml":
            continue
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


def test_preflight_names_a_missing_dataset_root(tmp_path):
    from tina.preflight import check_resources

    config = validate_config(with_change("data.dataset", "cifar100"))
    config["data"]["root"] = str(tmp_path / "nowhere")
    config["tasks"].update(ood_unseen=[1, 5])
    with pytest.raises(FileNotFoundError, match="CIFAR-100"):
        check_resources(config)
