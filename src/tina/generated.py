"""A generated classifier: its model file format, and classifying images with it.

The model file is a safetensors file of a standalone net (``conv1.weight`` ... ``head.bias``,
one head row per class in prompt order; a head-only Tina's net gets the generic body). Its
metadata (one JSON entry, so the same seed gives the same file bytes) records the net spec, the
classes, the image size, the sha256 of the Tina checkpoint and of the parameters' bytes. A JSON
sidecar ``<file>.json`` repeats them with the seed, sample count and creation time.
:func:`load_model` reads safetensors only (no pickle) and refuses a file whose parameters no
longer match their recorded hash. Models are made by :mod:`tina.generate`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from torch import Tensor

from tina.data import read_image, to_float
from tina.io import load_tensors, save_tensors, write_json
from tina.nets import CNN, NetSpec, flatten, unflatten

MODEL_FORMAT = "tina-generated-model-v1"
METADATA_KEY = "tina"
PREDICT_BATCH = 256


class TinaError(Exception):
    """A bad request or a missing or corrupt file; the message is one line saying what to fix."""


def one_line(err: BaseException) -> str:
    """An error's message on one line (whitespace collapsed)."""
    return " ".join(str(err).split())


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
        raise TinaError(f"model file {path} has incomplete metadata: {one_line(err)}") from None


def _read_model_file(path: Path) -> tuple[dict, dict[str, Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_tensors(path)
    except Exception as err:  # safetensors raises several types on a damaged file
        raise TinaError(f"model file {path} is corrupt: {one_line(err)}") from None
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
        raise TinaError(f"model file {path} has a wrong net spec: {one_line(err)}") from None
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
        raise TinaError(f"sidecar {sidecar} is corrupt: {one_line(err)}") from None
    if recorded != params_sha256:
        raise TinaError(
            f"model file {path} is corrupt: its sidecar {sidecar.name} records another "
            "parameter sha256"
        )


# --------------------------------------------------------------------------- prediction
def read_images(paths: Sequence[str | Path], image_size: int) -> Tensor:
    """RGB uint8 images ``[n, 3, S, S]``, centre-cropped and resized like the data sets' files."""
    out = []
    for path in paths:
        try:
            out.append(read_image(Path(path), image_size))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise TinaError(f"cannot read image {path}: {one_line(err)}") from None
    return torch.stack(out) if out else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)


@torch.no_grad()
def predict(
    model: GeneratedModel | str | Path, image_paths: Sequence[str | Path]
) -> list[tuple[str, str]]:
    """Classify image files with a generated model: ``[(path, class name), ...]``."""
    model = model if isinstance(model, GeneratedModel) else load_model(model)
    net = model.net()
    paths = [str(p) for p in image_paths]
    out = []
    for start in range(0, len(paths), PREDICT_BATCH):
        chunk = paths[start : start + PREDICT_BATCH]
        labels = net(to_float(read_images(chunk, model.image_size))).argmax(1)
        out += [(p, model.classes[int(c)]) for p, c in zip(chunk, labels, strict=True)]
    return out
