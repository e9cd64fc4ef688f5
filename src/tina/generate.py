"""Generate a classifier for any classes with a trained Tina, save it, and classify images.

From Python, with a finished run directory (``snakemake all`` makes one)::

    from tina.generate import generate_model, predict, save_model

    model = generate_model("results/default", ["llama", "coconut", "rainbow"], samples=4)
    model_file, sidecar = save_model(model, "llama.safetensors")
    for path, name in predict(model_file, ["photo1.jpg", "photo2.png"]):
        print(path, name)

The command line ``tina generate`` / ``tina predict`` (:mod:`tina.cli`) calls these functions.

Prompts. Each class name is stripped and matched case-insensitively (``_`` counts as a space) to
the data set's class names. A match takes the run's cached name embedding *and* its class id, so
Tina starts from the generic model's row of that class; a new name is encoded with the run's
encoder and has no class id (Tina writes its row from the prompt alone). ``descriptions``
replaces the text encoded for each class (class ids still come from the names). ``images`` is a
folder with one sub-folder per class, named like the class: its images, read at the run's
image size like the data set's files, are encoded with the encoder's image tower, or, for an
encoder without one (MiniLM), as generic-net features through the run's image projection, and
averaged per class (then scaled back to unit length) into one k-shot image prompt.

Samples. ``samples=n`` draws ``n`` nets with the consecutive seeds ``seed .. seed + n - 1`` and
averages their parameters (all nets are residuals around the same generic model, so their mean
is a net too, and a better one on average); ``samples=1`` is a single sampled net. Sample ``i``
of an average is exactly the net that ``samples=1, seed=seed + i`` gives.

The model file is a safetensors file of a standalone net (``conv1.weight`` ... ``head.bias``,
one head row per class in prompt order; a head-only Tina's net gets the generic body). Its
metadata (one JSON entry, so the same seed gives the same file bytes) records the net spec, the
classes, the image size, the sha256 of the Tina checkpoint and of the parameters' bytes. A JSON
sidecar ``<file>.json`` repeats them with the seed, sample count and creation time.
:func:`load_model` reads safetensors only (no pickle) and refuses a file whose parameters no
longer match their recorded hash.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from tina.io import load_tensors, save_tensors, sha256_file, write_json
from tina.nets import CNN, NetSpec, flatten, split_body, unflatten
from tina.train import Tina, load_tina

MODEL_FORMAT = "tina-generated-model-v1"
METADATA_KEY = "tina"
SAMPLERS = ("ddim", "ddpm")
DEFAULT_ENCODER = {"name": "minilm", "path": None, "allow_download": False}
DEFAULT_IMAGE_SIZE = 16
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
RUN_FILES = {
    "tina": "tina/model.safetensors",
    "embeddings": "prompts/embeddings.safetensors",
    "projection": "prompts/image_projection.safetensors",
}
PREDICT_BATCH = 256


class TinaError(Exception):
    """A bad request or a missing or corrupt file; the message is one line saying what to fix."""


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
            f"Tina checkpoint {checkpoint} is corrupt or truncated ({_one_line(err)}); "
            "delete it and rerun `snakemake all`"
        ) from None
    return TinaRun(path, tina, sha256_file(checkpoint))


# --------------------------------------------------------------------------- the model
@dataclass
class GeneratedModel:
    """A generated standalone classifier: flat parameters of a full net and what made them."""

    params: Tensor  # float32 [P] in the flat layout of ``spec``
    spec: NetSpec  # full net (not head-only), one head row per class
    classes: list[str]  # in prompt order: head row j classifies classes[j]
    class_ids: list[int]  # the data set's class id of each class, -1 for a new name
    image_size: int
    prompt: str  # "names", "descriptions" or "images"
    seed: int
    samples: int
    sampler: str
    steps: int  # denoising steps taken per sample
    tina_sha256: str

    @property
    def params_sha256(self) -> str:
        return params_hash(self.params)

    def net(self) -> CNN:
        """The classifier as a ``torch.nn.Module`` in eval mode."""
        return CNN.from_flat(self.params, self.spec).eval()


def params_hash(params: Tensor) -> str:
    """sha256 of a flat parameter vector's float32 bytes (in flat order)."""
    data = params.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


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
        prompts, mode = _image_prompts(run, names, Path(images)), "images"
    elif descriptions is not None:
        prompts, mode = _description_prompts(run, names, descriptions), "descriptions"
    else:
        prompts, mode = _name_prompts(run, names, class_ids), "names"
    steps = (
        run.tina.schedule.T if sampler == "ddpm" else steps or run.tina.config.eval_sampler_steps
    )
    flat = _sample(run.tina, prompts, class_ids, samples, seed, sampler, steps)
    params, spec = _standalone(flat, run.tina, len(names))
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


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


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
def _encoder(name: str, path: str | None, allow_download: bool):
    """The run's prompt encoder, loaded once per process."""
    from tina.encoders import load_encoder

    return load_encoder(name, path=path, allow_download=allow_download)


