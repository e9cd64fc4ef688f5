"""Tina: text-to-model generation with a parameter diffusion transformer.

The package holds all logic of the workflow; the scripts under ``src/scripts`` are thin
adapters that call one function each from a Snakemake rule.
"""

__version__ = "0.1.0"
