"""Curvature of the log-likelihood (KFAC, diagonal and full GGN) and the posterior precision structures.

Computed here, consumed by the Laplace guides; this package never imports a guide.
"""

from .kfac import (
    SUPPORTED_LAYERS,
    Curvature,
    Dense,
    Diag,
    Fisher,
    Kron,
    LayerFactors,
    check_batch,
    dense_bytes,
    flatten_output,
    full_ggn,
    hessian_sqrt,
    kfac,
    noise_scale,
    output_hessian,
    output_jacobians,
    param_jacobians,
)

__all__ = [
    "Kron",
    "Diag",
    "Dense",
    "LayerFactors",
    "Curvature",
    "Fisher",
    "kfac",
    "full_ggn",
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
