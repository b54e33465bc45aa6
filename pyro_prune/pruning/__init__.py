"""The last step of the pipeline: read a guide's marginals, apply a rule, export a smaller network.

:mod:`.rules` (what to remove), :mod:`.pruner` (masks, pruned guide, report), :mod:`.compact` and
:mod:`.dataflow` (a physically smaller network for structured rules).
"""

from . import compact, rules
from .pruner import CompressionReport, PruneResult, prune

__all__ = ["prune", "PruneResult", "CompressionReport", "rules", "compact"]
