"""Shared test setup: one torch thread per test process (2-core CI machines run tests fast that
way), the package importable from the checkout, and one uninterrupted run of the tiny workflow
shared by the workflow tests."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def pytest_collection_modifyitems(config, items):
    """Leave out the ``paper_shape`` tests (15-30 min and ~23 GiB each) unless ``-m`` names them."""
    if "paper_shape" in (config.option.markexpr or ""):
        return
    left_out = [item for item in items if "paper_shape" in item.keywords]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if "paper_shape" not in item.keywords]


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A copy of the repository where `snakemake all` ran config/test.yaml to the end, once per
    test session; results under ``results/test``, Snakemake's output in ``snakemake.out``."""
    from workflow import copy_repo, run_snakemake, tail, tiny_args

    repo = copy_repo(tmp_path_factory.mktemp("tiny_run"))
    code, output = run_snakemake(repo, *tiny_args())
    if code != 0:
        pytest.fail(f"the tiny workflow failed (exit {code}):\n{tail(output)}", pytrace=False)
    return repo
