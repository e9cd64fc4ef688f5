"""Flat parameter layout, class permutation and batched forward of the generated nets."""

import pytest
import torch

from tina.nets import (
    ARCHS,
    CNN,
    NetSpec,
    features,
    flatten,
    forward,
    init_params,
    permute_classes,
    shared_body,
    split_body,
    task_accuracy,
    unflatten,
)

EXPECTED_PARAMS = {"cnn5k": 5418, "cnn10k": 9822, "cnn33k": 33862, "cnn76k": 76938}


def _nets(spec: NetSpec, n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([init_params(spec, gen) for _ in range(n)])


def _images(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_param_counts_and_round_trip(arch):
    spec = NetSpec(arch, 10)
    assert spec.num_params == EXPECTED_PARAMS[arch]
    assert [name for name, _ in spec.param_shapes()] == [
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
        "head.weight",
        "head.bias",
    ]
    flat = _nets(spec, 6).reshape(2, 3, -1)  # leading dims are kept
    named = unflatten(flat, spec)
    assert named["head.weight"].shape == (2, 3, 10, ARCHS[arch][1])
    assert torch.equal(flatten(named), flat)
    module = CNN(spec)
    assert torch.equal(CNN.from_flat(module.to_flat(), spec).to_flat(), module.to_flat())


def test_head_only_layout_and_json():
    spec = NetSpec("cnn10k", 7, head_only=True)
    assert spec.num_params == 7 * (44 + 1)
    assert [name for name, _ in spec.param_shapes()] == ["head.weight", "head.bias"]
    flat = torch.arange(spec.num_params, dtype=torch.float32)
    assert torch.equal(flatten(unflatten(flat, spec)), flat)
    assert NetSpec.from_json(spec.to_json()) == spec
    assert NetSpec.from_json(NetSpec("cnn5k", 10).to_json()) == NetSpec("cnn5k", 10)


@pytest.mark.parametrize("head_only", [False, True])
def test_head_rows_point_at_weight_row_and_bias(head_only):
    spec = NetSpec("cnn5k", 4, head_only=head_only)
    flat = torch.randn(spec.num_params)
    named = unflatten(flat, spec)
    rows = spec.head_rows()
    assert rows.shape == (4, 33)
    for slot in range(4):
        assert torch.equal(flat[rows[slot, :-1]], named["head.weight"][slot])
        assert flat[rows[slot, -1]] == named["head.bias"][slot]


def test_permute_classes_permutes_logits_and_predictions():
    spec = NetSpec("cnn5k", 5)
    flat, images = _nets(spec, 2), _images(2, 8)
    perm = torch.tensor([3, 0, 4, 1, 2])
    permuted = permute_classes(flat, perm, spec)
    before, after = forward(flat, images, spec), forward(permuted, images, spec)
    assert torch.allclose(after, before[..., perm], atol=1e-6)
    assert torch.equal(perm[after.argmax(-1)], before.argmax(-1))
    body, _ = split_body(flat, spec)
    assert torch.equal(split_body(permuted, spec)[0], body)  # the body is untouched
    with pytest.raises(ValueError, match="permutation"):
        permute_classes(flat, torch.tensor([0, 0, 1, 2, 3]), spec)


@pytest.mark.parametrize("arch", ["cnn5k", "cnn33k"])
def test_batched_forward_equals_single_nets(arch):
    spec = NetSpec(arch, 10)
    flat, images = _nets(spec, 3), _images(3, 5)
    logits = forward(flat, images, spec)
    assert logits.shape == (3, 5, 10)
    for t in range(3):
        single = CNN.from_flat(flat[t], spec)(images[t])
        assert torch.allclose(logits[t], single, atol=1e-5)
        assert torch.allclose(
            forward(flat[t : t + 1], images[t : t + 1], spec)[0], single, atol=1e-5
        )


def test_grouped_net_is_bit_identical_whatever_shares_its_batch():
    spec = NetSpec("cnn5k", 10)
    flat, images = _nets(spec, 8), _images(8, 6)

    def net0_grad(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        params = flat[:n].clone().requires_grad_()
        logits = forward(params, images[:n], spec)
        logits.square().sum().backward()
        return logits[0].detach(), params.grad[0]

    logits2, grad2 = net0_grad(2)
    for n in (3, 8):
        logits, grad = net0_grad(n)
        assert torch.equal(logits, logits2) and torch.equal(grad, grad2)


def test_head_only_forward_uses_frozen_body():
    full = NetSpec("cnn5k", 10)
    head_spec = full.with_classes(10, head_only=True)
    flat, images = _nets(full, 2), _images(2, 4)
    body, heads = split_body(flat, full)
    logits = forward(heads, images, head_spec, body=body[0])
    for t in range(2):
        net = CNN.from_flat(torch.cat([body[0], heads[t]]), full)
        assert torch.allclose(logits[t], net(images[t]), atol=1e-5)
    assert torch.allclose(features(body[0], images[0], full), net.features(images[0]), atol=1e-6)
    with pytest.raises(ValueError, match="body="):
        forward(heads, images, head_spec)


def test_nets_that_share_a_body_score_from_features_computed_once(monkeypatch):
    """Scoring nets with one body (selection, imprinting) computes each image's features once;
    the accuracies equal those of the batched path that runs every net on every image."""
    spec = NetSpec("cnn5k", 4)
    gen = torch.Generator().manual_seed(3)
    flat = _nets(spec, 1).repeat(6, 1)
    flat[:, spec.body_size :] = torch.randn(6, spec.num_params - spec.body_size, generator=gen)
    images = _images(60)
    labels = torch.arange(12).repeat_interleave(5)
    classes = torch.stack([torch.randperm(12, generator=gen)[:4] for _ in range(6)])
    classes[0, 3] = -1  # a padded task
    assert torch.equal(shared_body(flat, spec), flat[0, : spec.body_size])
    once = task_accuracy(flat, classes, images, labels, spec, None)
    monkeypatch.setattr("tina.nets.shared_body", lambda flat, spec: None)
    batched = task_accuracy(flat, classes, images, labels, spec, None)
    assert torch.equal(once, batched) and once.std() > 0
    other = flat.clone()
    other[1, 0] += 1e-3  # one net's own body: no shared body
    assert shared_body(other, spec) is None


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown net arch 'cnn1k'"):
        NetSpec("cnn1k", 10)
    spec = NetSpec("cnn5k", 10)
    with pytest.raises(ValueError, match="needs 5418"):
        unflatten(torch.zeros(5000), spec)
    with pytest.raises(ValueError, match="same T"):
        forward(torch.zeros(2, 5418), _images(3, 1), spec)
    with pytest.raises(ValueError, match="unknown parameter names"):
        flatten({"conv3.weight": torch.zeros(1)})
