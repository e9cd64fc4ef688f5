"""What each stage of a config costs, counted on the real modules.

For every stage that trains or runs a network (the generic model, the p-model zoo, Tina, the
hypernetwork baseline, the sampling of each experiment, each scaling point) :func:`stage_costs`
gives:

- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` around one step of the real module at the
  configured batch (:func:`tina.nets.forward` for the CNNs, the :class:`tina.model.TinaTransformer`
  of :func:`tina.sampling.build_model` for Tina and the hypernetwork), times the steps. The step
  runs on the meta device, so a 650M-parameter Tina is counted in a second and no memory;
- parameters of the trained (or sampled) module;
- peak memory: weights (fp32, plus their bf16/fp16 copies under autocast), gradients, the
  optimizer's two Adam moments, the EMA copy, and activations: the elements the step saves
  for its backward pass (``torch.autograd.graph.saved_tensors_hooks`` on the meta device; for
  sampling, which saves nothing, three times the largest tensor one operation writes), at 2
  bytes in bf16/fp16 and 4 in fp32;
- time on one GPU (:data:`GPU`, at :data:`UTILISATION` of its dense peak in the stage's
  precision) and on one CPU core (at the FLOP/s of :mod:`tina.cost_check`'s measured probes).

Stages above :data:`FLAG_GPU_HOURS` GPU-hours or :data:`FLAG_MEMORY_GB` GB are flagged. Left out,
as small next to what is counted: batch drawing, the prompt encoders, the image projection, the
ridge and retrieval baselines and the scoring of generated nets (a 5K CNN's forward pass on a
task's test images is under 1% of the Tina passes that sample it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop

from tina.config import KNOWN_CLASS_COUNTS
from tina.nets import NetSpec, forward
from tina.sampling import TinaConfig, build_model

META = torch.device("meta")
PROMPT_DIMS = {"minilm": 384, "clip": 512}
"""Prompt embedding size per encoder (all-MiniLM-L6-v2; CLIP ViT-B/32's projection)."""
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
ADAM_STATES = 2  # Adam and AdamW keep two moments per parameter


@dataclass(frozen=True)
class Gpu:
    """A GPU by its dense peak FLOP/s (tensor cores in bf16/fp16; plain fp32) and memory."""

    name: str
    tflops: dict[str, float]
    memory_gb: float


GPU = Gpu("H100 SXM", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}, 80.0)
UTILISATION = 0.4
FLAG_GPU_HOURS = 24.0
FLAG_MEMORY_GB = 80.0


@dataclass(frozen=True)
class StageCost:
    """One stage: its FLOPs in all, parameters, memory parts (bytes) and how it was counted."""

    stage: str
    work: str  # steps x batch (what the FLOPs multiply)
    flops: float
    params: int
    memory: dict[str, float]
    precision: str = "fp32"
    kind: str = "transformer"  # which CPU throughput applies: "cnn" or "transformer"
    jobs: int = 1  # jobs that share the FLOPs (zoo shards); memory is one job's

    @property
    def peak_bytes(self) -> float:
        return sum(self.memory.values())

    def gpu_hours(self, gpu: Gpu = GPU, utilisation: float = UTILISATION) -> float:
        return self.flops / (gpu.tflops[self.precision] * 1e12 * utilisation) / 3600

    def cpu_hours(self, throughput: dict[str, float]) -> float:
        """Hours on one core at ``throughput[kind]`` FLOP/s (measured, fp32)."""
        return self.flops / throughput[self.kind] / 3600

    def flags(self) -> list[str]:
        out = []
        if self.gpu_hours() > FLAG_GPU_HOURS:
            out.append(f"> {FLAG_GPU_HOURS:g} GPU-h")
        if self.peak_bytes > FLAG_MEMORY_GB * 1e9:
            out.append(f"> {FLAG_MEMORY_GB:g} GB")
        return out