def _run_encoder(run: TinaRun):
    cfg = run.encoder
    path = None if cfg["path"] is None else str(cfg["path"])
    try:
        encoder = _encoder(str(cfg["name"]), path, bool(cfg["allow_download"]))
    except (FileNotFoundError, ValueError) as err:
        raise TinaError(f"cannot load the run's prompt encoder: {_one_line(err)}") from None
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
            raise TinaError(f"embeddings file {path} is corrupt: {_one_line(err)}") from None
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


def _image_prompts(run: TinaRun, names: list[str], folder: Path) -> Tensor:
    """One prompt per class: the normalised mean embedding of its images."""
    from tina.encoders import encode_image_prompts, load_projection
    from tina.prompts import generic_features

    files = _class_image_files(folder, names)
    encoder = _run_encoder(run)
    projection, feature_fn = None, None
    if not encoder.has_image_tower:
        path = run.file("projection")
        try:
            projection = load_projection(path)
        except (ValueError, KeyError, RuntimeError) as err:
            raise TinaError(f"image projection {path} is corrupt: {_one_line(err)}") from None
        codec = run.tina.codec

        def feature_fn(images_uint8: Tensor) -> Tensor:
            return generic_features(codec.generic, codec.spec_all, images_uint8)

    prompts = []
    for paths in files:
        images = read_images(paths, run.image_size)
        embedded = encode_image_prompts(
            encoder, images, feature_fn=feature_fn, projection=projection
        )
        prompts.append(F.normalize(embedded.mean(0), dim=0))
    return torch.stack(prompts)


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


def _sample(
    tina: Tina,
    prompts: Tensor,
    class_ids: list[int],
    samples: int,
    seed: int,
    sampler: str,
    steps: int,
) -> Tensor:
    """The mean of ``samples`` nets ``[P]`` (seeds ``seed + i``), classes in slots 0..n-1."""
    k, n = tina.spec.num_classes, len(class_ids)
    batch_prompts = torch.zeros(1, k, prompts.shape[1])
    batch_prompts[0, :n] = prompts
    mask = torch.zeros(1, k, dtype=torch.bool)
    mask[0, :n] = True
    classes = torch.full((1, k), -1, dtype=torch.long)
    classes[0, :n] = torch.tensor(class_ids, dtype=torch.long)
    nets = [
        tina.generate(batch_prompts, mask, classes, sampler=sampler, steps=steps, seed=seed + i)[0]
        for i in range(samples)
    ]
    return torch.stack(nets).mean(0)


def _standalone(flat: Tensor, tina: Tina, n: int) -> tuple[Tensor, NetSpec]:
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


# --------------------------------------------------------------------------- files
def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a model file: ``<file>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _header(model: GeneratedModel) -> dict:
    return {
        "format": MODEL_FORMAT,
        "spec": json.loads(model.spec.to_json()),
        "classes": model.classes,
        "class_ids": model.class_ids,
        "image_size": model.image_size,
        "prompt": model.prompt,
        "seed": model.seed,
        "samples": model.samples,
        "sampler": model.sampler,
        "steps": model.steps,
        "tina_sha256": model.tina_sha256,
        "params_sha256": model.params_sha256,
    }


def save_model(model: GeneratedModel, out: str | Path) -> tuple[Path, Path]:
    """Write the model file and its JSON sidecar atomically; return both paths."""
    out = Path(out)
    header = _header(model)
    metadata = {METADATA_KEY: json.dumps(header, sort_keys=True)}
    save_tensors(out, unflatten(model.params, model.spec), metadata=metadata)
    sidecar = sidecar_path(out)
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(sidecar, {"model": out.name, **header, "created": created})
    return out, sidecar


