"""Tests of the prompt encoders, the embedding cache, the image projection and the image-prompt
route (the last three are :mod:`tina.prompts`)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tokenizers import pre_tokenizers

from tina import encoders
from tina.encoders import (
    EncoderNotFoundError,
    LazyEncoder,
    PromptEncoder,
    check_encoder,
    load_encoder,
)
from tina.nets import NetSpec, init_params
from tina.prompts import (
    EmbeddingCache,
    fit_image_projection,
    generic_features,
    image_embedder,
    load_projection,
    save_projection,
)

TINY_WORDS = ["a", "photo", "of", "dog", "cat", "red", "apple", "face"]


# ----------------------------------------------------------------------------------------------
# Fixtures: the real MiniLM and a tiny random CLIP saved like real weights


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models run fastest on one thread on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("minilm")


def write_tiny_clip_tokenizer(folder: Path) -> dict[str, int]:
    """A byte-level BPE vocabulary (every byte, plus merges for a few words) as CLIP stores it."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {char: i for i, char in enumerate(alphabet)}
    vocab.update({f"{char}</w>": len(alphabet) + i for i, char in enumerate(alphabet)})
    merges: list[str] = []
    for word in TINY_WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            rule = f"{merged} {piece}"
            if rule not in merges:
                merges.append(rule)
            merged += piece
            vocab.setdefault(merged, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab


def save_tiny_clip(
    folder: Path,
    projection_dim: int = 16,
    image_size: int = 32,
    patch_size: int = 8,
    text_positions: int = 24,
) -> Path:
    """A randomly initialised small CLIPModel and its tokenizer, saved with save_pretrained.

    The towers are always tiny; the sizes a caller sees (embedding width, input image size, text
    length) are arguments: ViT-B/32's are ``projection_dim=512, image_size=224, patch_size=32,
    text_positions=77``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tiny_clip_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    special = {
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    small = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
    config = CLIPConfig(
        text_config={
            **small,
            **special,
            "vocab_size": len(vocab),
            "max_position_embeddings": text_positions,
        },
        vision_config={**small, "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng():  # transformers initialises weights from the global generator
        torch.manual_seed(0)
        model = CLIPModel(config)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    crop = {"height": image_size, "width": image_size}
    processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=crop)
    processor.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_dir):
    return load_encoder("clip", path=tiny_clip_dir)


@pytest.fixture
def no_network(monkeypatch):
    """Make any attempt to open a network connection fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache directory in place of the user's."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def unit_rows(x: torch.Tensor) -> bool:
    return torch.allclose(x.norm(dim=1), torch.ones(x.shape[0]), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# MiniLM


def test_minilm_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    texts = ["red apple", "grinning face with smiling eyes", "a dog " * 200, "x"]
    reference = SentenceTransformer(str(minilm.folder), device="cpu").encode(
        texts, convert_to_tensor=True
    )
    ours = minilm.encode_text(texts)
    assert isinstance(minilm, PromptEncoder)
    assert (minilm.name, minilm.dim, minilm.has_image_tower) == ("minilm", 384, False)
    assert ours.shape == (4, 384) and ours.dtype == torch.float32 and unit_rows(ours)
    cosine = (ours * F.normalize(reference.float(), dim=-1)).sum(1)
    assert cosine.min().item() > 0.999


def test_minilm_is_semantic_and_batch_independent(minilm):
    texts = ["dog", "puppy", "airplane", "a long description of a small domestic cat", "jet"]
    whole = minilm.encode_text(texts)
    assert torch.allclose(minilm.encode_text(texts, batch_size=2), whole, atol=1e-5)
    similarity = whole @ whole.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    assert similarity[2, 4] > similarity[2, 1]
    assert minilm.encode_text([]).shape == (0, 384)


def test_minilm_has_no_image_tower(minilm):
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(NotImplementedError, match="no image tower"):
        minilm.encode_images(images)


# ----------------------------------------------------------------------------------------------
# CLIP (tiny random model through the same from_pretrained path as real weights)


def test_clip_text_and_images(tiny_clip, tiny_clip_dir):
    assert isinstance(tiny_clip, PromptEncoder)
    assert tiny_clip.name == f"clip:{tiny_clip_dir.resolve()}"
    assert encoders.canonical_encoder_name("clip", tiny_clip_dir) == tiny_clip.name
    assert (tiny_clip.dim, tiny_clip.has_image_tower) == (16, True)
    texts = ["a photo of a dog", "a photo of a cat", "red apple " * 40]
    text = tiny_clip.encode_text(texts)
    assert text.shape == (3, 16) and text.dtype == torch.float32 and unit_rows(text)
    assert torch.equal(tiny_clip.encode_text(texts), text)
    assert torch.allclose(tiny_clip.encode_text(texts, batch_size=1), text, atol=1e-5)
    assert (text[0] - text[1]).abs().max() > 1e-3

    generator = torch.Generator().manual_seed(1)
    rgb = torch.randint(0, 256, (5, 3, 40, 48), dtype=torch.uint8, generator=generator)
    image = tiny_clip.encode_images(rgb, batch_size=2)
    assert image.shape == (5, 16) and unit_rows(image)
    gray = tiny_clip.encode_images(rgb[:, :1])
    assert torch.allclose(gray, tiny_clip.encode_images(rgb[:, :1].expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="uint8"):
        tiny_clip.encode_images(rgb.float())


def test_clip_reload_is_deterministic_and_offline(tiny_clip, tiny_clip_dir, no_network):
    again = load_encoder("clip", path=tiny_clip_dir)
    texts = ["a photo of a face", "cat"]
    assert torch.equal(again.encode_text(texts), tiny_clip.encode_text(texts))


def test_clip_preprocessing_matches_clip_statistics(tiny_clip):
    colour = torch.tensor([51, 128, 204], dtype=torch.uint8)
    image = colour.view(1, 3, 1, 1).expand(2, 3, 20, 30).contiguous()
    pixels = tiny_clip.preprocess(image)
    assert pixels.shape == (2, 3, 32, 32)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])  # OpenAI CLIP's statistics
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    assert torch.allclose(pixels.mean((0, 2, 3)), (colour / 255 - mean) / std, atol=1e-3)
    assert pixels.std((2, 3)).max() < 1e-3


def test_clip_from_hf_cache_without_network(tiny_clip, tiny_clip_dir, hf_cache, no_network):
    """A cached snapshot loads offline; without preprocessor_config.json CLIP's default applies."""
    snapshot = hf_cache / "models--tina-test--tiny-clip" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_clip_dir, snapshot, ignore=shutil.ignore_patterns("preprocessor*"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    check_encoder("clip:tina-test/tiny-clip")
    encoder = load_encoder("clip:tina-test/tiny-clip")
    assert encoder.name == "clip:tina-test/tiny-clip" and encoder.dim == 16
    images = torch.arange(2 * 3 * 24 * 40).reshape(2, 3, 24, 40).remainder(256).to(torch.uint8)
    assert torch.equal(encoder.encode_images(images), tiny_clip.encode_images(images))


def test_clip_missing_from_cache_fails_fast(hf_cache, no_network):
    for call in (check_encoder, load_encoder):
        with pytest.raises(EncoderNotFoundError) as error:
            call("clip")
        message = str(error.value)
        for part in (
            "openai/clip-vit-base-patch32",
            str(hf_cache),
            "huggingface-cli download openai/clip-vit-base-patch32",
            "encoder.path",
            "encoder.allow_download",
        ):
            assert part in message


def test_clip_incomplete_cache_names_missing_file(tiny_clip_dir, hf_cache):
    snapshot = hf_cache / "models--tina-test--tiny-clip" / "snapshots" / ("1" * 40)
    shutil.copytree(tiny_clip_dir, snapshot, ignore=shutil.ignore_patterns("*.safetensors"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("1" * 40)
    with pytest.raises(EncoderNotFoundError, match=r"snapshot .* lacks model\.safetensors"):
        check_encoder("clip:tina-test/tiny-clip")


def test_clip_missing_or_incomplete_folder(tiny_clip_dir, tmp_path):
    with pytest.raises(EncoderNotFoundError, match="does not exist.*encoder.path"):
        load_encoder("clip", path=tmp_path / "nowhere")
    partial = shutil.copytree(tiny_clip_dir, tmp_path / "partial")
    (partial / "model.safetensors").unlink()
    with pytest.raises(EncoderNotFoundError, match="lacks model.safetensors"):
        check_encoder("clip", path=partial)


def test_clip_empty_tokenizer_is_an_error(tiny_clip_dir, tmp_path):
    broken = shutil.copytree(tiny_clip_dir, tmp_path / "broken")
    (broken / "tokenizer.json").unlink()
    (broken / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (broken / "merges.txt").write_text("#version: 0.2\n")
    for call in (check_encoder, load_encoder):
        with pytest.raises(EncoderNotFoundError, match="tokenizer .* is empty or broken"):
            call("clip", path=broken)


def test_unknown_encoder_name():
    with pytest.raises(ValueError, match="unknown prompt encoder 'bert'.*minilm"):
        load_encoder("bert")


# ----------------------------------------------------------------------------------------------
# Embedding cache


class CountingEncoder:
    """A real encoder that records which texts it was asked to encode."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.name, self.dim = encoder.name, encoder.dim
        self.has_image_tower = encoder.has_image_tower
        self.calls: list[list[str]] = []

    def encode_text(self, texts, batch_size=64):
        self.calls.append(list(texts))
        return self.encoder.encode_text(texts, batch_size)


def test_embedding_cache_encodes_each_text_once(tiny_clip, tmp_path):
    path = tmp_path / "cache" / "embeddings.safetensors"
    counting = CountingEncoder(tiny_clip)
    cache = EmbeddingCache(path, tiny_clip.name)
    first = cache.encode(counting, ["dog", "cat", "dog"])
    assert counting.calls == [["dog", "cat"]]
    assert torch.equal(first[0], first[2])
    assert torch.allclose(first, tiny_clip.encode_text(["dog", "cat", "dog"]), atol=1e-6)
    second = cache.encode(counting, ["cat", "red apple"])
    assert counting.calls[-1] == ["red apple"] and len(cache) == 3
    assert torch.equal(second[0], first[1])
    assert [p.name for p in path.parent.iterdir()] == ["embeddings.safetensors"]

    reopened = EmbeddingCache(path, tiny_clip.name)
    recount = CountingEncoder(tiny_clip)
    expected = torch.stack([second[1], first[0]])
    assert torch.equal(reopened.encode(recount, ["red apple", "dog"]), expected)
    assert recount.calls == [] and "dog" in reopened and "bird" not in reopened


def test_embedding_cache_refuses_another_encoder(tiny_clip, minilm, tmp_path):
    path = tmp_path / "embeddings.safetensors"
    EmbeddingCache(path, tiny_clip.name).encode(tiny_clip, ["dog"])
    with pytest.raises(ValueError, match="written for encoder"):
        EmbeddingCache(path, "minilm")
    with pytest.raises(ValueError, match="belongs to encoder"):
        EmbeddingCache(path, tiny_clip.name).encode(minilm, ["dog"])


# ----------------------------------------------------------------------------------------------
# Image projection


def synthetic_images(n_classes=12, per_class=40, feature_dim=24, text_dim=16, seed=0):
    """Features that depend linearly on the class embedding, plus noise; 3/4 train, 1/4 held out."""
    generator = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(n_classes, text_dim, generator=generator), dim=-1)
    mixing = torch.randn(text_dim, feature_dim, generator=generator)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    noise = 0.3 * torch.randn(len(labels), feature_dim, generator=generator)
    features = text[labels] @ mixing + noise
    held_out = torch.arange(len(labels)) % 4 == 0
    return features, labels, text, held_out


def nearest_class_accuracy(projection, features, labels, text, classes):
    candidates = torch.tensor(classes)
    with torch.no_grad():
        scores = projection(features) @ text[candidates].T
    return (candidates[scores.argmax(1)] == labels).float().mean().item()


def test_projection_maps_images_to_their_class(tmp_path):
    features, labels, text, held_out = synthetic_images()
    train_classes = list(range(8))
    projection, history = fit_image_projection(
        features[~held_out], labels[~held_out], text, train_classes, steps=100, seed=0
    )
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["step"] == 100
    test = held_out & (labels < 8)
    accuracy = nearest_class_accuracy(projection, features[test], labels[test], text, train_classes)
    assert accuracy > 0.8  # chance: 1/8
    out = projection(features[:5])
    assert out.shape == (5, 16) and unit_rows(out.detach())

    path = tmp_path / "projection.safetensors"
    save_projection(projection, path)
    loaded = load_projection(path)
    assert torch.equal(loaded(features[:7]), projection(features[:7]))


def test_projection_ignores_classes_outside_training():
    features, labels, text, _ = synthetic_images()
    train_classes = [0, 2, 3, 5, 7]
    changed = features.clone()
    outside = ~torch.isin(labels, torch.tensor(train_classes))
    generator = torch.Generator().manual_seed(9)
    changed[outside] = 50 * torch.randn(int(outside.sum()), features.shape[1], generator=generator)
    first, _ = fit_image_projection(features, labels, text, train_classes, steps=20, seed=3)
    second, _ = fit_image_projection(changed, labels, text, train_classes, steps=20, seed=3)
    other_seed, _ = fit_image_projection(features, labels, text, train_classes, steps=20, seed=4)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name
    assert not torch.equal(first.net[0].weight, other_seed.net[0].weight)


def toy_generic(classes: int = 3) -> tuple[torch.Tensor, NetSpec]:
    spec_all = NetSpec("cnn5k", classes, head_only=False)
    return init_params(spec_all, torch.Generator().manual_seed(0)), spec_all


def test_image_route_projects_generic_features_for_minilm(minilm):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=generator)
    generic, spec_all = toy_generic()
    features = generic_features(generic, spec_all, images)
    labels = torch.arange(6) % 3
    names = minilm.encode_text(["dog", "cat", "apple"])
    projection, _ = fit_image_projection(features, labels, names, [0, 1, 2], steps=5)
    embed = image_embedder(minilm, lambda: projection, generic, spec_all)
    prompts = embed(images)
    assert prompts.shape == (6, 384) and unit_rows(prompts)
    assert torch.equal(prompts, projection(features))  # the projected generic features
    with pytest.raises(ValueError, match="train_classes"):
        fit_image_projection(features, labels, names, [3])


def test_image_route_takes_the_image_tower_without_a_projection(tiny_clip):
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8, generator=generator)

    def no_projection():
        raise AssertionError("an encoder with an image tower needs no projection")

    embed = image_embedder(tiny_clip, no_projection, *toy_generic())
    assert torch.equal(embed(images), tiny_clip.encode_images(images))


def test_lazy_encoder_knows_its_route_before_loading(tiny_clip_dir):
    minilm = LazyEncoder("minilm")
    assert (minilm.name, minilm.has_image_tower) == ("minilm", False)
    clip = LazyEncoder("clip", path=tiny_clip_dir)
    assert clip.has_image_tower and clip.name.startswith("clip:")
    assert "encoder" not in vars(minilm) and "encoder" not in vars(clip)  # nothing loaded yet
    assert clip.dim == 16 and clip.encode_text(["dog"]).shape == (1, 16)
    assert "encoder" in vars(clip)
