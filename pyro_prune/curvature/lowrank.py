r"""The low-rank posterior precision :math:`P = s\,U \mathrm{diag}(\lambda) U^\top + \mathrm{diag}(\tau)`.

:math:`U` ``(n, k)`` and :math:`\lambda` ``(k,)`` are the top-:math:`k` eigenpairs of the curvature (the mean GGN,
from :func:`~pyro_prune.curvature.ggn_products.ggn_eigh`), :math:`s` the scale (number of examples over the
temperature) and :math:`\tau` the prior precision, a scalar or a vector ``(n,)`` (per-layer priors).  The precision
keeps :math:`O(nk)` numbers and never forms an ``n × n`` matrix.

With a scalar :math:`\tau` the eigenbasis of :math:`P` is :math:`U` (eigenvalues :math:`s\lambda_i + \tau`) plus its
complement (eigenvalue :math:`\tau`):

.. math::

    \log\det P = \sum_{i=1}^k \log(s\lambda_i + \tau) + (n - k)\log\tau, \qquad
    P^{-1} = \tau^{-1} I + U\,\mathrm{diag}\big((s\lambda + \tau)^{-1} - \tau^{-1}\big)\,U^\top,

an :math:`O(k)` log-determinant per :math:`\tau` (the evidence), and the square root
:math:`R = \tau^{-1/2} I + U\,\mathrm{diag}((s\lambda+\tau)^{-1/2} - \tau^{-1/2})\,U^\top` (:math:`R R^\top =
P^{-1}`) for sampling.  With a vector :math:`\tau = d`, write :math:`P = D^{1/2}(I + W W^\top) D^{1/2}` with
:math:`W = D^{-1/2} U (s\Lambda)^{1/2}` and eigendecompose the ``k × k`` matrix :math:`W^\top W = V M V^\top`: the
orthonormal :math:`B = W V M^{-1/2}` gives :math:`I + WW^\top = I + B M B^\top`, hence :math:`\log\det P = \sum\log d
+ \sum\log(1 + M)`, :math:`P^{-1} = D^{-1/2}(I - B\,\mathrm{diag}(\frac{M}{1+M}) B^\top) D^{-1/2}` and
:math:`R = D^{-1/2}(I + B\,\mathrm{diag}((1+M)^{-1/2} - 1) B^\top)` (the scalar case is :math:`B = U`,
:math:`M = s\lambda/\tau`).  Writing :math:`B = D^{-1/2} U T` (:math:`T = (s\Lambda)^{1/2} V M^{-1/2}`, or
:math:`\sqrt\tau I`), the GLM predictive covariance is the Woodbury form

.. math::

    J P^{-1} J^\top = J D^{-1} J^\top - (J D^{-1} U T)\,\mathrm{diag}\big(\tfrac{M}{1+M}\big)\,(J D^{-1} U T)^\top .
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from .precision import Precision, PriorLike, TensorFn, _as_prior

__all__ = ["LowRank", "lowrank_bytes"]


class LowRank(Precision):
    r"""The precision :math:`P = s\,U\mathrm{diag}(\lambda)U^\top + \mathrm{diag}(\tau)` over a flat vector of
    ``n`` weights (module docstring).

    :param eig: the curvature's top eigenvalues :math:`\lambda` ``(k,)`` (clamped at 0).
    :param vecs: their orthonormal eigenvectors :math:`U` ``(n, k)``.
    :param scale: :math:`s`.
    :param prior_precision: :math:`\tau`, a scalar or a vector ``(n,)``.
    """

    #: the ``kind`` of :meth:`state`, which :func:`~pyro_prune.curvature.precision_from_state` dispatches on.
    state_kind = "lowrank"

    def __init__(self, eig: torch.Tensor, vecs: torch.Tensor, scale: float = 1.0, prior_precision: PriorLike = 1.0):
        if eig.dim() != 1 or vecs.dim() != 2 or vecs.shape[1] != eig.shape[0]:
            raise ValueError(f"LowRank needs eig (k,) and vecs (n, k), got {tuple(eig.shape)} and {tuple(vecs.shape)}")
        self.eig, self.vecs = eig.clamp_min(0), vecs
        self.scale = float(scale)
        self.prior_precision = _as_prior(prior_precision, vecs)
        self._basis: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # (T, M), per prior

    # -- structure, state --------------------------------------------------------------------------------
    @property
    def shape(self) -> Tuple[int]:
        return (self.vecs.shape[0],)

    @property
    def rank(self) -> int:
        """:math:`k`."""
        return self.vecs.shape[1]

    @property
    def reference(self) -> torch.Tensor:
        return self.vecs

    def with_prior(self, prior_precision: PriorLike) -> LowRank:
        return LowRank(self.eig, self.vecs, self.scale, prior_precision)

    def state(self) -> Dict[str, Any]:
        return dict(kind="lowrank", eig=self.eig, vecs=self.vecs, scale=self.scale,
                    prior_precision=self.prior_precision)  # fmt: skip

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LowRank:
        """The precision of :meth:`state`.

        :raises ValueError: a missing tensor or mismatched shapes."""
        eig, vecs, tau = (state.get(k) for k in ("eig", "vecs", "prior_precision"))
        if not all(torch.is_tensor(t) for t in (eig, vecs, tau)):
            raise ValueError("precision state: a 'lowrank' state needs tensors 'eig', 'vecs' and 'prior_precision'")
        return cls(eig, vecs, float(state["scale"]), tau)

    def apply(self, fn: TensorFn) -> LowRank:
        return LowRank(fn(self.eig), fn(self.vecs), self.scale, fn(self.prior_precision))

    def prior_vector(self) -> torch.Tensor:
        """:math:`\\tau` as ``(n,)``."""
        tau = self.prior_precision
        return tau.expand(self.numel) if tau.dim() == 0 else tau

    # -- spectrum ----------------------------------------------------------------------------------------
    def curvature_eigenvalues(self) -> torch.Tensor:
        r""":math:`s\lambda` followed by :math:`n - k` zeros, ``(n,)``."""
        return torch.cat([self.scale * self.eig, self.eig.new_zeros(self.numel - self.rank)])

    def eigenvalues(self) -> torch.Tensor:
        """The eigenvalues of :math:`P` (``(n,)``; a vector :math:`\\tau` goes through :math:`D^{1/2}(I+BMB^\\top)
        D^{1/2}`, whose eigenvalues are not those of :math:`P`: use :meth:`to_dense` there)."""
        if self.prior_precision.dim() == 0:
            return super().eigenvalues()
        return torch.linalg.eigvalsh(self.to_dense())

    def logdet(self, curvature_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        r""":math:`O(k)` for a scalar :math:`\tau`: :math:`\sum_i \log(c s\lambda_i + \tau) + (n-k)\log\tau`; for a
        vector, :math:`\sum\log d + \log\det(I_k + W^\top W)` (a ``k × k`` Cholesky factor). Differentiable in
        :math:`\tau` and ``curvature_scale`` :math:`c`."""
        c = 1.0 if curvature_scale is None else curvature_scale
        tau = self.prior_precision
        if tau.dim() == 0:
            return (c * self.scale * self.eig + tau).log().sum() + (self.numel - self.rank) * tau.log()
        W = self.vecs * (c * self.scale * self.eig).sqrt() / tau.sqrt().unsqueeze(-1)
        eye = torch.eye(self.rank, dtype=W.dtype, device=W.device)
        L, info = torch.linalg.cholesky_ex(eye + W.T @ W)
        if int(info) != 0:
            raise ValueError("the low-rank posterior precision is not positive definite; increase prior_precision")
        return tau.log().sum() + 2 * L.diagonal().log().sum()

    def woodbury(self) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""``(T, M)`` with :math:`B = D^{-1/2} U T` orthonormal and :math:`P = D^{1/2}(I + BMB^\top)D^{1/2}`
        (cached per prior; ``M`` ``(k,)``, ``T`` ``(k, k)``; directions with :math:`M \approx 0` get a zero column)."""
        if self._basis is None:
            tau, s_eig = self.prior_precision, self.scale * self.eig
            if tau.dim() == 0:
                T = tau.sqrt() * torch.eye(self.rank, dtype=tau.dtype, device=tau.device)
                self._basis = (T, s_eig / tau)
            else:
                half = s_eig.sqrt()
                W = self.vecs * half / tau.sqrt().unsqueeze(-1)
                M, V = torch.linalg.eigh(W.T @ W)
                M = M.clamp_min(0)
                keep = M > M.max() * self.numel * torch.finfo(M.dtype).eps
                inv_sqrt = torch.where(keep, M.clamp_min(torch.finfo(M.dtype).tiny).rsqrt(), torch.zeros_like(M))
                self._basis = (half.unsqueeze(-1) * V * inv_sqrt, torch.where(keep, M, torch.zeros_like(M)))
        return self._basis

    def _basis_vectors(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:math:`B` ``(n, k)``, :math:`M` and :math:`d^{-1/2}` ``(n,)``."""
        T, M = self.woodbury()
        d_isqrt = self.prior_vector().rsqrt()
        return d_isqrt.unsqueeze(-1) * (self.vecs @ T), M, d_isqrt

    # -- linear algebra ----------------------------------------------------------------------------------
    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        return V * self.prior_vector() + ((V @ self.vecs) * (self.scale * self.eig)) @ self.vecs.T

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        B, M, d_isqrt = self._basis_vectors()
        Z = V * d_isqrt
        return (Z - ((Z @ B) * (M / (1 + M))) @ B.T) * d_isqrt

    def transform(self, eps: torch.Tensor) -> torch.Tensor:
        r""":math:`R\varepsilon = D^{-1/2}(\varepsilon + B\,((1+M)^{-1/2} - 1) \circ B^\top\varepsilon)`."""
        B, M, d_isqrt = self._basis_vectors()
        return (eps + ((eps @ B) * ((1 + M).rsqrt() - 1)) @ B.T) * d_isqrt

    def marginal_variance(self) -> torch.Tensor:
        r""":math:`d^{-1}\,(1 - \sum_i B_{ji}^2\,M_i/(1+M_i))`, ``(n,)``: :math:`O(nk)`."""
        B, M, d_isqrt = self._basis_vectors()
        return (1 - B.pow(2) @ (M / (1 + M))) * d_isqrt.pow(2)

    def glm_covariance(self, JDJ: torch.Tensor, JDU: torch.Tensor) -> torch.Tensor:
        r""":math:`J P^{-1} J^\top` ``(B, K, K)`` from :math:`J D^{-1} J^\top` ``(B, K, K)`` and :math:`J D^{-1} U`
        ``(B, K, k)`` (module docstring)."""
        T, M = self.woodbury()
        X = JDU @ T
        return JDJ - torch.einsum("bkr,blr,r->bkl", X, X, M / (1 + M))

    def to_dense(self) -> torch.Tensor:
        """:math:`P` as ``(n, n)`` (tests and small problems only)."""
        return (self.vecs * (self.scale * self.eig)) @ self.vecs.T + torch.diag(self.prior_vector())

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, rank={self.rank})"


def lowrank_bytes(num_params: int, rank: int, dtype: torch.dtype, oversample: int = 10) -> int:
    """Bytes the low-rank fit needs at its peak: the subspace and its image (``2 n (k + p)``), the eigenvectors
    ``n k`` and a float64 copy of the subspace for the orthonormalization."""
    item = torch.empty((), dtype=dtype).element_size()
    m = min(num_params, rank + oversample)
    return item * num_params * (2 * m + rank) + 8 * num_params * m
