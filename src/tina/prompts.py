"""Tina's prompt space: every class as a prompt vector of the run's encoder.

The ``embed_prompts`` stage writes one file with, per class, the embedding of its name and of
its description (WordNet gloss; classes without one are flagged and left out of description
experiments); :class:`EmbeddingCache` keeps text embeddings by content, so no text is encoded
twice across runs. Image prompts need an image path into the text space: CLIP has one (its
image tower); MiniLM gets an :class:`ImageProjection` of the generic net's pooled features,
fitted on the training classes only. :func:`image_embedder` is the one route from class images
to prompts, for the evaluation and for ``tina generate`` alike.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tina.data import to_float
from tina.encoders import (
    LazyEncoder,
    PromptEncoder,
    canonical_encoder_name,
    check_texts,
    load_encoder,
)
from tina.io import load_tensors, read_metadata, save_tensors
from tina.nets import NetSpec, features, split_body

log = logging.getLogger("tina.prompts")

#: uint8 class images ``[n, 3, S, S]`` -> their prompts ``[n, D]``.
ImageEmbedder = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------- text prompts
def cache_path(cache_dir: str | Path, encoder_name: str) -> Path:
    """One content-keyed cache file per encoder under ``cache_dir``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder_name)
    return Path(cache_dir) / f"{safe}.safetensors"


def embed_texts(
    texts: list[str],
    encoder_cfg: dict,
    cache_dir: str | Path | None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Embeddings ``[n, D]`` of ``texts``, encoding only those the cache does not hold (on
    ``device``; the embeddings come back on the CPU)."""
    encoder = load_encoder(
        encoder_cfg["name"],
        path=encoder_cfg["path"],
        allow_download=encoder_cfg["allow_download"],
        device=device,
    )
    if cache_dir is None:
        return encoder.encode_text(texts)
    cache = EmbeddingCache(cache_path(cache_dir, encoder.name), encoder.name)
    before = len(cache)
    out = cache.encode(encoder, texts)
    log.info("embedded %d texts (%d new in the cache)", len(texts), len(cache) - before)
    return out


def embed_class_prompts(
    classes: pd.DataFrame, encoder_cfg: dict, cache_dir, device: torch.device | str = "cpu"
) -> dict[str, Tensor]:
    """Name and description embeddings of every class, in class-id order (encoded on
    ``device``)."""
    names = classes["name"].astype(str).tolist()
    descriptions = classes["description"].astype(str).tolist()
    has_description = torch.tensor([bool(d.strip()) for d in descriptions])
    texts = names + [d if d.strip() else n for d, n in zip(descriptions, names, strict=True)]
    emb = embed_texts(texts, encoder_cfg, cache_dir, device)
    n = len(names)
    log.info(
        "%d classes, %d with a description, embedding dim %d",
        n,
        int(has_description.sum()),
        emb.shape[1],
    )
    return {"names": emb[:n], "descriptions": emb[n:], "has_description": has_description}


def save_embeddings(tensors: dict[str, Tensor], encoder_cfg: dict, path) -> None:
    name = canonical_encoder_name(encoder_cfg["name"], encoder_cfg["path"])
    save_tensors(path, tensors, metadata={"encoder": name})


def load_embeddings(path) -> dict[str, Tensor]:
    return load_tensors(path)


class EmbeddingCache:
    """Text embeddings of one encoder in a safetensors file, keyed by content.

    The file holds ``keys`` (uint8 ``[n, 32]``, the sha256 of ``encoder_name + "\\0" + text``) and
    ``embeddings`` (float32 ``[n, dim]``), with the encoder name and dim in its metadata.
    """

    FORMAT = "tina-embedding-cache-v1"

    def __init__(self, path: str | Path, encoder_name: str):
        self.path = Path(path)
        self.encoder_name = encoder_name
        self._row: dict[bytes, int] = {}
        self._embeddings = torch.zeros(0, 0)
        if self.path.is_file():
            self._load()

    def _load(self):
        metadata = read_metadata(self.path)
        cached_name = metadata.get("encoder_name")
        if cached_name != self.encoder_name or metadata.get("format") != self.FORMAT:
            raise ValueError(
                f"embedding cache {self.path} was written for encoder {cached_name!r} "
                f"(format {metadata.get('format')!r}), not {self.encoder_name!r}; delete it or "
                "give this encoder its own cache file"
            )
        tensors = load_tensors(self.path)
        self._embeddings = tensors["embeddings"].float()
        keys = tensors["keys"]
        self._row = {bytes(keys[i].tolist()): i for i in range(keys.shape[0])}

    def key(self, text: str) -> bytes:
        """The sha256 digest that identifies ``text`` under this encoder."""
        return hashlib.sha256(f"{self.encoder_name}\0{text}".encode()).digest()

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, text: str) -> bool:
        return self.key(text) in self._row

    def encode(
        self, encoder: PromptEncoder, texts: list[str], batch_size: int = 64
    ) -> torch.Tensor:
        """Embeddings ``[n, dim]`` of ``texts``; encodes (and saves) only those not yet cached."""
        if encoder.name != self.encoder_name:
            raise ValueError(
                f"embedding cache {self.path} belongs to encoder {self.encoder_name!r}, "
                f"not {encoder.name!r}"
            )
        texts = check_texts(texts)
        keys = [self.key(t) for t in texts]
        missing: dict[bytes, str] = {}  # unique uncached texts, in order of first appearance
        for key, text in zip(keys, texts, strict=True):
            if key not in self._row:
                missing.setdefault(key, text)
        if missing:
            embeddings = encoder.encode_text(list(missing.values()), batch_size=batch_size)
            self._add(list(missing), embeddings)
            self.save()
        log.info(
            "embedding cache %s: %d texts, %d newly encoded",
            self.path.name,
            len(texts),
            len(missing),
        )
        if not keys:
            return torch.zeros(0, encoder.dim)
        return self._embeddings[[self._row[k] for k in keys]].clone()

    def _add(self, keys: list[bytes], embeddings: torch.Tensor):
        if len(self._row) and embeddings.shape[1] != self._embeddings.shape[1]:
            raise ValueError(
                f"embedding cache {self.path} holds dim {self._embeddings.shape[1]}, "
                f"the encoder gives {embeddings.shape[1]}"
            )
        base = len(self._row)
        stored = self._embeddings if base else torch.zeros(0, embeddings.shape[1])
        self._embeddings = torch.cat([stored, embeddings.float().cpu()])
        self._row.update({k: base + i for i, k in enumerate(keys)})

    def save(self):
        """Write the cache atomically (a temporary file renamed into place)."""
        keys = sorted(self._row, key=self._row.get)
        key_tensor = torch.tensor([list(k) for k in keys], dtype=torch.uint8).reshape(-1, 32)
        metadata = {
            "format": self.FORMAT,
            "encoder_name": self.encoder_name,
            "dim": str(self._embeddings.shape[1]),
        }
        save_tensors(self.path, {"keys": key_tensor, "embeddings": self._embeddings}, metadata)


# --------------------------------------------------------------------------- image prompts
class ImageProjection(nn.Module):
    """MLP from image features to an encoder's text space; outputs unit vectors.

    Features are standardised with the mean and spread of the training features (stored as
    buffers). ``logit_scale`` is the learnable inverse temperature of the contrastive fit.
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 256, generator: torch.Generator | None = None
    ):
        super().__init__()
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, hidden
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        for layer in (self.net[0], self.net[2]):
            nn.init.normal_(layer.weight, std=layer.in_features**-0.5, generator=generator)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.float() - self.feature_mean) / self.feature_std
        return F.normalize(self.net(x), dim=-1)