def load_model(path: str | Path) -> GeneratedModel:
    """Read a model file written by :func:`save_model`, checking its parameters' sha256."""
    path = Path(path)
    if not path.is_file():
        raise TinaError(f"model file {path} not found; `tina generate --out {path}` makes one")
    header, tensors = _read_model_file(path)
    spec, classes = _net_spec(path, header, tensors)
    params = flatten(tensors).float()
    if params_hash(params) != header.get("params_sha256"):
        raise TinaError(
            f"model file {path} is corrupt: its parameters do not match their recorded sha256"
        )
    _check_sidecar(path, header["params_sha256"])
    try:
        return GeneratedModel(
            params=params,
            spec=spec,
            classes=classes,
            class_ids=[int(c) for c in header["class_ids"]],
            image_size=int(header["image_size"]),
            prompt=str(header["prompt"]),
            seed=int(header["seed"]),
            samples=int(header["samples"]),
            sampler=str(header["sampler"]),
            steps=int(header["steps"]),
            tina_sha256=str(header["tina_sha256"]),
        )
    except (KeyError, ValueError, TypeError) as err:
        raise TinaError(f"model file {path} has incomplete metadata: {_one_line(err)}") from None


def _read_model_file(path: Path) -> tuple[dict, dict[str, Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_tensors(path)
    except Exception as err:  # safetensors raises several types on a damaged file
        raise TinaError(f"model file {path} is corrupt: {_one_line(err)}") from None
    try:
        header = json.loads(metadata[METADATA_KEY])
    except (KeyError, ValueError):
        raise TinaError(
            f"model file {path} is corrupt or not written by `tina generate` (no {METADATA_KEY!r} "
            "metadata)"
        ) from None
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        raise TinaError(f"model file {path} is not a {MODEL_FORMAT} file")
    return header, tensors


def _net_spec(path: Path, header: dict, tensors: dict[str, Tensor]) -> tuple[NetSpec, list[str]]:
    """The net spec and classes of a model file; they must describe its tensors' full net."""
    try:
        spec = NetSpec.from_json(header["spec"])
        classes = [str(c) for c in header["classes"]]
    except (KeyError, ValueError, TypeError) as err:
        raise TinaError(f"model file {path} has a wrong net spec: {_one_line(err)}") from None
    expected = dict(spec.param_shapes())
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    problem = None
    if spec.head_only:
        problem = "the spec is head-only (a model file holds a whole net)"
    elif len(classes) != spec.num_classes:
        problem = f"{len(classes)} classes for a {spec.num_classes}-class net"
    elif found != expected:
        problem = f"tensors {found} do not match {spec} ({expected})"
    if problem:
        raise TinaError(f"model file {path} has a wrong net spec: {problem}")
    return spec, classes


def _check_sidecar(path: Path, params_sha256: str) -> None:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return
    try:
        recorded = json.loads(sidecar.read_text()).get("params_sha256")
    except (ValueError, AttributeError) as err:
        raise TinaError(f"sidecar {sidecar} is corrupt: {_one_line(err)}") from None
    if recorded != params_sha256:
        raise TinaError(
            f"model file {path} is corrupt: its sidecar {sidecar.name} records another "
            "parameter sha256"
        )


# --------------------------------------------------------------------------- prediction
def read_images(paths: Sequence[str | Path], image_size: int) -> Tensor:
    """RGB uint8 images ``[n, 3, S, S]``, centre-cropped and resized like the data sets' files."""
    from PIL import Image

    from tina.data import _read_image

    out = []
    for path in paths:
        try:
            out.append(_read_image(Path(path), image_size))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise TinaError(f"cannot read image {path}: {_one_line(err)}") from None
    return torch.stack(out) if out else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)


@torch.no_grad()
def predict(
    model: GeneratedModel | str | Path, image_paths: Sequence[str | Path]
) -> list[tuple[str, str]]:
    """Classify image files with a generated model: ``[(path, class name), ...]``."""
    from tina.data import to_float

    model = model if isinstance(model, GeneratedModel) else load_model(model)
    net = model.net()
    paths = [str(p) for p in image_paths]
    out = []
    for start in range(0, len(paths), PREDICT_BATCH):
        chunk = paths[start : start + PREDICT_BATCH]
        labels = net(to_float(read_images(chunk, model.image_size))).argmax(1)
        out += [(p, model.classes[int(c)]) for p, c in zip(chunk, labels, strict=True)]
    return out
