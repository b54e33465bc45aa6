r"""Curvature of the negative log-likelihood: KFAC factors, the diagonal GGN, the full GGN, and ``Kron``.

For a network :math:`f_w` and per-example loss :math:`\ell_n = -\log p(y_n \mid f_w(x_n))` the generalized
Gauss-Newton matrix (GGN) is

.. math::

    \mathrm{GGN} = \sum_n J_n^\top H_n J_n, \qquad J_n = \partial f_w(x_n) / \partial w, \qquad
    H_n = \partial^2 \ell_n / \partial f^2 = \sum_c L_{nc} L_{nc}^\top ,

with the "square roots" :math:`L_{nc}` of the likelihood's Hessian in output space:

* Categorical (``fisher="exact"``): :math:`H = \mathrm{diag}(p) - pp^\top`,
  :math:`L_c = \sqrt{p_c}\,(e_c - p)` for :math:`c = 1..C`; (``fisher="mc"``) :math:`L = p - e_{\tilde y}` with
  :math:`\tilde y \sim p` (the sampled-label Fisher, ``mc_samples`` draws scaled by :math:`1/\sqrt{S}`);
* Bernoulli: :math:`L = \sqrt{p(1 - p)}` on the logit;
* Gaussian with noise :math:`\sigma`: :math:`L_k = e_k / \sigma` (GGN = Fisher = Hessian of a linear model).

Backpropagating the vectors :math:`L_{nc}` to a layer's pre-activations :math:`s = W a` gives
:math:`g_{nc} = (\partial f / \partial s)^\top L_{nc}`, and the layer's GGN block is
:math:`\sum_n \sum_c (g_{nc} g_{nc}^\top) \otimes (a_n a_n^\top)` (weights flattened row-major, ``(out, in)``).
KFAC [1] replaces it by the product of expectations

.. math::

    \mathrm{GGN}_W \approx N \cdot G \otimes A, \qquad
    A = \frac{1}{N T} \sum_{n,t} a_{nt} a_{nt}^\top, \qquad
    G = \frac{1}{N} \sum_{n,t} \sum_c g_{nct} g_{nct}^\top ,

with the bias as an extra input fixed at 1 and, for convolutions (KFC [2]), :math:`a_{nt}` the unfolded input
patch at output position :math:`t` of :math:`T`.  For a Linear layer, :math:`T = 1` (extra leading dimensions
count as positions).  In the column-major convention of [1] this is :math:`A \otimes G`; here ``vec`` is torch's
row-major flattening of the ``(out, in)`` weight matrix, hence ``kron(G, A)``.  For one linear layer with a
Gaussian likelihood, :math:`G = I/\sigma^2` is constant and KFAC is exact.

Everything is collected with module hooks in one pass over the data (one forward and one batched backward per
batch, ``torch.autograd.grad(..., is_grads_batched=True)``).  The network runs in eval mode; parameters of other
modules (BatchNorm, LayerNorm, ...) are constants here: they stay point estimates.

:class:`Kron` holds the eigendecompositions :math:`A = U_A \Lambda_A U_A^\top`, :math:`G = U_G \Lambda_G U_G^\top`
of a posterior precision :math:`P = s\,(G \otimes A) + \tau I`, whose eigenvalues are
:math:`s\,\lambda_{G,k}\lambda_{A,l} + \tau` in the basis :math:`U_G \otimes U_A` (the exact prior term, not the
damped factors of [1]); :class:`Diag` and :class:`Dense` are the diagonal and dense precisions with the same
interface.

References

[1] Hippolyt Ritter, Aleksandar Botev, David Barber. "A Scalable Laplace Approximation for Neural Networks",
    ICLR 2018.
[2] Roger Grosse, James Martens. "A Kronecker-factored approximate Fisher matrix for convolution layers",
    ICML 2016.
[3] James Martens, Roger Grosse. "Optimizing Neural Networks with Kronecker-factored Approximate Curvature",
    ICML 2015.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, Literal, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import as_batches
from ..model.likelihoods import Bernoulli, Categorical, Gaussian, Likelihood

__all__ = [
    "Kron",
    "Diag",
    "Dense",
    "LayerFactors",
    "Curvature",
    "kfac",
    "full_ggn",
    "hessian_sqrt",
    "output_jacobians",
    "param_jacobians",
    "flatten_output",
    "SUPPORTED_LAYERS",
]

Fisher = Literal["exact", "mc"]
SUPPORTED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_PriorLike = Union[float, torch.Tensor]


# -------------------------------------------------------------------------------------------------------------
# posterior precision structures
# -------------------------------------------------------------------------------------------------------------
def _as_prior(tau: _PriorLike, ref: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(tau, dtype=ref.dtype, device=ref.device)


class Kron:
    r"""The precision :math:`P = s\,(G \otimes A) + \tau I` of one ``(out, in)`` weight matrix (row-major ``vec``).

    :param eig_a: eigenvalues :math:`\lambda_A`, ``(in,)`` (clamped at 0).
    :param vec_a: eigenvectors :math:`U_A`, ``(in, in)``.
    :param eig_g: eigenvalues :math:`\lambda_G`, ``(out,)``.
    :param vec_g: eigenvectors :math:`U_G`, ``(out, out)``.
    :param scale: :math:`s` (the number of examples :math:`N`, divided by a temperature).
    :param prior_precision: :math:`\tau > 0`, a scalar (a tensor keeps the autograd graph).
    """

    def __init__(self, eig_a, vec_a, eig_g, vec_g, scale: float = 1.0, prior_precision: _PriorLike = 1.0):
        self.eig_a, self.vec_a = eig_a.clamp_min(0), vec_a
        self.eig_g, self.vec_g = eig_g.clamp_min(0), vec_g
        self.scale = float(scale)
        self.prior_precision = _as_prior(prior_precision, eig_a)

    @classmethod
    def from_factors(cls, A: torch.Tensor, G: torch.Tensor, scale: float = 1.0, prior_precision: _PriorLike = 1.0):
        """Eigendecompose the symmetric factors ``A`` ``(in, in)`` and ``G`` ``(out, out)``."""
        ea, va = torch.linalg.eigh(A)
        eg, vg = torch.linalg.eigh(G)
        return cls(ea, va, eg, vg, scale, prior_precision)

    @property
    def shape(self) -> Tuple[int, int]:
        """``(out, in)``."""
        return self.vec_g.shape[0], self.vec_a.shape[0]

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def with_prior(self, prior_precision: _PriorLike) -> Kron:
        """The same curvature with another :math:`\\tau` (no new eigendecomposition)."""
        return Kron(self.eig_a, self.vec_a, self.eig_g, self.vec_g, self.scale, prior_precision)

    def curvature_eigenvalues(self) -> torch.Tensor:
        r""":math:`s\,\lambda_G \lambda_A^\top`, ``(out, in)``."""
        return self.scale * torch.outer(self.eig_g, self.eig_a)

    def eigenvalues(self) -> torch.Tensor:
        r""":math:`s\,\lambda_G \lambda_A^\top + \tau`, ``(out, in)``."""
        return self.curvature_eigenvalues() + self.prior_precision

    def logdet(self) -> torch.Tensor:
        r""":math:`\log\det P = \sum_{kl} \log(s\,\lambda_{G,k}\lambda_{A,l} + \tau)`."""
        return self.eigenvalues().log().sum()

    def rotate(self, V: torch.Tensor) -> torch.Tensor:
        """:math:`U_G^\\top V U_A` for ``V`` of shape ``(..., out, in)``."""
        return self.vec_g.transpose(-1, -2) @ V @ self.vec_a

    def unrotate(self, V: torch.Tensor) -> torch.Tensor:
        """:math:`U_G V U_A^\\top`."""
        return self.vec_g @ V @ self.vec_a.transpose(-1, -2)

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        """:math:`P\\,\\mathrm{vec}(V)` as a matrix ``(..., out, in)``."""
        return self.unrotate(self.rotate(V) * self.eigenvalues())

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        """:math:`P^{-1}\\,\\mathrm{vec}(V)` as a matrix ``(..., out, in)``."""
        return self.unrotate(self.rotate(V) / self.eigenvalues())

    def transform(self, eps: torch.Tensor) -> torch.Tensor:
        r"""Map standard normal ``eps`` ``(..., out, in)`` to :math:`U_G (\varepsilon \circ (s\lambda_G\lambda_A^\top
        + \tau)^{-1/2}) U_A^\top`, a draw from :math:`\mathcal N(0, P^{-1})`."""
        return self.unrotate(eps * self.eigenvalues().rsqrt())

    def sample(self, sample_shape: Sequence[int] = (), generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draws from :math:`\\mathcal N(0, P^{-1})`, shape ``sample_shape + (out, in)``."""
        eps = torch.randn(
            tuple(sample_shape) + self.shape, dtype=self.eig_a.dtype, device=self.eig_a.device, generator=generator
        )
        return self.transform(eps)

    def marginal_variance(self) -> torch.Tensor:
        r"""The marginal variances, ``(out, in)``:

        .. math::

            \mathrm{diag}(P^{-1}) = (U_G \circ U_G)\,(1 / (s\lambda_G\lambda_A^\top + \tau))\,(U_A \circ U_A)^\top .
        """
        return self.vec_g.pow(2) @ self.eigenvalues().reciprocal() @ self.vec_a.pow(2).transpose(0, 1)

    def to_dense(self) -> torch.Tensor:
        """:math:`s\\,\\mathrm{kron}(G, A) + \\tau I`, ``(out·in, out·in)`` (for tests; memory ``(out·in)²``)."""
        A = self.vec_a @ torch.diag(self.eig_a) @ self.vec_a.T
        G = self.vec_g @ torch.diag(self.eig_g) @ self.vec_g.T
        eye = torch.eye(self.numel, dtype=A.dtype, device=A.device)
        return self.scale * torch.kron(G, A) + self.prior_precision * eye

    def __repr__(self) -> str:
        return f"Kron(shape={self.shape}, scale={self.scale:g}, prior_precision={self.prior_precision.tolist()})"


