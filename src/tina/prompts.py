"""Prompt embeddings of every class: names, descriptions and (through images) image prompts.

The ``embed_prompts`` stage writes one file with, per class, the embedding of its name and of
its description (WordNet gloss; classes without one are flagged and left out of description
experiments). Image prompts need an image path into the text space: CLIP has one; MiniLM gets a
projection from the generic net's pooled features, fitted on the training classes only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from tina.encoders import (
    EmbeddingCache,
    ImageProjection,
    canonical_encoder_name,
    fit_image_projection,
    load_encoder,
    load_projection,
    save_projection,
)
from tina.io import load_tensors, save_tensors
from tina.nets import NetSpec, features, split_body

log = logging.getLogger("tina.prompts")


def cache_path(cache_dir: str | Path, encoder_name: str) -> Path:
    """One content-keyed cache file per encoder under ``cache_dir``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder_name)
    return Path(cache_dir) / f"{safe}.safetensors"


def embed_texts(texts: list[str], encoder_cfg: dict, cache_dir: str | Path | None) -> Tensor:
    """Embeddings ``[n, D]`` of ``texts``, encoding only those the cache does not hold."""
    encoder = load_encoder(
        encoder_cfg["name"], path=encoder_cfg["path"], allow_download=encoder_cfg["allow_download"]
    )
    if cache_dir is None:
        return encoder.encode_text(texts)
    cache = EmbeddingCache(cache_path(cache_dir, encoder.name), encoder.name)
    before = len(cache)
    out = cache.encode(encoder, texts)
    log.info("embedded %d texts (%d new in the cache)", len(texts), len(cache) - before)
    return out


def embed_class_prompts(classes: pd.DataFrame, encoder_cfg: dict, cache_dir) -> dict[str, Tensor]:
    """Name and description embeddings of every class, in class-id order."""
    names = classes["name"].astype(str).tolist()
    descriptions = classes["description"].astype(str).tolist()
    has_description = torch.tensor([bool(d.strip()) for d in descriptions])
    texts = names + [d if d.strip() else n for d, n in zip(descriptions, names, strict=True)]
    emb = embed_texts(texts, encoder_cfg, cache_dir)
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


def generic_features(generic: Tensor, spec_all: NetSpec, images_uint8: Tensor) -> Tensor:
    """Pooled features of the generic net's body (the image features MiniLM prompts use)."""
    from tina.data import to_float

    body = split_body(generic, spec_all)[0]
    out = [
        features(body, to_float(images_uint8[i : i + 4096]), spec_all)
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
) -> tuple[ImageProjection, list]:
    """Fit the image projection on the training images of the seen classes only."""
    seen = split.loc[split["seen"], "class_id"].astype(int).tolist()
    feats = generic_features(generic, spec_all, dataset.train_images)
    projection, history = fit_image_projection(
        feats, dataset.train_labels, name_emb, seen, steps=steps, seed=seed
    )
    if history:
        log.info(
            "image projection: final loss %.3f, train accuracy %.3f",
            history[-1]["loss"],
            history[-1]["accuracy"],
        )
    return projection, history


__all__ = [
    "embed_class_prompts",
    "embed_texts",
    "fit_projection",
    "generic_features",
    "load_embeddings",
    "load_projection",
    "save_embeddings",
    "save_projection",
]