# --------------------------------------------------------------------------- counting
@dataclass
class StepCount:
    """FLOPs of one step and the activation elements it keeps (saved for backward, or for a
    no-grad pass three times its largest single output)."""

    flops: float
    activations: float


def _conv_backward_flop(
    grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
    output_padding, groups, output_mask, out_shape, **kwargs,
) -> int:  # fmt: skip
    """torch's count of a convolution's backward pass with the weight gradient divided by
    ``groups``: torch counts a grouped convolution's weight gradient as if every group read
    every input channel (T times too much for the zoo's T nets as one grouped convolution)."""
    args = (grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed)
    args += (output_padding, groups)
    grad_input = conv_backward_flop(*args, [output_mask[0], False], out_val=out_shape)
    grad_weight = conv_backward_flop(*args, [False, output_mask[1]], out_val=out_shape)
    return grad_input + grad_weight // groups


FLOP_FORMULAS = {torch.ops.aten.convolution_backward: _conv_backward_flop}


class _LargestOutput(TorchDispatchMode):
    """Records the largest number of elements one operation writes."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, tuple | list) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return out


def count(step: Callable[[], None], params: list[torch.Tensor], backward: bool) -> StepCount:
    """FLOPs and activation elements of ``step()`` (on meta tensors); ``params`` are not
    counted as activations when the step saves them for backward."""
    own = {id(p) for p in params}
    saved = []

    def pack(tensor: torch.Tensor):
        if id(tensor) not in own and id(tensor._base) not in own:
            saved.append(tensor.numel())
        return tensor

    largest = _LargestOutput()
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        if backward:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                step()
        else:
            with torch.no_grad(), largest:
                step()
    activations = sum(saved) if backward else 3 * largest.largest
    return StepCount(float(counter.get_total_flops()), float(activations))


@cache
def cnn_step(spec: NetSpec, nets: int, batch: int, image_size: int) -> StepCount:
    """One training step of ``nets`` CNNs on ``batch`` images each (:func:`tina.nets.forward`,
    the grouped convolution that the generic model and the zoo train with)."""
    flat = torch.zeros(nets, spec.num_params, device=META, requires_grad=True)
    images = torch.zeros(nets, batch, 3, image_size, image_size, device=META)
    labels = torch.zeros(nets * batch, dtype=torch.long, device=META)

    def step():
        logits = forward(flat, images, spec)
        F.cross_entropy(logits.flatten(0, 1), labels).backward()

    return count(step, [flat], backward=True)


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Modules built in this block get their parameters on the meta device (no memory, no
    initialisation) while buffers stay real: Tina's index buffers come from its layout."""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None:
            param = nn.Parameter(param.to(META), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


@dataclass(frozen=True)
class TinaShape:
    """What fixes Tina's transformer (:func:`tina.sampling.build_model`) and so its cost."""

    spec: NetSpec
    prompt_dim: int
    width: int
    depth: int
    heads: int
    chunk_size: int
    residual: bool

    @classmethod
    def of(cls, spec: NetSpec, prompt_dim: int, cfg: TinaConfig) -> TinaShape:
        return cls(spec, prompt_dim, cfg.width, cfg.depth, cfg.heads, cfg.chunk_size, cfg.residual)

    def tina_config(self) -> TinaConfig:
        return TinaConfig(
            width=self.width, depth=self.depth, heads=self.heads, chunk_size=self.chunk_size,
            residual=self.residual,
        )  # fmt: skip

    def model(self) -> nn.Module:
        """The transformer as training builds it, its parameters on the meta device."""
        with _parameters_on_meta():
            model = build_model(self.spec, self.prompt_dim, self.tina_config())
        return model.to(META)


@cache
def tina_params(shape: TinaShape) -> int:
    return sum(p.numel() for p in shape.model().parameters())


@cache
def tina_step(shape: TinaShape, batch: int, backward: bool) -> StepCount:
    """One pass of Tina on ``batch`` prompts: forward, x0 loss and backward when ``backward``,
    else a sampling step."""
    model = shape.model()
    p, k = model.layout.P, model.layout.k
    x = torch.zeros(batch, p, device=META)
    t = torch.zeros(batch, dtype=torch.long, device=META)
    prompts = torch.zeros(batch, k, model.prompt_dim, device=META)
    mask = torch.ones(batch, k, dtype=torch.bool, device=META)
    base = x if model.use_base else None

    def step():
        out = model(x, t, prompts, mask, base)
        if backward:
            ((out - x) ** 2).mean().backward()

    return count(step, list(model.parameters()), backward)


def per_prompt_pass(shape: TinaShape) -> StepCount:
    """FLOPs and activations of one sampling pass per prompt (both grow linearly with the
    batch; counted at a batch of 8)."""
    step = tina_step(shape, 8, backward=False)
    return StepCount(step.flops / 8, step.activations / 8)


# --------------------------------------------------------------------------- one config
@dataclass
class Sizes:
    """What the stages of a config are made of, read from the (validated) config."""

    config: dict
    n_classes: int
    prompt_dim: int
    tasks: dict[str, int] = field(init=False)

    def __post_init__(self):
        t = self.config["tasks"]
        self.tasks = {
            "train": t["n_train"],
            "val": t["n_val"],
            "test_id": t["n_test_id"],
            "test_ood": t["n_test_ood"] * len(t["ood_unseen"]),
            "test_kway": t["n_kway"] * len(t["kway"]),
        }

    @classmethod
    def of(cls, config: dict) -> Sizes:
        data, encoder = config["data"], config["encoder"]["name"]
        n = KNOWN_CLASS_COUNTS.get(data["dataset"]) or data["max_classes"]
        if n is None:
            raise ValueError(f"the class count of {data['dataset']} is unknown: set max_classes")
        n = min(n, data["max_classes"] or n)
        return cls(config, n, PROMPT_DIMS[encoder.split(":")[0]])

    def spec(self, arch: str | None = None, head_only: bool = False) -> NetSpec:
        """The net ``arch`` (default: the config's) with k head rows; ``head_only``: its head."""
        net = self.config["net"]
        return NetSpec(arch or net["arch"], self.config["tasks"]["k"], head_only)

    def tina_cfg(self, **changes) -> TinaConfig:
        return TinaConfig.from_config({**self.config["tina"], **changes})

    def shape(self, arch: str | None = None, **changes) -> TinaShape:
        """Tina generating the config's nets (only their heads under ``net.head_only``)."""
        spec = self.spec(arch, self.config["net"]["head_only"])
        return TinaShape.of(spec, self.prompt_dim, self.tina_cfg(**changes))


def _memory(params: int, activations: float, precision: str, *, train: bool, ema: bool):
    """Memory parts in bytes: fp32 weights (and their autocast copies), gradients, Adam
    moments and the buffer of its step (torch's multi-tensor Adam holds the square roots of the
    second moments of every parameter at once), the EMA copy, activations in ``precision``."""
    low = BYTES[precision] if precision != "fp32" else 0
    parts = {"weights": params * (4 + low)}
    if train:
        parts |= {
            "gradients": params * 4,
            "optimizer": params * 4 * ADAM_STATES,
            "optimizer step": params * 4,
        }
    if ema:
        parts["ema"] = params * 4
    parts["activations"] = activations * BYTES[precision]
    return parts


def generic_cost(sizes: Sizes, arch: str | None = None, steps: int | None = None) -> StageCost:
    """The generic model: one CNN with a head over every class, Adam."""
    section, size = sizes.config["generic"], sizes.config["data"]["image_size"]
    steps = steps or section["steps"]
    spec_all = sizes.spec(arch).with_classes(sizes.n_classes)
    step = cnn_step(spec_all, 1, section["batch_size"], size)
    memory = _memory(spec_all.num_params, step.activations, "fp32", train=True, ema=False)
    work = f"{steps} steps x batch {section['batch_size']}"
    name = f"generic ({spec_all.arch})"
    return StageCost(name, work, step.flops * steps, spec_all.num_params, memory, kind="cnn")


def zoo_cost(
    sizes: Sizes, n_tasks: int | None = None, arch: str | None = None, steps: int | None = None,
    shards: int | None = None,
) -> StageCost:  # fmt: skip
    """Every p-model, fine-tuned ``zoo.chunk`` at a time (one grouped computation), Adam. A
    head-only zoo is counted as full nets: an upper bound (its heads train on cached body
    features)."""
    section, size = sizes.config["zoo"], sizes.config["data"]["image_size"]
    n_tasks = sum(sizes.tasks.values()) if n_tasks is None else n_tasks
    steps, shards = steps or section["steps"], shards or section["shards"]
    chunk = min(section["chunk"], max(1, math.ceil(n_tasks / shards)))
    chunks = sum(math.ceil(len(range(s, n_tasks, shards)) / chunk) for s in range(shards))
    spec = sizes.spec(arch)
    step = cnn_step(spec, max(chunk, 2), section["batch_size"], size)
    params = spec.num_params * chunk
    memory = _memory(params, step.activations, "fp32", train=True, ema=False)
    work = f"{n_tasks} nets x {steps} steps x batch {section['batch_size']}, chunks of {chunk}"
    return StageCost(
        f"zoo ({spec.arch})", work, step.flops * steps * chunks, spec.num_params * n_tasks,
        memory, kind="cnn", jobs=shards,
    )  # fmt: skip


def _guidance(sizes: Sizes) -> int:
    """Forward passes per sampling step: two with classifier-free guidance, else one."""
    return 1 if sizes.config["tina"]["guidance"] == 1.0 else 2


def tina_cost(
    sizes: Sizes, name: str = "Tina training", steps: int | None = None,
    arch: str | None = None, **changes,
) -> StageCost:  # fmt: skip
    """Tina's training: AdamW steps at ``tina.batch_size`` (split over ``tina.devices``), the
    functional loss's CNN passes, the EMA, and the validation sampling every ``eval_every``."""
    cfg = sizes.tina_cfg(**changes)
    steps = steps or cfg.steps
    section = sizes.config["tina"]
    precision, devices = section["precision"], section["devices"]
    shape = sizes.shape(arch, **changes)
    batch = cfg.batch_size + cfg.functional_tasks
    step = tina_step(shape, max(1, batch // devices), backward=True)
    flops = step.flops * devices
    if cfg.functional_weight > 0:
        size = sizes.config["data"]["image_size"]
        # the decoded nets as full nets (a head-only net's frozen body counted in its step)
        flops += cnn_step(sizes.spec(arch), batch, cfg.functional_images, size).flops
    kinds = sum(1 for rate in cfg.prompt_kinds.values() if rate > 0)
    evaluations = math.ceil(steps / cfg.eval_every)
    passes = evaluations * sizes.tasks["val"] * kinds * cfg.eval_sampler_steps * _guidance(sizes)
    params = tina_params(shape)
    memory = _memory(params, step.activations, precision, train=True, ema=True)
    memory["best checkpoint"] = params * 4  # the EMA of the best validation, kept to the end
    work = f"{steps} steps x batch {batch}" + (f" on {devices} GPUs" if devices > 1 else "")
    total = flops * steps + per_prompt_pass(shape).flops * passes
    return StageCost(name, work, total, params, memory, precision)


def hypernetwork_cost(sizes: Sizes) -> StageCost:
    """The hypernetwork baseline: Tina's architecture, AdamW, EMA, fp32, no noise."""
    batch, steps = sizes.tina_cfg().batch_size, sizes.config["evaluate"]["hypernetwork_steps"]
    shape = sizes.shape()
    step = tina_step(shape, batch, backward=True)
    params = tina_params(shape)
    memory = _memory(params, step.activations, "fp32", train=True, ema=True)
    work = f"{steps} steps x batch {batch}"
    return StageCost("hypernetwork baseline", work, step.flops * steps, params, memory)


def sampling_work(sizes: Sizes) -> dict[str, tuple[int, int, int, int]]:
    """Per experiment: ``(tasks, settings, samples, steps)``: each of its ``settings`` samples
    ``tasks`` prompts in one batch (descriptions: at most every test task)."""
    ev, tasks = sizes.config["evaluate"], sizes.tasks
    samples, steps = ev["samples"], ev["ddim_steps"]
    test = tasks["test_id"] + tasks["test_ood"]
    sampler_tasks = min(ev["sampler_tasks"] or tasks["test_id"], tasks["test_id"])
    sampler_steps = sizes.config["tina"]["timesteps"] + sum(ev["ddim_compare"])
    return {
        "names": (test, 1, samples, steps),
        "descriptions": (test, 3, samples, steps),  # names, descriptions, mixed
        "image_prompts": (test, len(ev["shots"]), samples, steps),
        "kway": (tasks["test_kway"] + tasks["test_id"], 1, samples, steps),
        "unseen": (test, 1, samples, steps),
        "order": (tasks["test_id"], ev["orders"], samples, steps),
        "sampler": (sampler_tasks, 1, 1, sampler_steps),  # DDPM's T steps + each DDIM count
        "novelty": (tasks["test_id"], 1, samples, steps),
    }


def sampling_cost(sizes: Sizes, experiment: str) -> StageCost:
    """Tina sampling for one experiment of :func:`sampling_work` (fp32): memory of one batch,
    FLOPs of every pass."""
    tasks, settings, samples, steps = sampling_work(sizes)[experiment]
    shape = sizes.shape()
    one, params = per_prompt_pass(shape), tina_params(shape)
    memory = _memory(params, one.activations * tasks, "fp32", train=False, ema=False)
    passes = tasks * settings * samples * steps * _guidance(sizes)
    work = f"{tasks} tasks x {settings} settings x {samples} samples x {steps} steps"
    return StageCost(f"sampling: {experiment}", work, one.flops * passes, params, memory)


def sampling_costs(sizes: Sizes) -> list[StageCost]:
    """Tina sampling per experiment (:func:`sampling_cost` of each)."""
    return [sampling_cost(sizes, experiment) for experiment in sampling_work(sizes)]


def _with_evaluation(point: StageCost, sizes: Sizes, shape: TinaShape) -> StageCost:
    """A scaling point's cost: its training plus sampling its test-ID tasks."""
    ev = sizes.config["evaluate"]
    passes = sizes.tasks["test_id"] * ev["samples"] * ev["ddim_steps"] * _guidance(sizes)
    return replace(point, flops=point.flops + per_prompt_pass(shape).flops * passes)


def scale_tasks_costs(sizes: Sizes) -> list[StageCost]:
    """Each point of the task-count curve: Tina trained for ``scaling.steps`` on that many
    training p-models, then sampled on the test-ID tasks."""
    steps = sizes.config["scaling"]["steps"]
    return [
        _with_evaluation(tina_cost(sizes, f"scaling: tasks={n}", steps), sizes, sizes.shape())
        for n in sizes.config["scaling"]["tasks"]
    ]


def scale_width_costs(sizes: Sizes) -> list[StageCost]:
    """Each point of the width curve: Tina of that width trained for ``scaling.steps``, then
    sampled on the test-ID tasks."""
    steps, out = sizes.config["scaling"]["steps"], []
    for width in sizes.config["scaling"]["widths"]:
        point = tina_cost(sizes, f"scaling: width={width}", steps, width=width)
        out.append(_with_evaluation(point, sizes, sizes.shape(width=width)))
    return out


def scale_net_costs(sizes: Sizes) -> list[StageCost]:
    """Each point of the net curve: that architecture's own generic model and zoo, Tina trained
    for ``scaling.steps`` on it, then sampled on the test-ID tasks."""
    sc, out = sizes.config["scaling"], []
    steps = sc["steps"]
    for arch in sc["nets"]:
        generic = generic_cost(sizes, arch, sc["net_generic_steps"])
        n_tasks = min(sc["net_tasks"], sizes.tasks["train"]) + sizes.tasks["test_id"]
        zoo = zoo_cost(sizes, n_tasks, arch, sc["net_zoo_steps"], shards=1)
        point = tina_cost(sizes, f"scaling: net={arch}", steps, arch=arch)
        point = _with_evaluation(point, sizes, sizes.shape(arch))
        memory = max((generic.memory, zoo.memory, point.memory), key=lambda m: sum(m.values()))
        flops = generic.flops + zoo.flops + point.flops
        work = f"generic, {n_tasks} p-models, Tina {steps} steps"
        out.append(replace(point, work=work, flops=flops, memory=memory))
    return out


def scaling_costs(sizes: Sizes) -> list[StageCost]:
    """Every scaling point: the task-count, width and net curves."""
    return [*scale_tasks_costs(sizes), *scale_width_costs(sizes), *scale_net_costs(sizes)]


def stage_costs(config: dict) -> list[StageCost]:
    """Every stage of a validated ``config`` (see the module docstring)."""
    sizes = Sizes.of(config)
    return [
        generic_cost(sizes),
        zoo_cost(sizes),
        tina_cost(sizes),
        hypernetwork_cost(sizes),
        *sampling_costs(sizes),
        *scaling_costs(sizes),
    ]


# --------------------------------------------------------------------------- the table
def si(value: float) -> str:
    """``value`` with an SI prefix and three significant digits (28.4T)."""
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def duration(hours: float) -> str:
    """``hours`` as minutes below one hour, else hours (6.5 min, 2.31e+03 h)."""
    return f"{hours * 60:.2g} min" if hours < 1 else f"{hours:.3g} h"


def cost_rows(costs: list[StageCost], throughput: dict[str, float]) -> list[dict[str, str]]:
    """One row of strings per stage (the columns of :func:`cost_markdown`)."""
    rows = []
    for c in costs:
        memory = ", ".join(f"{k} {si(v)}B" for k, v in c.memory.items() if v)
        rows.append(
            {
                "stage": c.stage,
                "work": c.work + (f" ({c.jobs} jobs)" if c.jobs > 1 else ""),
                "FLOPs": si(c.flops),
                "parameters": si(c.params),
                "peak memory": f"{si(c.peak_bytes)}B ({memory})",
                "precision": c.precision,
                f"{GPU.name} time": duration(c.gpu_hours()),
                "1 CPU core": duration(c.cpu_hours(throughput)),
                "flag": "; ".join(c.flags()) or "",
            }
        )
    return rows


def cost_markdown(name: str, costs: list[StageCost], throughput: dict[str, float]) -> str:
    """The cost table of config ``name`` in Markdown, with its assumptions."""
    rows = cost_rows(costs, throughput)
    header = list(rows[0])
    lines = [
        f"# Expected cost: {name}",
        "",
        f"FLOPs counted with FlopCounterMode on the real modules (one step at the configured "
        f"batch, times the steps). GPU time: one {GPU.name} at {UTILISATION:.0%} of "
        f"{GPU.tflops['bf16']:g} TFLOP/s dense bf16 ({GPU.tflops['fp32']:g} in fp32). CPU "
        f"time: one core at the measured {si(throughput['cnn'])}FLOP/s for the CNNs and "
        f"{si(throughput['transformer'])}FLOP/s for the transformer. Memory: one job's peak. "
        f"Flagged: above {FLAG_GPU_HOURS:g} GPU-hours or {FLAG_MEMORY_GB:g} GB.",
        "",
        *table_lines(header, [[row[h] for h in header] for row in rows]),
    ]
    total = sum(c.gpu_hours() for c in costs)
    lines += ["", f"Total: {duration(total)} on one {GPU.name}.", ""]
    return "\n".join(lines)


def table_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines: ``header``, the rule, then ``rows`` (cells as text)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
