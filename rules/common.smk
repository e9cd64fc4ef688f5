# Helpers shared by every stage: config validation, paths and target lists.
import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))
# Jobs (local, conda or cluster) import the package from this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (os.path.join(workflow.basedir, "src"), os.environ.get("PYTHONPATH")) if p
)

from tina.config import ConfigError, validate_config
from tina.preflight import check_resources

try:
    validate_config(config)
    check_resources(config)
except (ConfigError, FileNotFoundError) as err:
    raise WorkflowError(str(err)) from None

RESULTS = f"results/{config['run']}"
ENV = "../envs/tina.yaml"
# Text embeddings are cached by content across runs (a text is never encoded twice).
EMBEDDING_CACHE = "results/cache/embeddings"


def zoo_shards():
    """Parameter files of every p-model shard (the shard count comes from the config)."""
    return expand(f"{RESULTS}/zoo/shard-{{shard}}.safetensors", shard=range(config["zoo"]["shards"]))


def all_targets():
    """Every final output of the stages that exist."""
    return [
        f"{RESULTS}/data/dataset.safetensors",
        f"{RESULTS}/tasks.csv",
        *zoo_shards(),
        f"{RESULTS}/prompts/image_projection.safetensors",
        f"{RESULTS}/tina/model.safetensors",
    ]
