"""Autoscale formulas: the grammar (lark), the evaluator, the sample history.

The state glue that runs them on a pool's schedule is state/autoscale.py.
"""

from .evaluator import DEALLOCATION, Outcome, evaluate
from .grammar import MAX_FORMULA_LENGTH, FormulaSyntaxError
from .samples import History
from .values import EvalError

__all__ = ["DEALLOCATION", "EvalError", "FormulaSyntaxError", "History", "MAX_FORMULA_LENGTH", "Outcome",
           "evaluate"]
