"""evol: evolve multimodal instruction data, then keep only what got better."""

__version__ = "0.1.0"