class Diag:
    r"""A diagonal precision :math:`P = s\,\mathrm{diag}(d) + \tau I` of one ``(out, in)`` matrix."""

    def __init__(self, diag: torch.Tensor, scale: float = 1.0, prior_precision: _PriorLike = 1.0):
        self.diag = diag.clamp_min(0)
        self.scale = float(scale)
        self.prior_precision = _as_prior(prior_precision, diag)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.diag.shape)

    @property
    def numel(self) -> int:
        return self.diag.numel()

    def with_prior(self, prior_precision: _PriorLike) -> Diag:
        return Diag(self.diag, self.scale, prior_precision)

    def curvature_eigenvalues(self) -> torch.Tensor:
        return self.scale * self.diag

    def eigenvalues(self) -> torch.Tensor:
        return self.curvature_eigenvalues() + self.prior_precision

    def logdet(self) -> torch.Tensor:
        return self.eigenvalues().log().sum()

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        return V * self.eigenvalues()

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        return V / self.eigenvalues()

    def transform(self, eps: torch.Tensor) -> torch.Tensor:
        return eps * self.eigenvalues().rsqrt()

    def sample(self, sample_shape: Sequence[int] = (), generator: Optional[torch.Generator] = None) -> torch.Tensor:
        eps = torch.randn(
            tuple(sample_shape) + self.shape, dtype=self.diag.dtype, device=self.diag.device, generator=generator
        )
        return self.transform(eps)

    def marginal_variance(self) -> torch.Tensor:
        return self.eigenvalues().reciprocal()

    def to_dense(self) -> torch.Tensor:
        return torch.diag(self.eigenvalues().flatten())


