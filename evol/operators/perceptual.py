"""Fine-grained perceptual evolution: same difficulty, attention moved to long-tail details."""

from evol.operators.base import Operator


class Perceptual(Operator):
    name = "perceptual"
    objective = "evolve_perceptual"
