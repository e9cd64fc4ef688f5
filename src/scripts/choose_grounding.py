"""Rule choose_grounding: pick the prompt grounding's temperatures and imprint scale on the
validation tasks (tina.grounding_choice.choose_settings)."""

from tina.grounding import save_settings
from tina.grounding_choice import choose_grounding_stage
from tina.io import run_step, write_csv


def main(snakemake):
    params = snakemake.params
    settings, candidates = choose_grounding_stage(
        snakemake.input, params.grounding, shots=params.shots, k=params.k, seed=params.seed
    )
    save_settings(settings, snakemake.output.settings)
    write_csv(snakemake.output.candidates, candidates)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