class Dense:
    r"""A dense precision :math:`P = s\,\mathrm{GGN} + \mathrm{diag}(\tau)` over a flat vector of ``n`` weights.

    The GGN is eigendecomposed once (:math:`\log\det` for a scalar :math:`\tau` from its eigenvalues); a
    per-weight :math:`\tau` vector goes through a Cholesky factorization.
    """

    def __init__(self, ggn: torch.Tensor, scale: float = 1.0, prior_precision: _PriorLike = 1.0, _eig=None):
        self.ggn = ggn
        self.scale = float(scale)
        self.prior_precision = _as_prior(prior_precision, ggn)
        self._eig = _eig
        self._chol = None

    @property
    def shape(self) -> Tuple[int]:
        return (self.ggn.shape[0],)

    @property
    def numel(self) -> int:
        return self.ggn.shape[0]

    def with_prior(self, prior_precision: _PriorLike) -> Dense:
        return Dense(self.ggn, self.scale, prior_precision, _eig=self._eig)

    def _prior_vector(self) -> torch.Tensor:
        return self.prior_precision.expand(self.numel) if self.prior_precision.dim() == 0 else self.prior_precision

    def curvature_eigenvalues(self) -> torch.Tensor:
        if self._eig is None:
            self._eig = torch.linalg.eigvalsh(self.ggn).clamp_min(0)
        return self.scale * self._eig

    def to_dense(self) -> torch.Tensor:
        return self.scale * self.ggn + torch.diag(self._prior_vector())

    def cholesky(self) -> torch.Tensor:
        if self._chol is None:
            L, info = torch.linalg.cholesky_ex(self.to_dense())
            if int(info) != 0:
                raise ValueError("the posterior precision is not positive definite; increase prior_precision")
            self._chol = L
        return self._chol

    def logdet(self) -> torch.Tensor:
        if self.prior_precision.dim() == 0:
            return (self.curvature_eigenvalues() + self.prior_precision).log().sum()
        L, info = torch.linalg.cholesky_ex(self.to_dense())
        return 2 * L.diagonal().log().sum()

    def matmul(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.to_dense()

    def solve(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`P^{-1} v` for ``v`` of shape ``(..., n)``."""
        return torch.cholesky_solve(v.reshape(-1, self.numel).T, self.cholesky()).T.reshape(v.shape)

    def transform(self, eps: torch.Tensor) -> torch.Tensor:
        r""":math:`L^{-\top}\varepsilon` with :math:`P = LL^\top`, so the draws have covariance :math:`P^{-1}`."""
        flat = eps.reshape(-1, self.numel).T
        out = torch.linalg.solve_triangular(self.cholesky().T, flat, upper=True)
        return out.T.reshape(eps.shape)

    def sample(self, sample_shape: Sequence[int] = (), generator: Optional[torch.Generator] = None) -> torch.Tensor:
        eps = torch.randn(
            tuple(sample_shape) + self.shape, dtype=self.ggn.dtype, device=self.ggn.device, generator=generator
        )
        return self.transform(eps)

    def covariance(self) -> torch.Tensor:
        """:math:`P^{-1}`, ``(n, n)``."""
        return torch.cholesky_inverse(self.cholesky())

    def marginal_variance(self) -> torch.Tensor:
        Linv = torch.linalg.solve_triangular(
            self.cholesky(), torch.eye(self.numel, dtype=self.ggn.dtype, device=self.ggn.device), upper=False
        )
        return Linv.pow(2).sum(0)


# -------------------------------------------------------------------------------------------------------------
# likelihood Hessians in output space
# -------------------------------------------------------------------------------------------------------------
def flatten_output(likelihood: Likelihood, f: torch.Tensor) -> torch.Tensor:
    """The network output as ``(B, K)`` (Bernoulli's ``(B,)`` logits become ``(B, 1)``).

    :raises ValueError: for a heteroscedastic Gaussian (its Hessian is not a GGN of the mean only).
    """
    if isinstance(likelihood, Gaussian) and likelihood.mode == "heteroscedastic":
        raise ValueError("the Laplace approximation supports Gaussian likelihoods with a fixed or learned scale only")
    if not isinstance(likelihood, (Categorical, Bernoulli, Gaussian)):
        raise ValueError(
            f"unsupported likelihood {type(likelihood).__name__}: use pp.Categorical, pp.Bernoulli or pp.Gaussian"
        )
    return f.reshape(f.shape[0], -1)


def noise_scale(likelihood: Gaussian, ref: torch.Tensor) -> torch.Tensor:
    """The Gaussian likelihood's :math:`\\sigma` (fixed, or the learned point estimate) as a tensor."""
    if likelihood.mode == "learned":
        return likelihood.scale.detach().to(ref)
    return torch.as_tensor(likelihood.fixed_scale, dtype=ref.dtype, device=ref.device)


def hessian_sqrt(
    likelihood: Likelihood,
    f: torch.Tensor,
    fisher: Fisher = "exact",
    mc_samples: int = 1,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    r"""Vectors :math:`L_{c}` with :math:`\sum_c L_c L_c^\top = H` (or its sampled-label estimate), per example.

    :param f: network outputs ``(B, K)`` (detached).
    :returns: ``(C', B, K)``.
    """
    f = f.detach()
    if isinstance(likelihood, Categorical):
        p = f.softmax(-1)
        if fisher == "exact":
            eye = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device)
            # L[c, b] = sqrt(p_bc) (e_c - p_b)
            return p.sqrt().T.unsqueeze(-1) * (eye.unsqueeze(1) - p.unsqueeze(0))
        y = torch.multinomial(p, mc_samples, replacement=True, generator=generator).T  # (S, B)
        return (p.unsqueeze(0) - F.one_hot(y, f.shape[-1]).to(f.dtype)) / math.sqrt(mc_samples)
    if isinstance(likelihood, Bernoulli):
        p = torch.sigmoid(f)
        if fisher == "exact":
            return (p * (1 - p)).sqrt().unsqueeze(0)
        y = torch.bernoulli(p.unsqueeze(0).expand((mc_samples,) + p.shape), generator=generator)
        return (p - y) / math.sqrt(mc_samples)
    if isinstance(likelihood, Gaussian):
        sigma = noise_scale(likelihood, f)
        if fisher == "exact":
            eye = torch.eye(f.shape[-1], dtype=f.dtype, device=f.device) / sigma
            return eye.unsqueeze(1).expand(f.shape[-1], f.shape[0], f.shape[-1])
        eps = torch.randn((mc_samples,) + f.shape, dtype=f.dtype, device=f.device, generator=generator)
        return eps / sigma / math.sqrt(mc_samples)
    raise ValueError(f"unsupported likelihood {type(likelihood).__name__}")


def output_hessian(likelihood: Likelihood, f: torch.Tensor) -> torch.Tensor:
    """The exact Hessian of :math:`-\\log p(y\\mid f)` in output space, ``(B, K, K)``."""
    L = hessian_sqrt(likelihood, f, "exact")
    return torch.einsum("cbk,cbl->bkl", L, L)


# -------------------------------------------------------------------------------------------------------------
# hooks: layer inputs and pre-activation gradients
# -------------------------------------------------------------------------------------------------------------
def _patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer inputs as ``(B, T, in)``: unfolded patches for convolutions (KFC), positions for Linear."""
    if isinstance(module, nn.Linear):
        return x.reshape(x.shape[0], -1, x.shape[-1])
    if module.groups != 1:
        raise ValueError(f"grouped convolutions (groups={module.groups}) are not supported by KFAC/diag curvature")
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(-2)
        kernel, stride, dilation = (1,) + module.kernel_size, (1,) + module.stride, (1,) + module.dilation
        padding = (0,) + tuple(module.padding) if not isinstance(module.padding, str) else module.padding
    else:
        kernel, stride, dilation, padding = module.kernel_size, module.stride, module.dilation, module.padding
    if isinstance(padding, str):
        raise ValueError(f"conv padding={module.padding!r} is not supported; give padding as integers")
    if module.padding_mode != "zeros":
        pads = []
        for p in reversed(padding):
            pads += [p, p]
        x = F.pad(x, pads, mode=module.padding_mode if module.padding_mode != "zeros" else "constant")
        padding = (0,) * len(padding)
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, in*k, T)
    return cols.transpose(1, 2)


def _grad_positions(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """Batched gradients ``(C, B, ...)`` of a layer's output as ``(C, B, T, out)``."""
    if isinstance(module, nn.Linear):
        return g.reshape(g.shape[0], g.shape[1], -1, g.shape[-1])
    return g.flatten(3).transpose(2, 3)


class _Recorder:
    """Forward hooks that record each tracked module's input and output for one forward pass."""

    def __init__(self, modules: Mapping[str, nn.Module]):
        self.modules = dict(modules)
        self.inputs: Dict[str, torch.Tensor] = {}
        self.outputs: Dict[str, torch.Tensor] = {}
        self.handles = []

    def __enter__(self):
        for name, m in self.modules.items():
            self.handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def hook(module, args, out):
            if name in self.outputs:
                raise ValueError(f"module {name!r} runs twice in one forward pass (shared weights are not supported)")
            self.inputs[name] = args[0].detach()
            if not out.requires_grad:  # parameters need no grad: the pre-activations become the graph's leaves
                out.requires_grad_(True)
            self.outputs[name] = out
            return out.clone()  # later in-place ops (ReLU(inplace=True)) must not touch the recorded tensor

        return hook

    def clear(self) -> None:
        self.inputs.clear()
        self.outputs.clear()

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []


def _augment(a: torch.Tensor, bias: bool) -> torch.Tensor:
    if not bias:
        return a
    return torch.cat([a, torch.ones(a.shape[:-1] + (1,), dtype=a.dtype, device=a.device)], -1)


def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[0] == 0:
        raise ValueError("data yielded an empty batch")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("data contains NaN or inf inputs")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("data contains NaN or inf targets")


# -------------------------------------------------------------------------------------------------------------
# KFAC / diagonal GGN
# -------------------------------------------------------------------------------------------------------------
@dataclass
class LayerFactors:
    """Curvature of one layer: KFAC factors and/or the exact diagonal GGN (sums normalized as documented).

    :ivar A: :math:`\\frac{1}{NT}\\sum a a^\\top`, ``(in', in')`` (``in' = in·k (+1 with a bias)``).
    :ivar G: :math:`\\frac1N \\sum g g^\\top`, ``(out, out)``.
    :ivar diag: exact diagonal of the GGN, :math:`\\frac1N \\sum_n \\mathrm{diag}(J_n^\\top H_n J_n)`,
        ``(out, in')``, when requested.
    :ivar bias: whether the last input column is the bias.
    :ivar positions: :math:`T`, output positions per example.
    """

    A: Optional[torch.Tensor]
    G: Optional[torch.Tensor]
    diag: Optional[torch.Tensor]
    bias: bool
    positions: int


@dataclass
class Curvature:
    """The result of :func:`kfac`: per-layer factors, the number of examples and the log-likelihood at the weights.

    :ivar layers: ``{module name: LayerFactors}``.
    :ivar num_examples: :math:`N`, the examples seen.
    :ivar log_likelihood: :math:`\\sum_n \\log p(y_n \\mid f(x_n))` over the examples seen.
    """

    layers: Dict[str, LayerFactors] = field(default_factory=dict)
    num_examples: int = 0
    log_likelihood: float = 0.0


def _merged(batches: Iterable, rows: int) -> Iterable:
    """Concatenate consecutive ``(x, y)`` batches into chunks of at most ``rows`` rows (fewer, larger passes; the
    sums are the same).  A batch larger than ``rows`` passes as it is."""
    xs: list = []
    ys: list = []
    n = 0

    def flush():
        return (xs[0], ys[0]) if len(xs) == 1 else (torch.cat(xs), torch.cat(ys))

    for batch in batches:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"data must yield (x, y) pairs, got {type(batch).__name__}")
        x, y = batch
        if xs and (n + x.shape[0] > rows or x.shape[1:] != xs[0].shape[1:] or y.shape[1:] != ys[0].shape[1:]):
            yield flush()
            xs, ys, n = [], [], 0
        xs.append(x)
        ys.append(y)
        n += x.shape[0]
    if xs:
        yield flush()


def kfac(
    net: nn.Module,
    data,
    likelihood: Likelihood,
    layers: Mapping[str, bool],
    fisher: Fisher = "exact",
    mc_samples: int = 1,
    factors: bool = True,
    diagonal: bool = False,
    generator: Optional[torch.Generator] = None,
    chunk_rows: int = 512,
) -> Curvature:
    """KFAC factors (and optionally the exact diagonal GGN) of ``net``'s layers, in one pass over ``data``.

    :param net: a plain ``nn.Module`` (put in eval mode here, and left so).
    :param data: a ``DataLoader`` of ``(x, y)`` batches or one ``(x, y)`` tuple.
    :param likelihood: :class:`~pyro_prune.Categorical`, :class:`~pyro_prune.Bernoulli` or
        :class:`~pyro_prune.Gaussian` (fixed or learned scale).
    :param layers: ``{module name: whether its bias is included}`` for Linear/Conv1d/Conv2d modules of ``net``.
    :param fisher: ``"exact"`` GGN or ``"mc"`` sampled-label Fisher (``mc_samples`` labels per example).
    :param factors: collect ``A`` and ``G``.
    :param diagonal: collect the exact diagonal GGN (memory ``C·B·out·in`` per batch for convolutions).
    :param chunk_rows: for networks of Linear layers only, consecutive batches are concatenated into chunks of at
        most this many rows (fewer, larger passes; the sums are unchanged; fewer rows for wide layers, see the
        code); 0 keeps the data's batches.
    :returns: :class:`Curvature` (factors divided by the number of examples, as in the module docstring).
    :raises ValueError: empty data, NaN data, unsupported layers or likelihoods, an unknown ``fisher``.
    """
    if fisher not in ("exact", "mc"):
        raise ValueError(f"fisher must be 'exact' or 'mc', got {fisher!r}")
    modules = {}
    for name in layers:
        m = net.get_submodule(name)
        if not isinstance(m, SUPPORTED_LAYERS):
            raise ValueError(f"module {name!r} is a {type(m).__name__}; curvature supports Linear, Conv1d and Conv2d")
        modules[name] = m
    net.eval()
    ref = next(net.parameters())
    sums_a: Dict[str, torch.Tensor] = {}
    sums_g: Dict[str, torch.Tensor] = {}
    sums_d: Dict[str, torch.Tensor] = {}
    count_pos: Dict[str, int] = {}
    n, loglik = 0, 0.0
    req = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        with _Recorder(modules) as rec:
            batches = as_batches(data)
            if chunk_rows > 0 and all(isinstance(m, nn.Linear) for m in modules.values()):
                # small per-example tensors: fewer, larger passes, with the chunk's activations and output
                # gradients (about rows · outputs · Σ widths numbers) kept under 2^23
                width = sum(m.in_features + m.out_features for m in modules.values())
                outputs = max(1, list(modules.values())[-1].out_features)
                batches = _merged(batches, max(1, min(chunk_rows, (1 << 23) // (width * outputs))))
            for batch in batches:
                if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                    raise TypeError(f"data must yield (x, y) pairs, got {type(batch).__name__}")
                x, y = batch
                x, y = x.to(ref.device), y.to(ref.device)
                if x.is_floating_point():
                    x = x.to(ref.dtype)
                check_batch(x, y)
                rec.clear()
                with torch.enable_grad():
                    f = net(x)
                    flat = flatten_output(likelihood, f)
                    likelihood.check_target(y, f)
                    loglik += float(likelihood.log_likelihood(f.detach(), y, check=False).sum())
                    L = hessian_sqrt(likelihood, flat, fisher, mc_samples, generator)
                    outs = [rec.outputs[k] for k in modules]
                    grads = torch.autograd.grad(flat, outs, grad_outputs=L, is_grads_batched=True, allow_unused=True)
                for (name, m), g in zip(modules.items(), grads):
                    a = _augment(_patches(m, rec.inputs[name]), layers[name])  # (B, T, in')
                    if g is None:
                        g = torch.zeros((L.shape[0],) + rec.outputs[name].shape, dtype=a.dtype, device=a.device)
                    g = _grad_positions(m, g)  # (C, B, T, out)
                    if factors:
                        af = a.reshape(-1, a.shape[-1])
                        gf = g.reshape(-1, g.shape[-1])
                        sums_a[name] = sums_a.get(name, 0) + af.T @ af
                        sums_g[name] = sums_g.get(name, 0) + gf.T @ gf
                        count_pos[name] = count_pos.get(name, 0) + af.shape[0]
                    if diagonal:
                        if a.shape[1] == 1:
                            d = (g[:, :, 0].pow(2).sum(0)).T @ a[:, 0].pow(2)
                        else:
                            d = torch.einsum("cbto,bti->cboi", g, a).pow(2).sum((0, 1))
                        sums_d[name] = sums_d.get(name, 0) + d
                n += x.shape[0]
    finally:
        for p, r in zip(net.parameters(), req):
            p.requires_grad_(r)
    if n == 0:
        raise ValueError("data yielded no examples")
    out = Curvature(num_examples=n, log_likelihood=loglik)
    for name in modules:
        out.layers[name] = LayerFactors(
            A=sums_a[name] / count_pos[name] if factors else None,
            G=sums_g[name] / n if factors else None,
            diag=sums_d[name] / n if diagonal else None,
            bias=layers[name],
            positions=count_pos.get(name, n) // n if factors else 1,
        )
    return out


# -------------------------------------------------------------------------------------------------------------
# Jacobians for the linearized predictive and the full GGN
# -------------------------------------------------------------------------------------------------------------
def output_jacobians(
    net: nn.Module, x: torch.Tensor, likelihood: Likelihood, layers: Mapping[str, bool]
) -> Tuple[torch.Tensor, Dict[str, Tuple[torch.Tensor, torch.Tensor]]]:
    r"""Outputs and, per layer, the inputs and the Jacobian of the outputs wrt its pre-activations.

    One forward and one batched backward (``K`` vectors) for the whole batch: no loop over examples.

    :returns: ``f`` ``(B, K)`` and ``{layer: (a (B, T, in'), J_s (K, B, T, out))}`` with
        :math:`J_s[k, b, t] = \partial f_{bk} / \partial s_{bt}`.
    """
    modules = {name: net.get_submodule(name) for name in layers}
    req = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        with _Recorder(modules) as rec, torch.enable_grad():
            f = flatten_output(likelihood, net(x))
            K = f.shape[-1]
            eye = torch.eye(K, dtype=f.dtype, device=f.device).unsqueeze(1).expand(K, f.shape[0], K)
            outs = [rec.outputs[k] for k in modules]
            grads = torch.autograd.grad(f, outs, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
            res = {}
            for (name, m), g in zip(modules.items(), grads):
                a = _augment(_patches(m, rec.inputs[name]), layers[name])
                if g is None:
                    g = torch.zeros((K,) + rec.outputs[name].shape, dtype=f.dtype, device=f.device)
                res[name] = (a, _grad_positions(m, g))
    finally:
        for p, r in zip(net.parameters(), req):
            p.requires_grad_(r)
    return f.detach(), res


def param_jacobians(
    net: nn.Module,
    x: torch.Tensor,
    likelihood: Likelihood,
    params: Mapping[str, Optional[torch.Tensor]],
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Outputs ``(B, K)`` and the Jacobian ``(B, K, P)`` wrt the selected parameter entries, via ``torch.func``.

    :param params: ``{parameter name: flat bool mask or None (all entries)}``, in the order of the flat vector.
    """
    from torch.func import functional_call, jacrev

    named = dict(net.named_parameters())
    named.update(dict(net.named_buffers()))
    chosen = {k: named[k].detach() for k in params}

    def fn(ps):
        full = dict(named)
        full.update(ps)
        return flatten_output(likelihood, functional_call(net, full, (x,)))

    net.eval()
    jac = jacrev(fn)(chosen)
    cols = []
    for k, mask in params.items():
        j = jac[k].reshape(x.shape[0], -1, chosen[k].numel())
        cols.append(j if mask is None else j[:, :, mask.reshape(-1)])
    with torch.no_grad():
        f = fn(chosen)
    return f, torch.cat(cols, -1)


def full_ggn(
    net: nn.Module,
    data,
    likelihood: Likelihood,
    params: Mapping[str, Optional[torch.Tensor]],
) -> Tuple[torch.Tensor, int, float]:
    r"""The exact GGN :math:`\sum_n J_n^\top H_n J_n` over the selected parameter entries (``torch.func`` Jacobians).

    :returns: ``(GGN (P, P), number of examples, log-likelihood sum)`` (the GGN is a sum, not a mean).
    """
    ref = next(net.parameters())
    ggn, n, loglik = None, 0, 0.0
    for batch in as_batches(data):
        x, y = batch
        x, y = x.to(ref.device), y.to(ref.device)
        if x.is_floating_point():
            x = x.to(ref.dtype)
        check_batch(x, y)
        f, J = param_jacobians(net, x, likelihood, params)
        likelihood.check_target(y, f if not isinstance(likelihood, Bernoulli) else f.squeeze(-1))
        loglik += float(likelihood.log_likelihood(f if not isinstance(likelihood, Bernoulli) else f.squeeze(-1), y,
                                                  check=False).sum())  # fmt: skip
        L = hessian_sqrt(likelihood, f, "exact")  # (C, B, K)
        LJ = torch.einsum("cbk,bkp->cbp", L, J).reshape(-1, J.shape[-1])
        g = LJ.T @ LJ
        ggn = g if ggn is None else ggn + g
        n += x.shape[0]
    if n == 0:
        raise ValueError("data yielded no examples")
    return ggn, n, loglik


def dense_bytes(num_params: int, dtype: torch.dtype, batch: int = 0, outputs: int = 1) -> int:
    """Bytes a dense ``full`` posterior needs: three ``P×P`` matrices (GGN, precision/Cholesky, covariance) and one
    batch of Jacobians ``B·K·P``."""
    item = torch.empty((), dtype=dtype).element_size()
    return item * (3 * num_params * num_params + batch * outputs * num_params)
