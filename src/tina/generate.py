"""Generate a classifier for any classes with a trained Tina, save it, and classify images.

From Python, with a finished run directory (``snakemake all`` makes one)::

    from tina.generate import generate_model
    from tina.generated import predict, save_model

    model = generate_model("results/default", ["llama", "coconut", "rainbow"], samples=4)
    model_file, sidecar = save_model(model, "llama.safetensors")
    for path, name in predict(model_file, ["photo1.jpg", "photo2.png"]):
        print(path, name)

The command line ``tina generate`` / ``tina predict`` (:mod:`tina.cli`) calls these functions;
the model file and :func:`~tina.generated.predict` are :mod:`tina.generated`.

Prompts. Each class name is stripped and matched case-insensitively (``_`` counts as a space) to
the data set's class names. A match takes the run's cached name embedding *and* its class id, so
Tina starts from the generic model's row of that class; a new name is encoded with the run's
encoder and starts from the name mixture (the known rows mixed by name similarity).
``descriptions`` replaces the text encoded for each class and starts each row from the
description mixture. ``images`` is a folder with one sub-folder per class, named like the
class: its images, read at the run's image size like the data set's files, give the class's
image prompt (their embeddings through the encoder's image tower, or, for an encoder without
one (MiniLM), their generic-net features through the run's image projection, averaged and
scaled back to unit length) and its base row (imprinted from their generic features; a known
class named by its folder keeps its selection row where the run's grounding says so). Every
prompt is a :class:`tina.grounding.Slots`, the same as in training and evaluation.

Samples. ``samples=n`` draws ``n`` nets with the consecutive seeds ``seed .. seed + n - 1`` and
averages their parameters (all nets are residuals around the same generic model, so their mean
is a net too, and a better one on average); ``samples=1`` is a single sampled net. Sample ``i``
of an average is exactly the net that ``samples=1, seed=seed + i`` gives.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tina.encoders import PromptEncoder, load_encoder
from tina.generated import GeneratedModel, TinaError, one_line, read_images
from tina.grounding import DESCRIPTION, NAME, Slots, image_slots
from tina.io import load_tensors, sha256_file
from tina.nets import NetSpec, flatten, split_body, unflatten
from tina.prompts import ImageProjection, image_embedder, load_projection
from tina.sampling import Tina, load_tina
from tina.tasks import PAD

SAMPLERS = ("ddim", "ddpm")
DEFAULT_ENCODER = {"name": "minilm", "path": None, "allow_download": False}
DEFAULT_IMAGE_SIZE = 16
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
RUN_FILES = {
    "tina": "tina/model.safetensors",
    "embeddings": "prompts/embeddings.safetensors",
    "projection": "prompts/image_projection.safetensors",
}


# --------------------------------------------------------------------------- the run
@dataclass
class TinaRun:
    """A run directory's trained Tina and the hash of its checkpoint."""

    path: Path
    tina: Tina
    tina_sha256: str

    @property
    def encoder(self) -> dict:
        """The run's prompt encoder section (name, path, allow_download)."""
        return {**DEFAULT_ENCODER, **(self.tina.meta.get("encoder") or {})}

    @property
    def image_size(self) -> int:
        return int(self.tina.meta.get("image_size") or DEFAULT_IMAGE_SIZE)

    def file(self, key: str) -> Path:
        """The path of one of :data:`RUN_FILES`; a missing file is a :class:`TinaError`."""
        path = self.path / RUN_FILES[key]
        if not path.is_file():
            raise TinaError(
                f"run directory {self.path} lacks {RUN_FILES[key]}; `snakemake all` makes it"
            )
        return path


