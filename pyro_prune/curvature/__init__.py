"""Curvature of the log-likelihood (KFAC, diagonal and full GGN) and the posterior precision structures.

Computed here, consumed by the Laplace guides; this package never imports a guide.

* :mod:`~pyro_prune.curvature.precision`: the :class:`Precision` interface, :class:`Kron`, :class:`Diag`,
  :class:`Dense`;
* :mod:`~pyro_prune.curvature.kfac`: KFAC factors and the exact diagonal GGN (:func:`kfac`);
* :mod:`~pyro_prune.curvature.ggn`: Jacobians and the dense GGN (:func:`full_ggn`: blockwise :func:`layer_ggn` over
  whole layers, :func:`jacobian_ggn` otherwise);
* :mod:`~pyro_prune.curvature.ggn_products`: GGN–matrix products through Jacobian–vector products
  (:class:`GGNOperator`) and the GGN's top eigenpairs (:func:`ggn_eigh`, :class:`Eigensolver`);
* :mod:`~pyro_prune.curvature.lowrank`: the low-rank precision :class:`LowRank`;
* :mod:`~pyro_prune.curvature.hessians`: the likelihood's output Hessian (delegating to the likelihood classes);
* :mod:`~pyro_prune.curvature.recording`: the module hooks both passes share.
"""

from .ggn import dense_bytes, full_ggn, jacobian_ggn, layer_ggn, output_jacobians, param_jacobians
from .ggn_products import Eigensolver, GGNOperator, ggn_eigh, jacobian_products
from .hessians import Fisher, flatten_output, hessian_sqrt, noise_scale, output_hessian
from .kfac import Curvature, LayerFactors, kfac
from .lowrank import LowRank, lowrank_bytes
from .precision import Dense, Diag, Kron, LayerPrecision, Precision, precision_from_state
from .recording import SUPPORTED_LAYERS, check_batch

__all__ = [
    "Precision",
    "LayerPrecision",
    "Kron",
    "Diag",
    "Dense",
    "LowRank",
    "lowrank_bytes",
    "GGNOperator",
    "Eigensolver",
    "ggn_eigh",
    "jacobian_products",
    "precision_from_state",
    "LayerFactors",
    "Curvature",
    "Fisher",
    "kfac",
    "full_ggn",
    "layer_ggn",
    "jacobian_ggn",
    "hessian_sqrt",
    "output_hessian",
    "noise_scale",
    "output_jacobians",
    "param_jacobians",
    "flatten_output",
    "dense_bytes",
    "SUPPORTED_LAYERS",
    "check_batch",
]
