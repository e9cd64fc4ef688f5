"""Data-parallel Tina training (tina.distributed) and device handling (tina.device).

The main test trains a tiny Tina twice on a synthetic zoo, once in this process and once on two
gloo processes on the CPU with the same global batch, and requires the same weights and loss
history up to the float rounding of the gradient sums.
"""

from __future__ import annotations

import contextlib
import copy
import socket

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from tina import distributed
from tina.device import MixedPrecision, check_precision, pick_device
from tina.distributed import Distributed, process_count
from tina.grounding import build_grounding
from tina.io import load_tensors, save_tensors, write_csv
from tina.nets import NetSpec, init_params
from tina.sampling import TinaConfig
from tina.tasks import TaskDrawer, class_ids
from tina.train import _draw_batch, train_tina
from tina.train_data import TrainData

N_CLASSES, K, N_ZOO, WORLD = 8, 3, 24, 2
CONFIG = TinaConfig(
    width=16, depth=1, heads=2, chunk_size=128, steps=20, batch_size=8, warmup=4,
    eval_every=5, eval_sampler_steps=2, timesteps=50, functional_weight=1.0, functional_images=4,
    functional_tasks=4, functional_augment="color",
)  # fmt: skip
TOLERANCE = 1e-5  # max |weight difference| allowed between 1 and 2 processes


def synthetic_zoo(seed: int = 0) -> TrainData:
    """The data of train_tina for a tiny random zoo: ``N_ZOO`` 3-way p-models of 8 classes."""
    g = torch.Generator().manual_seed(seed)
    spec = NetSpec("cnn5k", K)
    generic = init_params(spec.with_classes(N_CLASSES, head_only=False), g)
    classes = torch.stack([torch.randperm(N_CLASSES, generator=g)[:K] for _ in range(N_ZOO)])
    rows = generic[spec.with_classes(N_CLASSES).head_rows()]
    body = generic[: spec.body_size]
    params = torch.cat([body.expand(N_ZOO, -1), rows[classes].reshape(N_ZOO, -1)], dim=1)
    params = params + 0.05 * torch.randn(params.shape, generator=g)
    images = torch.randint(0, 256, (4 * N_CLASSES, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.arange(N_CLASSES).repeat(4)
    val = pd.DataFrame({"task_id": [0, 1], "class_ids": ["0 1 2", "3 4 5"]})
    names = torch.nn.functional.normalize(torch.randn(N_CLASSES, 12, generator=g), dim=1)
    known = torch.ones(N_CLASSES, dtype=torch.bool)
    spec_all = spec.with_classes(N_CLASSES, head_only=False)
    grounding, features = build_grounding(generic, spec_all, known, names, images, labels)
    return TrainData(
        params=params,
        classes=classes,
        generic=generic,
        spec=spec,
        class_emb=names,
        description_emb=-names,
        has_description=torch.ones(N_CLASSES, dtype=torch.bool),
        known=known,
        class_names=[f"class {c}" for c in range(N_CLASSES)],
        val_tasks=val,
        images=images,
        labels=labels,
        val_images=images,
        val_labels=labels,
        grounding=grounding,
        features=features,
        image_prompts=torch.nn.functional.normalize(
            torch.randn(len(images), 12, generator=g), dim=1
        ),
        shots=(1, 2),
        drawer=TaskDrawer(
            [torch.arange(N_CLASSES)],
            torch.zeros(N_ZOO, dtype=torch.long),
            K,
            held_out={frozenset(ids) for ids in class_ids(val)},
        ),
    )


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, out: str) -> None:
    """One spawned rank: join the group through torchrun's variables, train, rank 0 saves."""
    import os

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    dist = Distributed.from_env("cpu")
    try:
        tina, history = train_tina(synthetic_zoo(), CONFIG, seed=0, dist=dist)
        if dist.is_main:
            save_tensors(f"{out}/model.safetensors", tina.model.state_dict())
            write_csv(f"{out}/history.csv", history)
    finally:
        dist.close()


@pytest.fixture(scope="module")
def single():
    """One process, the whole batch."""
    tina, history = train_tina(synthetic_zoo(), CONFIG, seed=0)
    return tina.model.state_dict(), history


def test_two_processes_match_one(single, tmp_path):
    # fork: the ranks start at once, without importing torch again
    args = (WORLD, _free_port(), str(tmp_path))
    mp.start_processes(_rank_worker, args=args, nprocs=WORLD, start_method="fork")
    weights = load_tensors(tmp_path / "model.safetensors")
    history = pd.read_csv(tmp_path / "history.csv")
    reference, reference_history = single
    assert set(weights) == set(reference)
    diff = max(float((weights[name] - reference[name]).abs().max()) for name in reference)
    print(f"max |weight difference| 1 vs {WORLD} processes: {diff:.3e}")
    assert diff < TOLERANCE, f"max |weight difference| {diff:.2e}"
    assert history["step"].tolist() == [5, 10, 15, 20]
    assert history["loss"].to_numpy() == pytest.approx(
        reference_history["loss"].to_numpy(), rel=1e-5
    )
    # weights that differ in the last bits may flip a near-tie prediction: one of 2 x 12 images
    assert history["val_accuracy"].to_numpy() == pytest.approx(
        reference_history["val_accuracy"].to_numpy(), abs=1 / 24 + 1e-9
    )


def test_training_moves_the_weights(single):
    """Guards the comparison above: training changes the weights far beyond the tolerance."""
    weights, history = single
    fresh = TinaConfig(**{**CONFIG.__dict__, "steps": 1, "eval_every": 1})
    first = train_tina(synthetic_zoo(), fresh, seed=0)[0]
    start = first.model.state_dict()
    change = max(float((weights[name] - start[name]).abs().max()) for name in weights)
    assert change > 100 * TOLERANCE
    assert (history["fresh_loss"] > 0).all()  # the fresh tasks were trained on too
    # the code loss falls: the trained weights fit the same batches better than after one step
    # (the same batches: the logged window means differ by which prompt kinds each window drew)
    trained = copy.deepcopy(first.model)
    trained.load_state_dict(weights)
    assert code_loss(trained, first) < code_loss(first.model, first)


@torch.no_grad()
def code_loss(model, tina, batches: int = 16) -> float:
    """The mean code loss of ``model`` on ``batches`` training batches drawn with one seed."""
    data, g, total = synthetic_zoo(), torch.Generator().manual_seed(1), 0.0
    for _ in range(batches):
        b = _draw_batch(data, tina.codec, tina.schedule, CONFIG, g)
        out = model(b["x_t"], b["t"], b["prompts"], b["mask"], b["base_in"], b["drop"])
        total += float(((out - b["x0"]) ** 2 * b["weight"]).sum() / b["weight"].sum())
    return total / batches


def test_cpu_training_ignores_mixed_precision(single):
    """On the CPU, device="cpu" with precision bf16 trains bit for bit like the default."""
    tina, history = train_tina(synthetic_zoo(), CONFIG, seed=0, device="cpu", precision="bf16")
    weights, reference_history = single
    assert all(torch.equal(tina.model.state_dict()[k], v) for k, v in weights.items())
    assert history["loss"].tolist() == reference_history["loss"].tolist()


def _group(world: int, rank: int) -> Distributed:
    return Distributed(rank=rank, world=world, device=torch.device("cpu"))


def test_shard_slices_the_global_batch():
    parts = [_group(4, rank).shard(12) for rank in range(4)]
    assert parts == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)]
    assert [_group(4, rank).is_main for rank in range(4)] == [True, False, False, False]
    with pytest.raises(ValueError, match="tina.batch_size = 10 does not split over 4 processes"):
        _group(4, 1).shard(10)