def load_run(run: str | Path) -> TinaRun:
    """Load the Tina checkpoint of run directory ``run`` (``results/<run>``)."""
    path = Path(run)
    if not path.is_dir():
        raise TinaError(f"run directory {path} does not exist; `snakemake all` makes results/<run>")
    checkpoint = path / RUN_FILES["tina"]
    if not checkpoint.is_file():
        raise TinaError(
            f"run directory {path} has no Tina checkpoint {RUN_FILES['tina']}; "
            "`snakemake all` makes it"
        )
    try:
        tina = load_tina(checkpoint)
    except (ValueError, KeyError, RuntimeError) as err:
        raise TinaError(
            f"Tina checkpoint {checkpoint} is corrupt or truncated ({one_line(err)}); "
            "delete it and rerun `snakemake all`"
        ) from None
    return TinaRun(path, tina, sha256_file(checkpoint))


# --------------------------------------------------------------------------- the model
# --------------------------------------------------------------------------- generation
def generate_model(
    run: str | Path | TinaRun,
    classes: Sequence[str],
    *,
    descriptions: Sequence[str] | None = None,
    images: str | Path | None = None,
    samples: int = 1,
    seed: int = 0,
    sampler: str = "ddim",
    steps: int | None = None,
) -> GeneratedModel:
    """Generate a classifier for ``classes`` (in that order) with the Tina of ``run``.

    ``run`` is a run directory or a :class:`TinaRun` from :func:`load_run` (to generate many
    models without reloading). Prompts are the class names, or ``descriptions`` (one text per
    class), or the images under ``images/<class>/``. ``samples`` nets drawn with seeds
    ``seed, seed + 1, ...`` are averaged. ``steps`` are DDIM steps (default: the checkpoint's
    evaluation steps; DDPM always runs every step).
    """
    names = _check_classes(classes)
    _check_sampling(samples, sampler, steps)
    if descriptions is not None and images is not None:
        raise TinaError("give descriptions or images as prompts, not both")
    run = run if isinstance(run, TinaRun) else load_run(run)
    k = run.tina.spec.num_classes
    if len(names) > k:
        raise TinaError(
            f"{len(names)} classes given, but this Tina generates nets for at most {k} classes"
        )
    class_ids = _match_classes(names, run.tina.class_names)
    if images is not None:
        slots, mode = _image_slots(run, names, class_ids, Path(images)), "images"
    elif descriptions is not None:
        text = _description_prompts(run, names, descriptions)
        slots, mode = _text_slots(run, text, class_ids, DESCRIPTION), "descriptions"
    else:
        text = _name_prompts(run, names, class_ids)
        slots, mode = _text_slots(run, text, class_ids, NAME), "names"
    steps = (
        run.tina.schedule.T if sampler == "ddpm" else steps or run.tina.config.eval_sampler_steps
    )
    flat = _sample(run.tina, slots, samples, seed, sampler, steps)
    params, spec = standalone(flat, run.tina, len(names))
    return GeneratedModel(
        params=params,
        spec=spec,
        classes=names,
        class_ids=class_ids,
        image_size=run.image_size,
        prompt=mode,
        seed=seed,
        samples=samples,
        sampler=sampler,
        steps=steps,
        tina_sha256=run.tina_sha256,
    )


def _key(name: str) -> str:
    """How class names compare: case-insensitive, ``_`` as a space, whitespace collapsed."""
    return " ".join(name.replace("_", " ").lower().split())


def _check_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        raise TinaError("classes must be a list of class names, not one string")
    names = [str(c).strip() for c in classes]
    if not any(names):
        raise TinaError("empty prompt: give at least one class name")
    empty = [i + 1 for i, name in enumerate(names) if not name]
    if empty:
        raise TinaError(f"empty class name at position {empty[0]} of {len(names)}")
    seen: dict[str, str] = {}
    for name in names:
        if _key(name) in seen:
            raise TinaError(f"duplicate class {name!r} (same as {seen[_key(name)]!r})")
        seen[_key(name)] = name
    return names


