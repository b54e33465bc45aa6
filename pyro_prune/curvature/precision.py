r"""Posterior precision structures: the :class:`Precision` interface and its :class:`Kron`, :class:`Diag` and
:class:`Dense` implementations.

Every structure is a symmetric positive definite matrix

.. math::

    P = s\,C + \tau I \quad (\text{or } + \mathrm{diag}(\tau)),

with :math:`C` a curvature (GGN, its diagonal or its KFAC approximation :math:`G \otimes A`), :math:`s` a scale (the
number of examples divided by a temperature) and :math:`\tau` the prior precision.  The curvature is decomposed
once; :meth:`Precision.with_prior` changes :math:`\tau` without a new decomposition, which is what makes the
marginal-likelihood optimization of :math:`\tau` cheap.  A precision acts on tensors shaped like the weights it
covers (:attr:`Precision.shape`: ``(out, in)`` for a layer's matrix, ``(n,)`` for a flat vector); the vector they
stand for is the row-major flattening.

* :class:`Kron`: :math:`P = s\,(G \otimes A) + \tau I` through the eigendecompositions
  :math:`A = U_A \Lambda_A U_A^\top`, :math:`G = U_G \Lambda_G U_G^\top`: in the basis :math:`U_G \otimes U_A` it is
  diagonal with eigenvalues :math:`s\,\lambda_{G,k}\lambda_{A,l} + \tau` (the exact prior term, not the damped
  factors of [1]);
* :class:`Diag`: :math:`P = s\,\mathrm{diag}(d) + \tau I`;
* :class:`Dense`: :math:`P = s\,\mathrm{GGN} + \mathrm{diag}(\tau)`, through a Cholesky factor :math:`P = LL^\top`.

References

[1] Hippolyt Ritter, Aleksandar Botev, David Barber. "A Scalable Laplace Approximation for Neural Networks",
    ICLR 2018.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

__all__ = ["Precision", "LayerPrecision", "Kron", "Diag", "Dense", "PriorLike", "precision_from_state"]

#: A function applied to every tensor of a precision (as ``nn.Module._apply`` applies one: ``.to(...)``...).
TensorFn = Callable[[torch.Tensor], torch.Tensor]

#: A prior precision: a positive scalar, or a tensor (which keeps its autograd graph).
PriorLike = Union[float, torch.Tensor]


def _as_prior(tau: PriorLike, ref: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(tau, dtype=ref.dtype, device=ref.device)


class Precision(abc.ABC):
    r"""A posterior precision :math:`P = s\,C + \tau` over weights of shape :attr:`shape` (module docstring).

    :ivar scale: :math:`s`.
    :ivar prior_precision: :math:`\tau`, a tensor.
    """

    scale: float
    prior_precision: torch.Tensor

    # -- structure ---------------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def shape(self) -> Tuple[int, ...]:
        """The shape of the weights the precision covers (``numel`` entries)."""

    @property
    def numel(self) -> int:
        """The number of weights, the size of :math:`P`."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    @abc.abstractmethod
    def reference(self) -> torch.Tensor:
        """A tensor of the precision's dtype and device."""

    @abc.abstractmethod
    def with_prior(self, prior_precision: PriorLike) -> Precision:
        r"""The same curvature with another :math:`\tau` (no new decomposition)."""

    # -- state -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def state(self) -> Dict[str, Any]:
        """Every tensor and number of the precision, ``{"kind": name, ...}``: :func:`precision_from_state`
        rebuilds an equal precision (the same tensors, no new decomposition)."""

    @abc.abstractmethod
    def apply(self, fn: TensorFn) -> Precision:
        """The same precision with ``fn`` applied to each of its tensors (``lambda t: t.to(torch.float64)``)."""

    # -- spectrum ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def curvature_eigenvalues(self) -> torch.Tensor:
        r"""The eigenvalues of :math:`s\,C` (clamped at 0)."""

    def eigenvalues(self) -> torch.Tensor:
        r"""The eigenvalues of :math:`P` for a scalar :math:`\tau`: :math:`s\,\lambda(C) + \tau`."""
        return self.curvature_eigenvalues() + self.prior_precision

    def logdet(self, curvature_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        r""":math:`\log\det(c\,s\,C + \tau) = \sum \log(c\,s\,\lambda(C) + \tau)` from the cached eigenvalues
        of the curvature (no new decomposition: :math:`O(n)` per call), differentiable in a tensor :math:`\tau` and
        in ``curvature_scale``.

        :param curvature_scale: :math:`c`, a scalar (a tensor keeps its autograd graph; e.g. :math:`\sigma_0^2 /
            \sigma^2` for a Gaussian likelihood's noise); ``None``: :math:`c = 1`.
        """
        eig = self.curvature_eigenvalues()
        if curvature_scale is not None:
            eig = curvature_scale * eig
        return (eig + self.prior_precision).log().sum()

    # -- linear algebra ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        r""":math:`P\,\mathrm{vec}(V)` for ``V`` of shape ``(...,) + shape``."""

    @abc.abstractmethod
    def solve(self, V: torch.Tensor) -> torch.Tensor:
        r""":math:`P^{-1}\,\mathrm{vec}(V)` for ``V`` of shape ``(...,) + shape``."""

    @abc.abstractmethod
    def transform(self, eps: torch.Tensor) -> torch.Tensor:
        r"""A square root :math:`R` of the covariance (:math:`R R^\top = P^{-1}`) applied to ``eps``
        ``(...,) + shape``: standard normal ``eps`` becomes a draw from :math:`\mathcal N(0, P^{-1})`."""

    @abc.abstractmethod
    def marginal_variance(self) -> torch.Tensor:
        r""":math:`\mathrm{diag}(P^{-1})`, shaped like the weights."""

    @abc.abstractmethod
    def to_dense(self) -> torch.Tensor:
        """:math:`P` as a ``(numel, numel)`` matrix (for tests and small problems)."""

    def sample(self, sample_shape: Sequence[int] = (), generator: Optional[torch.Generator] = None) -> torch.Tensor:
        r"""Draws from :math:`\mathcal N(0, P^{-1})`, shape ``sample_shape + shape``."""
        ref = self.reference
        eps = torch.randn(tuple(sample_shape) + tuple(self.shape), dtype=ref.dtype, device=ref.device,
                          generator=generator)  # fmt: skip
        return self.transform(eps)

    def __repr__(self) -> str:
        tau = self.prior_precision
        shown = tau.tolist() if tau.numel() <= 4 else f"tensor of shape {tuple(tau.shape)}"
        return f"{type(self).__name__}(shape={tuple(self.shape)}, scale={self.scale:g}, prior_precision={shown})"


class LayerPrecision(Precision):
    r"""A precision of one layer's ``(out, in)`` matrix that is diagonal in a Kronecker basis
    :math:`U_G \otimes U_A`, with eigenvalues :meth:`eigenvalues` of shape ``(out, in)``.

    The linearized predictive uses :meth:`project`: with a layer's inputs :math:`a` and output gradients
    :math:`g`, :math:`\mathrm{vec}(g a^\top)^\top P^{-1} \mathrm{vec}(g a^\top) =
    \sum_{kl} (\tilde g_k \tilde a_l)^2 / \lambda_{kl}` for :math:`(\tilde a, \tilde g)` = ``project(a, g)``.
    """

    @abc.abstractmethod
    def project(self, a: torch.Tensor, g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Inputs ``a`` ``(..., in)`` and output gradients ``g`` ``(..., out)`` in the eigenbasis,
        :math:`(U_A^\top a, U_G^\top g)`."""


class Kron(LayerPrecision):
    r"""The precision :math:`P = s\,(G \otimes A) + \tau I` of one ``(out, in)`` weight matrix (row-major ``vec``).

    :param eig_a: eigenvalues :math:`\lambda_A`, ``(in,)`` (clamped at 0).
    :param vec_a: eigenvectors :math:`U_A`, ``(in, in)``.
    :param eig_g: eigenvalues :math:`\lambda_G`, ``(out,)``.
    :param vec_g: eigenvectors :math:`U_G`, ``(out, out)``.
    :param scale: :math:`s` (the number of examples :math:`N`, divided by a temperature).
    :param prior_precision: :math:`\tau > 0`, a scalar (a tensor keeps the autograd graph).
    """

    def __init__(self, eig_a, vec_a, eig_g, vec_g, scale: float = 1.0, prior_precision: PriorLike = 1.0):
        self.eig_a, self.vec_a = eig_a.clamp_min(0), vec_a
        self.eig_g, self.vec_g = eig_g.clamp_min(0), vec_g
        self.scale = float(scale)
        self.prior_precision = _as_prior(prior_precision, eig_a)

    @classmethod
    def from_factors(cls, A: torch.Tensor, G: torch.Tensor, scale: float = 1.0, prior_precision: PriorLike = 1.0):
        """Eigendecompose the symmetric factors ``A`` ``(in, in)`` and ``G`` ``(out, out)``."""
        ea, va = torch.linalg.eigh(A)
        eg, vg = torch.linalg.eigh(G)
        return cls(ea, va, eg, vg, scale, prior_precision)

    @property
    def shape(self) -> Tuple[int, int]:
        """``(out, in)``."""
        return self.vec_g.shape[0], self.vec_a.shape[0]

    @property
    def reference(self) -> torch.Tensor:
        return self.eig_a

    def with_prior(self, prior_precision: PriorLike) -> Kron:
        return Kron(self.eig_a, self.vec_a, self.eig_g, self.vec_g, self.scale, prior_precision)

    def state(self) -> Dict[str, Any]:
        return dict(kind="kron", eig_a=self.eig_a, vec_a=self.vec_a, eig_g=self.eig_g, vec_g=self.vec_g,
                    scale=self.scale, prior_precision=self.prior_precision)  # fmt: skip

    def apply(self, fn: TensorFn) -> Kron:
        return Kron(
            fn(self.eig_a), fn(self.vec_a), fn(self.eig_g), fn(self.vec_g), self.scale, fn(self.prior_precision)
        )

    def curvature_eigenvalues(self) -> torch.Tensor:
        r""":math:`s\,\lambda_G \lambda_A^\top`, ``(out, in)``."""
        return self.scale * torch.outer(self.eig_g, self.eig_a)

    def rotate(self, V: torch.Tensor) -> torch.Tensor:
        r""":math:`U_G^\top V U_A` for ``V`` of shape ``(..., out, in)``."""
        return self.vec_g.transpose(-1, -2) @ V @ self.vec_a

    def unrotate(self, V: torch.Tensor) -> torch.Tensor:
        r""":math:`U_G V U_A^\top`."""
        return self.vec_g @ V @ self.vec_a.transpose(-1, -2)

    def project(self, a: torch.Tensor, g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return a @ self.vec_a, g @ self.vec_g

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        return self.unrotate(self.rotate(V) * self.eigenvalues())

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        return self.unrotate(self.rotate(V) / self.eigenvalues())

    def transform(self, eps: torch.Tensor) -> torch.Tensor:
        r""":math:`U_G (\varepsilon \circ (s\lambda_G\lambda_A^\top + \tau)^{-1/2}) U_A^\top`."""
        return self.unrotate(eps * self.eigenvalues().rsqrt())

    def marginal_variance(self) -> torch.Tensor:
        r"""The marginal variances, ``(out, in)``:

        .. math::

            \mathrm{diag}(P^{-1}) = (U_G \circ U_G)\,(1 / (s\lambda_G\lambda_A^\top + \tau))\,(U_A \circ U_A)^\top .
        """
        return self.vec_g.pow(2) @ self.eigenvalues().reciprocal() @ self.vec_a.pow(2).transpose(0, 1)

    def to_dense(self) -> torch.Tensor:
        """:math:`s\\,\\mathrm{kron}(G, A) + \\tau I`, ``(out·in, out·in)`` (memory ``(out·in)²``)."""
        A = self.vec_a @ torch.diag(self.eig_a) @ self.vec_a.T
        G = self.vec_g @ torch.diag(self.eig_g) @ self.vec_g.T
        eye = torch.eye(self.numel, dtype=A.dtype, device=A.device)
        return self.scale * torch.kron(G, A) + self.prior_precision * eye


class Diag(LayerPrecision):
    r"""A diagonal precision :math:`P = s\,\mathrm{diag}(d) + \tau I` of one ``(out, in)`` matrix (any shape works:
    the diagonal is shaped like the weights)."""

    def __init__(self, diag: torch.Tensor, scale: float = 1.0, prior_precision: PriorLike = 1.0):
        self.diag = diag.clamp_min(0)
        self.scale = float(scale)
        self.prior_precision = _as_prior(prior_precision, diag)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.diag.shape)

    @property
    def reference(self) -> torch.Tensor:
        return self.diag

    def with_prior(self, prior_precision: PriorLike) -> Diag:
        return Diag(self.diag, self.scale, prior_precision)

    def state(self) -> Dict[str, Any]:
        return dict(kind="diag", diag=self.diag, scale=self.scale, prior_precision=self.prior_precision)

    def apply(self, fn: TensorFn) -> Diag:
        return Diag(fn(self.diag), self.scale, fn(self.prior_precision))

    def curvature_eigenvalues(self) -> torch.Tensor:
        return self.scale * self.diag

    def project(self, a: torch.Tensor, g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return a, g  # already diagonal in the standard basis

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        return V * self.eigenvalues()

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        return V / self.eigenvalues()

    def transform(self, eps: torch.Tensor) -> torch.Tensor:
        return eps * self.eigenvalues().rsqrt()

    def marginal_variance(self) -> torch.Tensor:
        return self.eigenvalues().reciprocal()

    def to_dense(self) -> torch.Tensor:
        return torch.diag(self.eigenvalues().flatten())


class _Spectrum:
    """The eigenvalues of one GGN, computed at most once and shared by every :meth:`Dense.with_prior` copy (a new
    curvature makes a new :class:`Dense`, hence a new, empty cache)."""

    def __init__(self, values: Optional[torch.Tensor] = None):
        self.values = values


class Dense(Precision):
    r"""A dense precision :math:`P = s\,\mathrm{GGN} + \mathrm{diag}(\tau)` over a flat vector of ``n`` weights.

    The GGN's eigenvalues are computed once, on first need (:meth:`curvature_eigenvalues`), and shared with every
    copy :meth:`with_prior` makes, kept by :meth:`state` and moved by :meth:`apply`: :math:`\log\det P` for a
    scalar :math:`\tau` then costs :math:`O(n)`, so the evidence is cheap to maximize.  A per-weight :math:`\tau`
    vector goes through a Cholesky factorization (:math:`O(n^3)` per :math:`\tau`).

    :param ggn: the curvature :math:`C` ``(n, n)``.
    :param prior_precision: a scalar or a vector ``(n,)``.
    """

    def __init__(self, ggn: torch.Tensor, scale: float = 1.0, prior_precision: PriorLike = 1.0, _eig=None,
                 _spectrum: Optional[_Spectrum] = None):  # fmt: skip
        self.ggn = ggn
        self.scale = float(scale)
        self.prior_precision = _as_prior(prior_precision, ggn)
        self._spectrum = _Spectrum(_eig) if _spectrum is None else _spectrum
        self._chol: Optional[torch.Tensor] = None

    @property
    def shape(self) -> Tuple[int]:
        return (self.ggn.shape[0],)

    @property
    def reference(self) -> torch.Tensor:
        return self.ggn

    def with_prior(self, prior_precision: PriorLike) -> Dense:
        return Dense(self.ggn, self.scale, prior_precision, _spectrum=self._spectrum)

    def state(self) -> Dict[str, Any]:
        """The GGN, scale, prior and the GGN's eigenvalues once computed (``None`` before; the Cholesky factor is
        recomputed)."""
        eig = self._spectrum.values
        return dict(kind="dense", ggn=self.ggn, scale=self.scale, prior_precision=self.prior_precision, eig=eig)

    def apply(self, fn: TensorFn) -> Dense:
        eig = self._spectrum.values
        return Dense(fn(self.ggn), self.scale, fn(self.prior_precision), _eig=None if eig is None else fn(eig))

    def _prior_vector(self) -> torch.Tensor:
        return self.prior_precision.expand(self.numel) if self.prior_precision.dim() == 0 else self.prior_precision

    def curvature_eigenvalues(self) -> torch.Tensor:
        r""":math:`s\,\lambda(\mathrm{GGN})` (clamped at 0); the eigenvalues are computed once (cached), in float64
        whatever the GGN's dtype: float32 ``eigvalsh`` loses the small eigenvalues that the evidence's log-determinant
        needs (0.5 % of the sinusoid's evidence) and, with several threads, can return NaN for a finite matrix.

        :raises FloatingPointError: the GGN has non-finite eigenvalues (a non-finite curvature).
        """
        if self._spectrum.values is None:
            with torch.no_grad():
                eig = torch.linalg.eigvalsh(self.ggn.double())
                if not bool(torch.isfinite(eig).all()):
                    raise FloatingPointError("the GGN has non-finite eigenvalues: the curvature itself is not finite")
                self._spectrum.values = eig.clamp_min(0).to(self.ggn.dtype)
        return self.scale * self._spectrum.values

    def eigenvalues(self) -> torch.Tensor:
        """The eigenvalues of :math:`P` (from the Cholesky-free formula for a scalar :math:`\\tau`)."""
        if self.prior_precision.dim() == 0:
            return super().eigenvalues()
        return torch.linalg.eigvalsh(self.to_dense())

    def to_dense(self) -> torch.Tensor:
        return self.scale * self.ggn + torch.diag(self._prior_vector())

    def cholesky(self) -> torch.Tensor:
        """The lower Cholesky factor :math:`L` of :math:`P` (cached)."""
        if self._chol is None:
            L, info = torch.linalg.cholesky_ex(self.to_dense())
            if int(info) != 0:
                raise ValueError("the posterior precision is not positive definite; increase prior_precision")
            self._chol = L
        return self._chol

    def logdet(self, curvature_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        r"""From the cached eigenvalues for a scalar :math:`\tau`; a Cholesky factorization of
        :math:`c\,s\,\mathrm{GGN} + \mathrm{diag}(\tau)` for a vector."""
        if self.prior_precision.dim() == 0:
            return super().logdet(curvature_scale)
        if curvature_scale is None:
            L = self.cholesky()
        else:
            L, info = torch.linalg.cholesky_ex(
                curvature_scale * self.scale * self.ggn + torch.diag(self._prior_vector())
            )
            if int(info) != 0:
                raise ValueError("the posterior precision is not positive definite; increase prior_precision")
        return 2 * L.diagonal().log().sum()

    def matmul(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.to_dense()

    def solve(self, v: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(v.reshape(-1, self.numel).T, self.cholesky()).T.reshape(v.shape)

    def transform(self, eps: torch.Tensor) -> torch.Tensor:
        r""":math:`L^{-\top}\varepsilon` with :math:`P = LL^\top`, so the draws have covariance :math:`P^{-1}`."""
        flat = eps.reshape(-1, self.numel).T
        out = torch.linalg.solve_triangular(self.cholesky().T, flat, upper=True)
        return out.T.reshape(eps.shape)

    def whiten(self, J: torch.Tensor) -> torch.Tensor:
        r""":math:`L^{-1} J^\top` for rows ``J`` ``(m, n)``: ``(n, m)``, so :math:`J P^{-1} J^\top = X^\top X`."""
        return torch.linalg.solve_triangular(self.cholesky(), J.T, upper=False)

    def covariance(self) -> torch.Tensor:
        """:math:`P^{-1}`, ``(n, n)``."""
        return torch.cholesky_inverse(self.cholesky())

    def marginal_variance(self) -> torch.Tensor:
        eye = torch.eye(self.numel, dtype=self.ggn.dtype, device=self.ggn.device)
        return self.whiten(eye).pow(2).sum(0)


def _tensor(state: Mapping[str, Any], key: str) -> torch.Tensor:
    value = state.get(key)
    if not torch.is_tensor(value):
        raise ValueError(f"precision state: {key!r} must be a tensor, got {type(value).__name__}")
    return value


def precision_from_state(state: Mapping[str, Any]) -> Precision:
    """The precision whose :meth:`Precision.state` is ``state`` (``kind`` ``"kron"``, ``"diag"``, ``"dense"``, or
    the ``state_kind`` of a subclass defined elsewhere, built by its ``from_state``: ``"lowrank"``).

    :raises ValueError: an unknown ``kind`` or a missing tensor.
    """
    kind = state.get("kind")
    scale, tau = float(state["scale"]), _tensor(state, "prior_precision")
    if kind == "kron":
        t = [_tensor(state, k) for k in ("eig_a", "vec_a", "eig_g", "vec_g")]
        return Kron(*t, scale, tau)
    if kind == "diag":
        return Diag(_tensor(state, "diag"), scale, tau)
    if kind == "dense":
        ggn, eig = _tensor(state, "ggn"), state.get("eig")
        if eig is not None and (not torch.is_tensor(eig) or eig.shape != ggn.shape[:1]):
            raise ValueError(f"precision state: 'eig' must be None or a tensor of shape {tuple(ggn.shape[:1])}")
        return Dense(ggn, scale, tau, _eig=eig)
    for cls in _subclasses(Precision):  # structures defined in their own modules (LowRank: kind "lowrank")
        if getattr(cls, "state_kind", None) == kind:
            return cls.from_state(state)
    known = ["kron", "diag", "dense"] + [c.state_kind for c in _subclasses(Precision) if hasattr(c, "state_kind")]
    raise ValueError(f"precision state: unknown kind {kind!r} (expected one of {known})")


def _subclasses(cls: type) -> list:
    """Every subclass of ``cls``, depth first."""
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out
