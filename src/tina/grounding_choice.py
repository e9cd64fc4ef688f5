"""The grounding's choices on validation tasks: the two temperatures, the imprint scale and
the fitting steps (:func:`choose_settings`), and the rule ``choose_grounding`` that makes them
for a run (:func:`choose_grounding_stage`). Every choice scores on the validation images."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import pandas as pd
import torch
from torch import Tensor

from tina.data import load_dataset
from tina.grounding import (
    DESCRIPTION,
    PAD,
    UNKNOWN,
    Grounding,
    GroundingSettings,
    build_grounding,
    image_slots,
    task_shots,
    text_slots,
)
from tina.prompts import load_embeddings
from tina.tasks import read_tasks, task_classes
from tina.zoo.store import load_generic

log = logging.getLogger("tina.grounding")


def head_accuracy(rows: Tensor, classes: Tensor, feats: Tensor, labels: Tensor) -> Tensor:
    """Accuracy ``[B]`` of heads ``rows [B, k, F + 1]`` over the generic body on the images
    (features ``feats [N, F]``, ``labels [N]``) of each task's classes ``[B, k]``."""
    out = torch.zeros(len(classes))
    for t in range(len(classes)):
        ids = classes[t]
        real = ids >= 0
        match = labels.unsqueeze(1) == ids[real].unsqueeze(0)
        index = torch.nonzero(match.any(1)).squeeze(1)
        slot = match[index].int().argmax(1)
        logits = feats[index] @ rows[t, real, :-1].T + rows[t, real, -1]
        out[t] = (logits.argmax(1) == slot).float().mean()
    return out


TEMPERATURES = (0.01, 0.02, 0.05, 0.1, 0.2)
SCALES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def choose_settings(
    grounding: Grounding,
    tasks: pd.DataFrame,
    name_emb: Tensor,
    description_emb: Tensor,
    train_feats: Tensor,
    train_labels: Tensor,
    val_feats: Tensor,
    val_labels: Tensor,
    *,
    shots: Sequence[int],
    k: int,
    seed: int,
    fit_steps: Sequence[int] = (0,),
) -> tuple[GroundingSettings, pd.DataFrame]:
    """Pick the temperatures, the imprint scale and whether to fit imprinted rows on validation
    ``tasks`` (all classes known):

    - name temperature: every slot's own row withheld (the name mixture alone);
    - description temperature: every slot a description;
    - imprint scale (then the fitting steps, one of ``fit_steps``): the two uses of image
      shots (from the training images, each of ``shots``): every slot images alone (image
      prompts, a user's pictures of new classes), and every second slot images with the others
      their selection rows (a prompt that mixes pictures with known names, where imprinted rows
      must compete with trained ones); the mean over both uses and the shot counts decides.

    Every choice scores on the validation images. Returns the settings and a table of every
    candidate's mean validation accuracy.
    """
    classes = task_classes(tasks, k)
    ids = tasks["task_id"].tolist()
    rows = []

    def record(what, value, accuracy):
        rows.append({"setting": what, "value": value, "val_accuracy": float(accuracy)})

    best = {}
    for what, emb, kind in (
        ("name_temperature", name_emb, UNKNOWN),
        ("description_temperature", description_emb, DESCRIPTION),
    ):
        scores = {}
        for temperature in TEMPERATURES:
            g = grounding.with_settings(**{what: temperature})
            acc = head_accuracy(
                g.ground(text_slots(classes, emb, kind)), classes, val_feats, val_labels
            )
            scores[temperature] = acc.mean().item()
            record(what, temperature, scores[temperature])
        best[what] = max(scores, key=scores.get)
    half = torch.zeros_like(classes, dtype=torch.bool)
    half[:, ::2] = True
    image_tasks = []
    for n in shots:
        index = task_shots(ids, classes, train_labels, n, seed, "grounding-shots")
        image_tasks.append(image_slots(classes, index, train_feats, named=False))
        mixed = image_slots(classes, index, train_feats, named=True)
        mixed.class_id = torch.where(half, PAD, classes)  # these slots: images alone
        image_tasks.append(mixed)

    def image_accuracy(g: Grounding) -> float:
        accs = [head_accuracy(g.ground(x), classes, val_feats, val_labels) for x in image_tasks]
        return float(torch.stack(accs).mean())

    for what, candidates, fixed in (
        ("imprint_scale", SCALES, {"fit_steps": 0}),
        ("fit_steps", tuple(fit_steps), {}),
    ):
        scores = {}
        for value in candidates:
            scores[value] = image_accuracy(
                grounding.with_settings(**best, **fixed, **{what: value})
            )
            record(what, value, scores[value])
        best[what] = max(scores, key=scores.get)
    chosen = replace(grounding.settings, **best)
    log.info("grounding chosen on %d validation tasks: %s", len(tasks), chosen)
    return chosen, pd.DataFrame(rows)


def choose_grounding_stage(
    inputs, section: dict, *, shots: Sequence[int], k: int, seed: int
) -> tuple[GroundingSettings, pd.DataFrame]:
    """Rule ``choose_grounding``: load a run's data, generic model, prompts and tasks, and pick
    the grounding's temperatures, imprint scale and fitting steps (among the section's
    ``fit_steps``) on its validation tasks (:func:`choose_settings`); ``section`` is the
    config's ``grounding`` section."""
    dataset = load_dataset(inputs.dataset, inputs.classes)
    generic = load_generic(inputs.generic)
    emb = load_embeddings(inputs.embeddings)
    tasks = read_tasks(inputs.tasks)
    fixed = {key: value for key, value in section.items() if key != "fit_steps"}
    grounding, train_feats = build_grounding(
        generic.flat, generic.spec, generic.trained, emb["names"], dataset.train_images,
        dataset.train_labels, GroundingSettings.from_dict(fixed),
    )  # fmt: skip
    return choose_settings(
        grounding, tasks[tasks["split"] == "val"], emb["names"], emb["descriptions"],
        train_feats, dataset.train_labels, grounding.features(dataset.val_images),
        dataset.val_labels, shots=shots, k=k, seed=seed,
        fit_steps=section.get("fit_steps", [0]),
    )  # fmt: skip