def _check_sampling(samples: int, sampler: str, steps: int | None) -> None:
    if samples < 1:
        raise TinaError(f"samples must be at least 1, not {samples}")
    if sampler not in SAMPLERS:
        raise TinaError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if steps is not None and steps < 1:
        raise TinaError(f"steps must be at least 1, not {steps}")


def _match_classes(names: list[str], known_names: list[str]) -> list[int]:
    """The data set's class id of each name (-1 for a name the data set does not have)."""
    index = {_key(name): i for i, name in enumerate(known_names)}
    return [index.get(_key(name), -1) for name in names]


@functools.lru_cache(maxsize=2)
def prompt_encoder(name: str, path: str | None, allow_download: bool) -> PromptEncoder:
    """A run's prompt encoder, loaded once per process."""
    return load_encoder(name, path=path, allow_download=allow_download)


def _run_encoder(run: TinaRun) -> PromptEncoder:
    cfg = run.encoder
    path = None if cfg["path"] is None else str(cfg["path"])
    try:
        encoder = prompt_encoder(str(cfg["name"]), path, bool(cfg["allow_download"]))
    except (FileNotFoundError, ValueError) as err:
        raise TinaError(f"cannot load the run's prompt encoder: {one_line(err)}") from None
    if encoder.dim != run.tina.model.prompt_dim:
        raise TinaError(
            f"encoder {encoder.name!r} gives {encoder.dim}-dim prompts but the Tina of "
            f"{run.path} takes {run.tina.model.prompt_dim}; check the run's encoder section"
        )
    return encoder


def _encode_texts(run: TinaRun, texts: list[str]) -> Tensor:
    return _run_encoder(run).encode_text(texts)


def _name_prompts(run: TinaRun, names: list[str], class_ids: list[int]) -> Tensor:
    """Cached name embeddings of known classes; new names encoded with the run's encoder."""
    prompts = torch.zeros(len(names), run.tina.model.prompt_dim)
    known = [i for i, c in enumerate(class_ids) if c >= 0]
    if known:
        path = run.file("embeddings")
        try:
            cached = load_tensors(path)["names"].float()
        except (ValueError, KeyError) as err:
            raise TinaError(f"embeddings file {path} is corrupt: {one_line(err)}") from None
        if cached.shape != (len(run.tina.class_names), prompts.shape[1]):
            raise TinaError(
                f"embeddings file {path} holds {tuple(cached.shape)} name embeddings, the Tina "
                f"checkpoint needs ({len(run.tina.class_names)}, {prompts.shape[1]})"
            )
        prompts[known] = cached[[class_ids[i] for i in known]]
    new = [i for i, c in enumerate(class_ids) if c < 0]
    if new:
        prompts[new] = _encode_texts(run, [names[i] for i in new])
    return prompts


def _description_prompts(run: TinaRun, names: list[str], descriptions: Sequence[str]) -> Tensor:
    texts = [str(d).strip() for d in descriptions]
    if len(texts) != len(names):
        raise TinaError(
            f"{len(texts)} descriptions for {len(names)} classes; give one per class, in order"
        )
    empty = [name for name, text in zip(names, texts, strict=True) if not text]
    if empty:
        raise TinaError(f"empty description for class {empty[0]!r}")
    return _encode_texts(run, texts)


def _padded(run: TinaRun, class_ids: list[int]) -> tuple[Tensor, Tensor]:
    """Class ids ``[1, k]`` of a one-task prompt (PAD after its classes) and its mask."""
    k, n = run.tina.spec.num_classes, len(class_ids)
    classes = torch.full((1, k), PAD, dtype=torch.long)
    classes[0, :n] = torch.tensor(class_ids, dtype=torch.long)
    mask = torch.zeros(1, k, dtype=torch.bool)
    mask[0, :n] = True
    return classes, mask