def test_from_env_outside_torchrun_is_an_error(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="not started by torchrun: RANK, WORLD_SIZE"):
        Distributed.from_env("cpu")


def test_process_count():
    assert process_count(1) == 1
    assert process_count(2, gpus=1) == 2
    assert process_count(1, gpus=4) == 4
    assert process_count(0, gpus=0) == 1


def test_buckets_cover_every_parameter_once():
    params = [torch.zeros(n) for n in (5, 3, 10, 1, 7)]
    buckets = list(distributed.buckets([(p, 1.0) for p in params], numel=8))
    assert [[p.numel() for p, _ in b] for b in buckets] == [[5, 3], [10], [1, 7]]


def test_launch_reports_a_failed_run(tmp_path, monkeypatch):
    """A job whose inputs are missing fails in every rank; launch raises and names it."""
    monkeypatch.setenv("PYTHONPATH", str(distributed.Path(distributed.__file__).parents[1]))
    missing = str(tmp_path / "missing.safetensors")
    job = {
        "inputs": dict.fromkeys(
            ("dataset", "classes", "tasks", "generic", "embeddings", "projection", "grounding"),
            missing,
        )
        | {"zoo": [missing]},
        "outputs": {"model": str(tmp_path / "m"), "history": str(tmp_path / "h")},
        "tina": {}, "seed": 0, "device": "cpu", "threads": 1, "shots": [1],
        "encoder": {"name": "minilm", "path": None, "allow_download": False},
    }  # fmt: skip
    with pytest.raises(RuntimeError, match="distributed training on 2 processes failed"):
        distributed.launch(job, 2)
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- tina.device
def test_pick_device(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="device: cuda was asked for but torch sees no CUDA"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto", 1) == torch.device("cuda", 1)
    with pytest.raises(RuntimeError, match="GPU 2 was asked for but torch sees 2 GPU"):
        pick_device("cuda", 2)


def test_mixed_precision_is_fp32_on_the_cpu():
    amp = MixedPrecision("cpu", "bf16")
    assert amp.precision == "fp32" and amp.dtype is None and amp.scaler is None
    layer = torch.nn.Linear(4, 2)
    with amp.autocast():
        out = layer(torch.ones(3, 4))
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        check_precision("fp8")


def test_mixed_precision_on_cuda_autocasts():
    """bf16/fp16 choose autocast dtypes and loss scaling for CUDA (checked without a GPU)."""
    bf16, fp16 = MixedPrecision("cuda", "bf16"), MixedPrecision("cuda", "fp16")
    assert (bf16.dtype, bf16.scaler) == (torch.bfloat16, None)
    assert fp16.dtype == torch.float16 and fp16.scaler is not None


def test_mixed_precision_steps_like_plain_training():
    """In fp32 the helper's backward/unscale/step equal loss.backward() and optimizer.step()."""
    results = []
    for use_helper in (False, True):
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 2)
        opt = torch.optim.AdamW(layer.parameters(), lr=0.1)
        loss = layer(torch.ones(3, 4)).pow(2).sum()
        if use_helper:
            amp = MixedPrecision("cpu", "fp32")
            amp.backward(loss)
            amp.unscale(opt)
            amp.step(opt)
        else:
            loss.backward()
            opt.step()
        results.append(layer.weight.detach().clone())
    assert torch.equal(results[0], results[1])
