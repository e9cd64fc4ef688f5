"""Rule train_tina: train the diffusion transformer on the training p-models.

One process by default; with tina.devices > 1 (or a job given several GPUs) the training runs
data-parallel on that many processes through torchrun (tina.distributed), rank 0 writing.
"""

from tina.device import pick_device
from tina.distributed import launch, process_count
from tina.io import run_step, write_csv
from tina.sampling import save_tina
from tina.train import train_tina_stage


def main(snakemake):
    params = snakemake.params
    # what `tina generate` needs to encode new prompts and read images like the training data
    meta = {"encoder": params.encoder, "image_size": params.image_size}
    processes = process_count(params.tina["devices"], getattr(snakemake.resources, "gpu", 0))
    if processes > 1:
        job = {
            "inputs": dict(snakemake.input.items()),
            "outputs": {"model": snakemake.output.model, "history": snakemake.output.history},
            "tina": params.tina, "seed": params.seed, "device": params.device,
            "encoder": params.encoder, "shots": params.shots,
            "threads": max(1, snakemake.threads // processes), "meta": meta,
        }  # fmt: skip
        launch(job, processes)
        return
    device = pick_device(params.device)
    tina, history = train_tina_stage(
        snakemake.input, params.tina, params.seed, encoder=params.encoder, shots=params.shots,
        device=device,
    )  # fmt: skip
    tina.meta.update(meta)
    save_tina(tina, snakemake.output.model)
    write_csv(snakemake.output.history, history)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