def _check_fit_inputs(features, labels, class_text_emb, train_classes):
    if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"features must be [N, F] and labels [N], got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}"
        )
    n_classes = class_text_emb.shape[0]
    if not train_classes or min(train_classes) < 0 or max(train_classes) >= n_classes:
        raise ValueError(
            f"train_classes must be a non-empty list of class indices below {n_classes}"
        )


def fit_image_projection(
    features: torch.Tensor,
    labels: torch.Tensor,
    class_text_emb: torch.Tensor,
    train_classes: list[int],
    *,
    steps: int = 500,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    hidden: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[ImageProjection, list[dict]]:
    """Fit an :class:`ImageProjection` contrastively on the images of ``train_classes`` only.

    Each image's projection is pulled towards its class's text embedding and pushed from the
    other training classes' (InfoNCE over the training classes, learnable temperature). Images of
    other classes are dropped before anything is computed, so they cannot influence the fit.
    It trains on ``device`` (batches drawn on the CPU and moved). Returns the projection (in
    eval mode, on the CPU) and a log of ``step, loss, accuracy, temperature``.
    """
    _check_fit_inputs(features, labels, class_text_emb, train_classes)
    classes = torch.tensor(sorted(set(train_classes)))
    keep = torch.isin(labels, classes)
    if not keep.any():
        raise ValueError("no image belongs to a training class: nothing to fit the projection on")
    x = features[keep].float().to(device)
    target_index = torch.searchsorted(classes, labels[keep]).to(device)
    targets = F.normalize(class_text_emb[classes].float(), dim=-1).to(device)

    generator = torch.Generator().manual_seed(seed)
    projection = ImageProjection(x.shape[1], targets.shape[1], hidden, generator=generator)
    projection.to(device)
    projection.feature_mean.copy_(x.mean(0))
    projection.feature_std.copy_(x.std(0, unbiased=False).clamp(min=1e-6))
    optimizer = torch.optim.AdamW(projection.parameters(), lr=lr, weight_decay=1e-4)
    batch = min(batch_size, x.shape[0])
    record_every = max(1, steps // 20)
    history = []
    projection.train()
    for step in range(1, steps + 1):
        idx = torch.randint(x.shape[0], (batch,), generator=generator).to(device)
        scale = projection.logit_scale.exp().clamp(max=100.0)
        logits = scale * projection(x[idx]) @ targets.T
        loss = F.cross_entropy(logits, target_index[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % record_every == 0 or step == steps:
            accuracy = (logits.argmax(1) == target_index[idx]).float().mean().item()
            history.append(
                {
                    "step": step,
                    "loss": loss.item(),
                    "accuracy": accuracy,
                    "temperature": 1.0 / scale.item(),
                }
            )
    log.info(
        "image projection: %d images of %d training classes, loss %.3f, batch accuracy %.3f",
        x.shape[0],
        len(classes),
        history[-1]["loss"],
        history[-1]["accuracy"],
    )
    return projection.cpu().eval(), history


def save_projection(projection: ImageProjection, path: str | Path) -> None:
    """Write a projection's weights and shape to a safetensors file, atomically."""
    metadata = {
        "format": "tina-image-projection-v1",
        "in_dim": str(projection.in_dim),
        "out_dim": str(projection.out_dim),
        "hidden": str(projection.hidden),
    }
    save_tensors(path, projection.state_dict(), metadata)


def load_projection(path: str | Path) -> ImageProjection:
    """Read a projection written by :func:`save_projection` (in eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing image projection file: {path}")
    metadata = read_metadata(path)
    if metadata.get("format") != "tina-image-projection-v1":
        raise ValueError(f"{path} is not an image projection written by save_projection")
    projection = ImageProjection(
        int(metadata["in_dim"]), int(metadata["out_dim"]), int(metadata["hidden"])
    )
    projection.load_state_dict(load_tensors(path))
    return projection.eval()


def generic_features(
    generic: Tensor, spec_all: NetSpec, images_uint8: Tensor, device: torch.device | str = "cpu"
) -> Tensor:
    """Pooled features of the generic net's body (the image features MiniLM prompts use),
    computed on ``device`` and returned on the CPU."""
    body = split_body(generic, spec_all)[0].to(device)
    out = [
        features(body, to_float(images_uint8[i : i + 4096]).to(device), spec_all).cpu()
        for i in range(0, len(images_uint8), 4096)
    ]
    return torch.cat(out)


def fit_projection(
    dataset,
    split: pd.DataFrame,
    generic: Tensor,
    spec_all: NetSpec,
    name_emb: Tensor,
    steps: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> tuple[ImageProjection, list]:
    """Fit the image projection on the training images of the seen classes only, on
    ``device``."""
    seen = split.loc[split["seen"], "class_id"].astype(int).tolist()
    feats = generic_features(generic, spec_all, dataset.train_images, device)
    projection, history = fit_image_projection(
        feats, dataset.train_labels, name_emb, seen, steps=steps, seed=seed, device=device
    )
    if history:
        log.info(
            "image projection: final loss %.3f, train accuracy %.3f",
            history[-1]["loss"],
            history[-1]["accuracy"],
        )
    return projection, history


def embed_images(embed: ImageEmbedder, images_uint8: Tensor, chunk: int = 1024) -> Tensor:
    """Prompt embeddings ``[N, D]`` of every image, one at a time in chunks (no averaging)."""
    parts = [embed(images_uint8[i : i + chunk]).float() for i in range(0, len(images_uint8), chunk)]
    return torch.cat(parts)


def image_embedder(
    encoder: PromptEncoder,
    projection: Callable[[], ImageProjection],
    generic: Tensor,
    spec_all: NetSpec,
    device: torch.device | str = "cpu",
) -> ImageEmbedder:
    """The image-prompt route: class images (uint8) to prompts in the encoder's space (the
    image tower or the generic body runs on ``device``; prompts come back on the CPU).

    An encoder with an image tower (CLIP) encodes the images itself; for one without (MiniLM),
    ``projection()`` loads the fitted :class:`ImageProjection` (it is called only then), which
    maps the pooled features of the generic net's body (``generic``, flat over ``spec_all``)
    into the encoder's text space.
    """
    if encoder.has_image_tower:

        @torch.inference_mode()
        def tower(images_uint8: Tensor) -> Tensor:
            return encoder.encode_images(images_uint8)

        return tower
    fitted = projection()

    @torch.inference_mode()
    def projected(images_uint8: Tensor) -> Tensor:
        return fitted(generic_features(generic, spec_all, images_uint8, device))

    return projected


def load_image_embedder(
    encoder: dict,
    projection_path: str | Path,
    generic: Tensor,
    spec_all: NetSpec,
    prompt_dim: int,
    device: torch.device | str = "cpu",
) -> ImageEmbedder:
    """The run's image-prompt route (:func:`image_embedder`, on ``device``) from its files: the
    ``encoder`` config section (loaded only if its image tower is used) and, for an encoder
    without one, the fitted projection at ``projection_path``, which must map to ``prompt_dim``."""
    prompt_encoder = LazyEncoder(
        encoder["name"],
        path=encoder["path"],
        allow_download=encoder["allow_download"],
        device=device,
    )

    def projection() -> ImageProjection:
        fitted = load_projection(projection_path)
        if fitted.out_dim != prompt_dim:
            raise ValueError(
                f"image projection {projection_path} maps to dim {fitted.out_dim} but the "
                f"prompts have dim {prompt_dim}: refit the projection for this encoder"
            )
        return fitted

    return image_embedder(prompt_encoder, projection, generic, spec_all, device)
