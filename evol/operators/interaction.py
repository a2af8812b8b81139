"""Interaction evolution: recast an item into the best-fitting of seventeen task forms."""

from evol.operators.base import Operator

TASK_FORMS = (
    "region selection", "missing object selection", "text-image matching", "object-region matching",
    "completeness of response", "fill in the blank", "image style classification", "art type",
    "rationale generation", "text detection", "text translation", "coreference resolution",
    "instruction following", "depth order", "relative distance", "creative content generation",
    "multiple choice",
)


class Interaction(Operator):
    name = "interaction"
    objective = "evolve_interaction"
