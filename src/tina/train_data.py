"""What Tina trains on: :class:`TrainData`, built from a run's files by
:func:`load_train_data`, and the prompts drawn for it.

Every training task's prompt is drawn as one kind (:func:`draw_prompts`: names, descriptions,
k-shot images, or names with some classes treated as unknown) and grounded by
:mod:`tina.grounding`, so Tina learns the residual from the base each kind gives;
:func:`validation_slots` are the prompts the checkpoint is chosen on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import Tensor

from tina.data import Dataset
from tina.grounding import (
    DESCRIPTION,
    IMAGES,
    NAME,
    UNKNOWN,
    Grounding,
    GroundingSettings,
    Slots,
    build_grounding,
    image_slots,
    task_shots,
    text_slots,
)
from tina.nets import NetSpec
from tina.prompts import embed_images, load_image_embedder
from tina.sampling import PROMPT_KINDS, TinaConfig
from tina.seeding import derive_seed
from tina.tasks import PAD, TaskDrawer, task_classes
from tina.zoo.store import Generic, Zoo


def _class_index(labels: Tensor, n_classes: int) -> Tensor:
    """``[C, m]`` training image indices per class (cycled to the largest class's count)."""
    pools = [torch.nonzero(labels == c).squeeze(1) for c in range(n_classes)]
    m = max(len(p) for p in pools)
    return torch.stack(
        [
            p.repeat(m // max(len(p), 1) + 1)[:m] if len(p) else torch.zeros(m, dtype=torch.long)
            for p in pools
        ]
    )


@dataclass
class TrainData:
    """What :func:`train_tina` trains on, besides its config."""

    params: Tensor  # [N, P] the training p-models
    classes: Tensor  # [N, k] their tasks' class ids in prompt order (PAD = -1)
    generic: Tensor  # the generic model's flat parameters (head over all classes)
    spec: NetSpec  # the p-models' (generated nets') spec
    class_emb: Tensor  # [C, D] each class's name embedding
    description_emb: Tensor  # [C, D] each class's description embedding
    has_description: Tensor  # [C] bool
    known: Tensor  # [C] bool: the classes the generic model was trained on
    class_names: list[str]  # [C]
    val_tasks: pd.DataFrame  # the validation tasks that select the checkpoint
    images: Tensor  # training images and labels: the functional loss's and the shots'
    labels: Tensor
    val_images: Tensor  # validation images and labels: the validation tasks score on them
    val_labels: Tensor
    grounding: Grounding  # every prompt slot's base row
    features: Tensor  # [N, F] generic features of the training images (imprinting)
    image_prompts: Tensor  # [N, D] each training image's prompt embedding
    shots: tuple[int, ...] = (1, 2, 4, 8)  # image prompts take one of these shot counts
    drawer: TaskDrawer | None = None  # the fresh tasks' (None: the zoo's tasks only)

    def __post_init__(self):
        self.by_class = _class_index(self.labels, len(self.class_names))  # [C, m] image indices

    def subset(self, index: Tensor) -> TrainData:
        """The same data with only the training p-models at ``index``."""
        return replace(self, params=self.params[index], classes=self.classes[index])


def load_train_data(
    dataset: Dataset, tasks: pd.DataFrame, embeddings: dict[str, Tensor], generic: Generic,
    zoo: Zoo, settings: GroundingSettings, image_prompts: Tensor, *,
    shots: Sequence[int] = (1, 2, 4, 8), class_split: pd.DataFrame | None = None,
) -> TrainData:  # fmt: skip
    """The training data of a run, from its loaded files: the zoo's training p-models, the
    class-name and description prompts, the grounding of ``generic`` with ``settings`` (and
    its features of the training images), every training image's prompt ``image_prompts
    [N, D]`` (:func:`image_prompt_bank`), the validation tasks and the data set's images.

    With ``class_split`` the data holds a :class:`tina.tasks.TaskDrawer` of fresh tasks, drawn
    from the class split's groups like the training tasks.
    """
    train = zoo.train_mask()
    grounding, features = build_grounding(
        generic.flat, generic.spec, generic.trained, embeddings["names"], dataset.train_images,
        dataset.train_labels, settings,
    )  # fmt: skip
    return TrainData(
        params=zoo.params[train],
        classes=zoo.classes[train],
        generic=generic.flat,
        spec=zoo.spec,
        class_emb=embeddings["names"],
        description_emb=embeddings["descriptions"],
        has_description=embeddings["has_description"].bool(),
        known=generic.trained,
        class_names=dataset.classes["name"].tolist(),
        val_tasks=tasks[tasks["split"] == "val"],
        images=dataset.train_images,
        labels=dataset.train_labels,
        val_images=dataset.val_images,
        val_labels=dataset.val_labels,
        grounding=grounding,
        features=features,
        image_prompts=image_prompts,
        shots=tuple(shots),
        drawer=None if class_split is None else TaskDrawer.from_tables(class_split, tasks),
    )


def image_prompt_bank(
    encoder: dict, projection_path, generic: Generic, prompt_dim: int, images: Tensor,
    device: torch.device | str = "cpu",
) -> Tensor:  # fmt: skip
    """The image prompt ``[N, D]`` of every image through the run's image route
    (:func:`tina.prompts.load_image_embedder`: the encoder's image tower, or the projection of
    ``generic``'s features), run on ``device``."""
    embed = load_image_embedder(
        encoder, projection_path, generic.flat, generic.spec, prompt_dim, device
    )
    return embed_images(embed, images)


# --------------------------------------------------------------------------- training


def draw_prompts(data: TrainData, classes: Tensor, cfg: TinaConfig, g: torch.Generator) -> Slots:
    """Each task's prompt, drawn as one kind of ``cfg.prompt_kinds`` (rates):

    - ``names``: its class names (known classes: their selection rows);
    - ``descriptions``: its classes' descriptions (names where a class has none);
    - ``images``: ``n`` shots per class (``n`` one of ``data.shots``), fresh training images at
      every draw; each slot also names its class with probability ``cfg.image_names`` (its
      selection row, as images given with names);
    - ``unknown``: names, each slot with probability ``cfg.unknown_share`` treated as an unknown
      class (its own row withheld: the name mixture), which teaches Tina to write unseen rows.
    """
    b, k = classes.shape
    mask = classes >= 0
    cid = classes.clamp(min=0)
    rates = torch.tensor([float(cfg.prompt_kinds.get(kind, 0.0)) for kind in PROMPT_KINDS])
    kind_of_task = torch.multinomial(rates, b, replacement=True, generator=g)
    coin = torch.rand(b, k, generator=g)
    is_kind = {kind: (kind_of_task == i).unsqueeze(1) for i, kind in enumerate(PROMPT_KINDS)}
    slot_kind = torch.full_like(classes, NAME)
    slot_kind[is_kind["descriptions"] & data.has_description[cid]] = DESCRIPTION
    slot_kind[is_kind["unknown"] & (coin < cfg.unknown_share)] = UNKNOWN
    images = is_kind["images"].expand(b, k)
    slot_kind[images] = IMAGES
    class_id = torch.where(images & (coin >= cfg.image_names), PAD, classes)
    text = torch.where(
        (slot_kind == DESCRIPTION).unsqueeze(-1), data.description_emb[cid], data.class_emb[cid]
    )
    # shots: distinct training images of the slot's class, n of them for the task
    n_max = max(data.shots)
    by_class = data.by_class
    order = torch.argsort(torch.rand(b, k, by_class.shape[1], generator=g), dim=-1)[..., :n_max]
    index = by_class[cid].gather(2, order)  # [b, k, n_max]
    shots = torch.tensor(data.shots)[torch.randint(len(data.shots), (b,), generator=g)]
    count = torch.where(images, shots.unsqueeze(1), 0)
    pictures = image_slots(
        classes, index, data.features, data.image_prompts, named=True, count=count
    )
    return Slots(
        kind=slot_kind,
        class_id=class_id.masked_fill(~mask, PAD),
        mask=mask,
        text=text * mask.unsqueeze(-1),
        image=pictures.image * mask.unsqueeze(-1),
        shot_features=pictures.shot_features,
        shot_count=pictures.shot_count,
    )


def training_rows(data: TrainData, cfg: TinaConfig, seed: int) -> Tensor:
    """Base rows ``[N, k, F + 1]`` of every training p-model under one seeded draw of its
    prompt (:func:`draw_prompts`): the residuals Tina learns start from bases like these, so
    the code's statistics are fitted on them."""
    g = torch.Generator().manual_seed(derive_seed(seed, "tina-codec"))
    return data.grounding.ground(draw_prompts(data, data.classes, cfg, g))


def validation_slots(data: TrainData, tasks: pd.DataFrame, cfg: TinaConfig, seed: int):
    """The prompts Tina is validated on, one :class:`Slots` per kind it trains on: the tasks'
    names, descriptions, ``max(shots)`` images per class (shots from the training images,
    named as the grounding's ``keep_known_rows`` says) and names all treated as unknown."""
    classes = task_classes(tasks, data.spec.num_classes)
    cid = classes.clamp(min=0)
    out = {}
    for kind in PROMPT_KINDS:
        if float(cfg.prompt_kinds.get(kind, 0.0)) <= 0:
            continue
        if kind == "names":
            out[kind] = text_slots(classes, data.class_emb, NAME)
        elif kind == "unknown":
            out[kind] = text_slots(classes, data.class_emb, UNKNOWN)
        elif kind == "descriptions":
            slots = text_slots(classes, data.description_emb, DESCRIPTION)
            slots.kind = torch.where(data.has_description[cid], DESCRIPTION, NAME)
            slots.text = torch.where(
                slots.kind.unsqueeze(-1) == DESCRIPTION, slots.text, data.class_emb[cid]
            ) * slots.mask.unsqueeze(-1)
            out[kind] = slots
        else:
            index = task_shots(
                tasks["task_id"].tolist(), classes, data.labels, max(data.shots), seed,
                "validate-shots",
            )  # fmt: skip
            named = data.grounding.settings.keep_known_rows
            out[kind] = image_slots(classes, index, data.features, data.image_prompts, named=named)
    return out
