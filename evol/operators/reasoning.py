"""Cognitive reasoning evolution: more objects, more abilities, more real steps."""

from evol.operators.base import Operator


class Reasoning(Operator):
    name = "reasoning"
    objective = "evolve_reasoning"