def _text_slots(run: TinaRun, text: Tensor, class_ids: list[int], kind: int) -> Slots:
    """One task whose slots are texts ``text [n, D]`` (names or descriptions) of classes
    ``class_ids`` (PAD for a new name)."""
    classes, mask = _padded(run, class_ids)
    padded = torch.zeros(1, mask.shape[1], text.shape[1])
    padded[0, : len(text)] = text
    return Slots(kind=torch.full_like(classes, kind), class_id=classes, mask=mask, text=padded)


def _image_slots(run: TinaRun, names: list[str], class_ids: list[int], folder: Path) -> Slots:
    """One task whose slots are the images under ``folder/<class>/``, given with the class
    names (a known class keeps its selection row where the grounding says so)."""
    files = _class_image_files(folder, names)
    encoder = _run_encoder(run)
    codec = run.tina.codec
    projection = functools.partial(_projection, run, encoder)
    embed = image_embedder(encoder, projection, codec.generic, codec.spec_all)
    images = [read_images(paths, run.image_size) for paths in files]
    counts = [len(x) for x in images]
    every = torch.cat(images)
    classes, mask = _padded(run, class_ids)
    index = torch.zeros(1, mask.shape[1], max(counts), dtype=torch.long)
    count = torch.zeros_like(classes)
    offsets = [0, *itertools.accumulate(counts)]
    for j, n in enumerate(counts):
        index[0, j, :n] = torch.arange(offsets[j], offsets[j] + n)
        count[0, j] = n
    return image_slots(
        classes, index, run.tina.grounding.features(every), embed(every), named=True,
        count=count, mask=mask,
    )  # fmt: skip


def _projection(run: TinaRun, encoder: PromptEncoder) -> ImageProjection:
    """The run's image projection into the space of ``encoder`` (which has no image tower)."""
    path = run.file("projection")
    try:
        projection = load_projection(path)
    except (ValueError, KeyError, RuntimeError) as err:
        raise TinaError(f"image projection {path} is corrupt: {one_line(err)}") from None
    if projection.out_dim != encoder.dim:
        raise ValueError(
            f"the projection maps to dim {projection.out_dim}, encoder {encoder.name!r} has "
            f"dim {encoder.dim}"
        )
    return projection


def _class_image_files(folder: Path, names: list[str]) -> list[list[Path]]:
    """The image files of each class's sub-folder of ``folder``."""
    if not folder.is_dir():
        raise TinaError(f"image folder {folder} does not exist")
    subfolders = {_key(d.name): d for d in folder.iterdir() if d.is_dir()}
    out = []
    for name in names:
        sub = subfolders.get(_key(name))
        if sub is None:
            raise TinaError(
                f"image folder {folder} has no sub-folder for class {name!r} "
                f"(it has: {', '.join(sorted(d.name for d in subfolders.values())) or 'none'})"
            )
        paths = sorted(
            p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not paths:
            raise TinaError(
                f"image folder {sub} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
            )
        out.append(paths)
    return out


def _sample(tina: Tina, slots: Slots, samples: int, seed: int, sampler: str, steps: int) -> Tensor:
    """The mean of ``samples`` nets ``[P]`` (seeds ``seed + i``) for the one task ``slots``."""
    nets = [
        tina.generate(slots, sampler=sampler, steps=steps, seed=seed + i)[0] for i in range(samples)
    ]
    return torch.stack(nets).mean(0)


def standalone(flat: Tensor, tina: Tina, n: int) -> tuple[Tensor, NetSpec]:
    """A full ``n``-class net from generated parameters (padding rows dropped, body added)."""
    spec = tina.spec
    if spec.head_only:
        body = split_body(tina.codec.generic, tina.codec.spec_all)[0]
        flat = torch.cat([body, flat])
        spec = spec.with_classes(spec.num_classes, head_only=False)
    named = unflatten(flat, spec)
    named["head.weight"] = named["head.weight"][:n]
    named["head.bias"] = named["head.bias"][:n]
    return flatten(named).float().contiguous(), spec.with_classes(n, head_only=False)
