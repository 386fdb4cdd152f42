"""Static refinement of experimental models against indexed spot centroids.

``refine(experiments, reflections, RefinementParams())`` is the entry point
used by ``index`` and by the lattice (``rbs``) and ``refine`` steps.
"""

from .engine import RefinementResult, refine, update_predictions
from .params import RefinementParams

__all__ = ["RefinementParams", "RefinementResult", "refine", "update_predictions"]
