"""Elimination: cheap rule checks first, then a model judge comparing each child with its parent."""

from evol.eliminator.judge import Judge
from evol.eliminator.rules import RULES, check_rules

__all__ = ["Judge", "RULES", "check_rules"]
