"""Cognitive reasoning evolution: more objects, more abilities, more real steps."""

from evol.operators.base import Operator


class Reasoning(Operator):
    """Cognitive reasoning evolution: rewrites an item so that answering it takes more
    objects, more abilities and more real reasoning steps (written into `steps`), so the
    data gets harder one round at a time. One of MMEvol's three evolution directions
    (arXiv 2409.05840), an in-depth evolution in the sense of WizardLM's Evol-Instruct
    (arXiv 2304.12244).
    """

    name = "reasoning"
    objective = "evolve_reasoning"
