"""CPU throughput of this machine, and the cost model checked against measured steps.

:func:`cpu_throughput` times small real training steps on one thread (a chunk of CNNs through
:func:`tina.nets.forward`, a small Tina transformer) and divides their counted FLOPs by the
time: the FLOP/s that :mod:`tina.cost` turns into CPU hours. :func:`check` then runs a few steps
of the real training code at a config's sizes (the generic model's and the zoo's training
functions, Tina's training step) and compares the measured time with the prediction.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import pandas as pd
import torch
import torch.nn.functional as F

from tina.cost import Sizes, TinaShape, cnn_step, tina_step
from tina.data import Dataset
from tina.nets import NetSpec, forward, init_params
from tina.sampling import build_model
from tina.train import update_ema
from tina.zoo.finetune import finetune_pmodels, train_generic

CNN_PROBE = (NetSpec("cnn10k", 10), 4, 48, 24)  # spec, nets, images per net, image size
TINA_PROBE = TinaShape(NetSpec("cnn5k", 10), 256, 192, 2, 4, 64, True)


def _seconds(step: Callable[[], None], repeats: int = 3) -> float:
    """Best of ``repeats`` timed calls of ``step`` after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def _cnn_probe_step(spec: NetSpec, nets: int, batch: int, size: int) -> Callable[[], None]:
    flat = init_params(spec, torch.Generator().manual_seed(0)).repeat(nets, 1).requires_grad_()
    images = torch.rand(nets, batch, 3, size, size)
    labels = torch.randint(spec.num_classes, (nets * batch,))
    optimizer = torch.optim.Adam([flat])

    def step():
        loss = F.cross_entropy(forward(flat, images, spec).flatten(0, 1), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def _tina_train_step(shape: TinaShape, batch: int) -> Callable[[], None]:
    """Tina's training step as :func:`tina.train.train_tina` takes it: forward, x0 loss,
    backward, gradient clipping, AdamW and the EMA update (batch drawing left out)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(shape.spec, shape.prompt_dim, shape.tina_config())
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters())
    p, k = shape.spec.num_params, shape.spec.num_classes
    x, x0, base = torch.randn(batch, p), torch.randn(batch, p), torch.randn(batch, p)
    t = torch.randint(1000, (batch,))
    prompts, mask = torch.randn(batch, k, shape.prompt_dim), torch.ones(batch, k, dtype=torch.bool)

    def step():
        loss = ((model(x, t, prompts, mask, base) - x0) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        update_ema(ema, model, 100, 0.999)

    return step


def cpu_throughput() -> dict[str, float]:
    """FLOP/s of one CPU thread on a CNN chunk step and on a small Tina step (a few seconds)."""
    torch.set_num_threads(1)
    cnn = cnn_step(*CNN_PROBE).flops / _seconds(_cnn_probe_step(*CNN_PROBE))
    batch = 16
    flops = tina_step(TINA_PROBE, batch, backward=True).flops
    return {"cnn": cnn, "transformer": flops / _seconds(_tina_train_step(TINA_PROBE, batch))}


# --------------------------------------------------------------------------- the check
def _fake_dataset(n_classes: int, per_class: int, size: int) -> Dataset:
    """Random images of ``n_classes`` classes (timing needs shapes, not content)."""
    g = torch.Generator().manual_seed(0)

    def images(n):
        labels = torch.arange(n_classes).repeat_interleave(n)
        return torch.randint(
            256, (len(labels), 3, size, size), generator=g, dtype=torch.uint8
        ), labels

    (train, train_y), (test, test_y) = images(per_class), images(2)
    classes = pd.DataFrame(
        {"class_id": range(n_classes), "name": [f"c{i}" for i in range(n_classes)]}
    )
    return Dataset(train, train_y, test, test_y, test, test_y, classes)


def _measure_generic(sizes: Sizes, steps: int) -> float:
    section, size = sizes.config["generic"], sizes.config["data"]["image_size"]
    spec_all = sizes.spec().with_classes(sizes.n_classes)
    per_class = max(1, section["batch_size"] // sizes.n_classes)
    data = _fake_dataset(sizes.n_classes, per_class, size)
    start = time.perf_counter()
    train_generic(
        data.train_images, data.train_labels, range(sizes.n_classes), spec_all, steps=steps,
        lr=section["lr"], batch_size=section["batch_size"], seed=0,
        num_classes_total=sizes.n_classes, progress=False, augment_mode=section["augment"],
    )  # fmt: skip
    return time.perf_counter() - start


def _measure_zoo(sizes: Sizes, steps: int) -> float:
    section, size, k = (
        sizes.config["zoo"],
        sizes.config["data"]["image_size"],
        sizes.spec().num_classes,
    )
    data = _fake_dataset(sizes.n_classes, section["batch_size"], size)
    spec_all = sizes.spec().with_classes(sizes.n_classes)
    generic = init_params(spec_all, torch.Generator().manual_seed(0))
    chunk = section["chunk"]
    ids = [" ".join(str((i * k + j) % sizes.n_classes) for j in range(k)) for i in range(chunk)]
    tasks = pd.DataFrame({"task_id": range(chunk), "class_ids": ids})
    start = time.perf_counter()
    finetune_pmodels(
        data, tasks, generic, sizes.spec(), steps=steps, lr=section["lr"],
        batch_size=section["batch_size"], seed=0, chunk=chunk, progress=False,
        augment_mode=section["augment"],
    )  # fmt: skip
    return time.perf_counter() - start


def check(config: dict, cnn_steps: int = 20, tina_steps: int = 3) -> list[dict]:
    """Measured against predicted seconds of ``cnn_steps`` steps of the generic model and of
    one zoo chunk (the training functions, with their selection and scoring) and of
    ``tina_steps`` steps of Tina's training, at ``config``'s sizes, on one CPU thread."""
    sizes = Sizes.of(config)
    throughput = cpu_throughput()
    size = config["data"]["image_size"]
    generic_flops = cnn_step(sizes.spec().with_classes(sizes.n_classes), 1,
                             config["generic"]["batch_size"], size).flops  # fmt: skip
    zoo = config["zoo"]
    zoo_flops = cnn_step(sizes.spec(), max(2, zoo["chunk"]), zoo["batch_size"], size).flops
    shape, batch = sizes.shape(), config["tina"]["batch_size"]
    tina_flops = tina_step(shape, batch, backward=True).flops
    tina_seconds = tina_steps * _seconds(_tina_train_step(shape, batch), tina_steps - 1)
    rows = [
        ("generic", cnn_steps, generic_flops, "cnn", _measure_generic(sizes, cnn_steps)),
        ("zoo chunk", cnn_steps, zoo_flops, "cnn", _measure_zoo(sizes, cnn_steps)),
        ("Tina", tina_steps, tina_flops, "transformer", tina_seconds),
    ]
    out = []
    for stage, steps, flops, kind, measured in rows:
        predicted = steps * flops / throughput[kind]
        out.append(
            {
                "stage": stage,
                "steps": steps,
                "predicted_s": round(predicted, 3),
                "measured_s": round(measured, 3),
                "ratio": round(measured / predicted, 2),
            }
        )
    return out
