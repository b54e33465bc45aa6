"""The last step of the pipeline: read a guide's marginals, apply a rule, export a smaller network.

One job a module: :mod:`.rules` (what to remove), :mod:`.pruner` (``prune``: masks and the pruned network),
:mod:`.pruned_guide` (the posterior restricted to kept weights), :mod:`.report` (the compression report),
:mod:`.compact` with :mod:`.plan` and :mod:`.dataflow` (a physically smaller network for structured rules) and
:mod:`.counting` (parameters, FLOPs, architecture strings), :mod:`.finetune` (a masked fine-tune of the pruned network,
optionally distilling a teacher).
"""

from . import compact, rules
from .finetune import finetune
from .pruned_guide import PrunedGuide
from .pruner import PruneResult, prune
from .report import CompressionReport, LayerReport

__all__ = ["prune", "finetune", "PruneResult", "CompressionReport", "LayerReport", "PrunedGuide", "rules", "compact"]
