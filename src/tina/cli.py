"""The ``tina`` command: generate a classifier from class names, and classify images with it.

::

    tina generate --run results/default --classes "llama, coconut, rainbow" --out llama.safetensors
    tina generate --run results/default --classes "llama, coconut" --out m.safetensors \\
        --descriptions "a South American camelid|the fruit of the coconut palm"
    tina generate --run results/default --classes "llama, coconut" --out m.safetensors \\
        --images shots/   # shots/llama/*.png, shots/coconut/*.png
    tina predict --model llama.safetensors photo1.jpg photo2.png
    tina cost --configfile config/paper/cifar100.yaml --markdown   # FLOPs, memory, hours
    tina cost --configfile config/config.yaml --check   # measured vs predicted CPU steps
    tina cost --configfile config/paper/cifar100.yaml --resources   # its resources: section
    tina cost --summary --configfile config/paper/*.yaml   # the README's table

``generate`` prints one summary line; ``predict`` prints ``path<TAB>class name`` per image. A bad
request or a missing or corrupt file prints one line ``tina: error: ...`` on stderr and exits
with status 2. The Python API behind it is :mod:`tina.generate` and :mod:`tina.generated`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from tina.generate import SAMPLERS, generate_model
from tina.generated import TinaError, one_line, predict, save_model

EXIT_ERROR = 2


class _UsageError(Exception):
    """A command-line usage error (argparse's), reported like every other error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    """The ``tina`` argument parser with its ``generate`` and ``predict`` sub-commands."""
    parser = _Parser(prog="tina", description="Text-to-model generation with a trained Tina.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser(
        "generate",
        help="generate a classifier for the given classes",
        description="Generate a classifier for the given classes (in that order) and save it.",
    )
    gen.add_argument("--run", required=True, help="run directory, e.g. results/default")
    gen.add_argument(
        "--classes", required=True, help='comma-separated class names: "llama, coconut, rainbow"'
    )
    gen.add_argument(
        "--descriptions", help="one description per class, separated by '|' (instead of names)"
    )
    gen.add_argument("--images", help="folder with one sub-folder of images per class")
    gen.add_argument("--out", required=True, help="model file to write (.safetensors)")
    gen.add_argument(
        "--samples", type=int, default=1, help="average this many sampled nets (default 1)"
    )
    gen.add_argument("--seed", type=int, default=0, help="seed of the first sample (default 0)")
    gen.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="default ddim")
    gen.add_argument("--steps", type=int, help="DDIM steps (default: the checkpoint's)")

    pred = commands.add_parser(
        "predict",
        help="classify images with a generated model",
        description="Print `path<TAB>class name` for each image.",
    )
    pred.add_argument("--model", required=True, help="model file written by `tina generate`")
    pred.add_argument("images", nargs="+", metavar="IMAGE", help="image files")

    cost = commands.add_parser(
        "cost",
        help="expected cost of a config's stages",
        description="FLOPs, parameters, peak memory and GPU/CPU hours of each stage (tina.cost).",
    )
    cost.add_argument(
        "--configfile", required=True, nargs="+", help="config YAML(s), e.g. config/config.yaml"
    )
    mode = cost.add_mutually_exclusive_group()
    mode.add_argument("--markdown", action="store_true", help="print the Markdown table")
    mode.add_argument(
        "--check", action="store_true", help="time a few real steps here: measured vs predicted"
    )
    mode.add_argument(
        "--resources", action="store_true", help="print the config's resources: section"
    )
    mode.add_argument(
        "--summary", action="store_true", help="one compact table of every config given"
    )
    return parser


def _generate(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    classes = args.classes.split(",")
    descriptions = None if args.descriptions is None else args.descriptions.split("|")
    model = generate_model(
        args.run,
        classes,
        descriptions=descriptions,
        images=args.images,
        samples=args.samples,
        seed=args.seed,
        sampler=args.sampler,
        steps=args.steps,
    )
    path, sidecar = save_model(model, args.out)
    print(
        f"wrote {path} and {sidecar.name}: {len(model.classes)} classes "
        f"({', '.join(model.classes)}) from {model.prompt}, {model.samples} sample(s) from seed "
        f"{model.seed}, in {time.perf_counter() - start:.2f} s"
    )


def _predict(args: argparse.Namespace) -> None:
    for path, name in predict(args.model, args.images):
        print(f"{path}\t{name}")


def _cost(args: argparse.Namespace) -> None:
    from pathlib import Path

    from tina.config import load_config
    from tina.cost import cost_markdown, cost_rows, stage_costs
    from tina.cost_check import check, cpu_throughput
    from tina.cost_summary import summary_markdown
    from tina.resources import resources_yaml

    if args.summary:
        configs = {Path(path).stem: load_config(path) for path in args.configfile}
        print(summary_markdown({name: stage_costs(c) for name, c in configs.items()}))
        return
    if len(args.configfile) > 1:
        raise _UsageError("--configfile takes one file, except with --summary")
    config = load_config(args.configfile[0])
    if args.resources:
        print(resources_yaml(config))
        return
    if args.check:
        for row in check(config):
            print("\t".join(f"{key}={value}" for key, value in row.items()))
        return
    costs, throughput = stage_costs(config), cpu_throughput()
    if args.markdown:
        print(cost_markdown(config["run"], costs, throughput))
        return
    for row in cost_rows(costs, throughput):
        print("\t".join(row.values()))


def _quiet_libraries() -> None:
    """No progress bars or advisory warnings from transformers while loading an encoder."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tina`` with ``argv`` (default: the process's arguments); return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        _quiet_libraries()
        {"generate": _generate, "predict": _predict, "cost": _cost}[args.command](args)
    except (TinaError, _UsageError, FileNotFoundError, ValueError) as err:
        print(f"tina: error: {one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
