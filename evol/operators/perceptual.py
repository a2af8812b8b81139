"""Fine-grained perceptual evolution: same difficulty, attention moved to long-tail details."""

from evol.operators.base import Operator


class Perceptual(Operator):
    """Fine-grained perceptual evolution: rewrites an item to ask about details of the
    picture a model easily overlooks (small or rare objects, attributes, positions) at the
    same difficulty, so the data covers more of what is visible. One of MMEvol's three
    evolution directions (arXiv 2409.05840), an in-breadth evolution in the sense of
    WizardLM's Evol-Instruct (arXiv 2304.12244).
    """

    name = "perceptual"
    objective = "evolve_perceptual"
