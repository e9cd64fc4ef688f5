"""Can Tina beat classifier selection on this zoo? Probes of the p-models' residuals.

Tina learns each p-model's residual over the generic model with classifier selection (the
*base*). It can only beat selection if that residual is (a) a property of the task rather than
noise of one fine-tuning run, and (b) predictable for a new task from the training tasks. The
probes measure both, and where the fine-tuning gain lives, on the VALIDATION tasks (never the
test tasks); each row is the mean accuracy of one kind of net over those tasks:

- ``selection`` and ``pmodel``: the two ends of the range;
- ``seed=<s>``: the validation p-models fine-tuned again with another seed (same steps, data
  and augmentation); ``soup=<n>``: the average of the first ``n`` seeds' nets. The column
  ``cosine`` holds the mean cosine between a seed's residual and seed 0's, the zoo's own p-model
  (near 1: the residual is a property of the task; near 0: run noise);
- ``mean_residual x<s>``: the base plus ``s`` times the mean residual of every training p-model;
  ``group_residual x<s>``: the same with the mean over the training p-models of the task's
  group. Below selection means that what fine-tuning adds does not carry over to other tasks;
  ``overlap_residual x<s>``: a kernel smoother over the training tasks, as the closest a model
  can get from class identities alone: the body gets the mean residual of the training tasks
  weighted by how many classes they share with the task, each head row the mean residual row
  of its class over the training tasks that have it;
- ``head_only``: only the head rows fine-tuned on the frozen generic body (same steps and lr),
  which tells whether the gain is in the head or in the body (zoos of full nets only).
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from tina.nets import score, spec_of_generic, split_body
from tina.tasks import task_classes
from tina.zoo.finetune import finetune_pmodels, select_classifier
from tina.zoo.store import Generic, Zoo


def _row(probe: str, acc: Tensor, cosine: float | None = None) -> dict:
    return {
        "probe": probe,
        "accuracy": float(acc.mean()),
        "std": float(acc.std()) if len(acc) > 1 else 0.0,
        "count": len(acc),
        "cosine": cosine,
    }


def overlap_residual(classes: Tensor, train_classes: Tensor, residual: Tensor, spec) -> Tensor:
    """The kernel smoother of ``overlap_residual`` for tasks ``classes [B, k]``, from training
    tasks ``train_classes [N, k]`` and their residuals ``[N, P]``."""
    rows = spec.head_rows()  # [k, row_len]
    body = torch.ones(spec.num_params, dtype=torch.bool)
    body[rows.reshape(-1)] = False
    shared = torch.stack([torch.isin(train_classes, ids[ids >= 0]).sum(1) for ids in classes])
    weights = shared.float() / shared.sum(1, keepdim=True).clamp(min=1)
    out = torch.zeros(len(classes), spec.num_params)
    out[:, body] = weights @ residual[:, body]
    # each class's mean residual row over the training slots that hold it
    slot_rows = residual[:, rows]  # [N, k, row_len]
    held = train_classes >= 0
    n_classes = int(max(classes.max(), train_classes.max())) + 1
    sums = torch.zeros(n_classes, rows.shape[1]).index_add_(0, train_classes[held], slot_rows[held])
    counts = torch.zeros(n_classes).index_add_(0, train_classes[held], torch.ones(int(held.sum())))
    means = sums / counts.clamp(min=1).unsqueeze(1)
    for j in range(rows.shape[0]):
        known = classes[:, j] >= 0
        out[known.nonzero().squeeze(1)[:, None], rows[j]] = means[classes[known, j]]
    return out


def residual_probes(
    dataset,
    tasks: pd.DataFrame,
    generic: Generic,
    zoo: Zoo,
    zoo_section: dict,
    *,
    seed: int,
    seeds: int = 3,
    scales: tuple[float, ...] = (0.5, 1.0),
    threads: int = 1,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """The probes above as a table (one row per probe; see the module docstring); nets are
    fine-tuned and scored on ``device``."""
    val = tasks[tasks["split"] == "val"].reset_index(drop=True)
    if val.empty:
        raise ValueError("the task table has no validation tasks: raise tasks.n_val")
    spec = zoo.spec
    spec_all = spec_of_generic(generic.flat, spec)
    frozen = split_body(generic.flat, spec_all)[0] if spec.head_only else None

    def base_of(classes: Tensor) -> Tensor:
        return torch.stack(
            [select_classifier(generic.flat, i, spec_all, spec, seed) for i in classes]
        )

    def accuracy(params: Tensor) -> Tensor:
        return score(params.to(device), val, *dataset.scoring_images("val"), spec, frozen)

    def finetune(run_seed: int, run_spec=spec) -> Tensor:
        params, _ = finetune_pmodels(
            dataset, val, generic.flat, run_spec,
            steps=zoo_section["steps"], lr=zoo_section["lr"],
            batch_size=zoo_section["batch_size"], seed=run_seed, chunk=zoo_section["chunk"],
            threads=threads, progress=False, augment_mode=zoo_section["augment"],
            device=device,
        )  # fmt: skip
        return params

    val_classes = task_classes(val, spec.num_classes)
    base = base_of(val_classes)
    position = {task: i for i, task in enumerate(zoo.meta["task_id"])}
    own = zoo.params[[position[t] for t in val["task_id"]]]
    rows = [_row("selection", accuracy(base)), _row("pmodel", accuracy(own), 1.0)]

    nets = [own]
    for s in range(1, seeds):
        nets.append(finetune(seed + s))
        cosine = F.cosine_similarity(nets[-1] - base, own - base, dim=1).mean()
        rows.append(_row(f"seed={s}", accuracy(nets[-1]), float(cosine)))
    if seeds > 1:
        rows.append(_row(f"soup={seeds}", accuracy(torch.stack(nets).mean(0))))

    train = zoo.train_mask()
    residual = zoo.params[train] - base_of(zoo.classes[train])
    train_groups = zoo.meta["group"][train.numpy()].to_numpy()
    group_mean = {
        g: residual[torch.as_tensor(train_groups == g)].mean(0) for g in set(train_groups)
    }
    none = torch.zeros(spec.num_params)
    by_group = torch.stack([group_mean.get(g, none) for g in val["group"]])
    by_overlap = overlap_residual(val_classes, zoo.classes[train], residual, spec)
    for s in scales:
        rows.append(_row(f"mean_residual x{s:g}", accuracy(base + s * residual.mean(0))))
        rows.append(_row(f"group_residual x{s:g}", accuracy(base + s * by_group)))
        rows.append(_row(f"overlap_residual x{s:g}", accuracy(base + s * by_overlap)))

    if not spec.head_only:  # (a head-only zoo's p-models are this probe)
        head = finetune(seed, spec.with_classes(spec.num_classes, head_only=True))
        body = base[:, : spec.body_size]
        rows.append(_row("head_only", accuracy(torch.cat([body, head], dim=1))))
    return pd.DataFrame(rows)
