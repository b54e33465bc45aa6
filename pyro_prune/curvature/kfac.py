r"""KFAC factors and the exact diagonal GGN of a network's Linear/Conv layers, in one pass over the data.

For a network :math:`f_w` and per-example loss :math:`\ell_n = -\log p(y_n \mid f_w(x_n))` the generalized
Gauss-Newton matrix (GGN) is

.. math::

    \mathrm{GGN} = \sum_n J_n^\top H_n J_n, \qquad J_n = \partial f_w(x_n) / \partial w, \qquad
    H_n = \partial^2 \ell_n / \partial f^2 = \sum_c L_{nc} L_{nc}^\top ,

with the "square roots" :math:`L_{nc}` of the likelihood's Hessian in output space, which the likelihood class
provides (:meth:`~pyro_prune.model.likelihoods.Likelihood.hessian_sqrt`: exact, or the sampled-label Fisher with
``fisher="mc"``).

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
Gaussian likelihood, :math:`G = I/\sigma^2` is constant and KFAC is exact.  The exact diagonal of the block is
:math:`\sum_n \sum_c (\sum_t g_{nct} a_{nt}^\top)^{\circ 2}`.

Everything is collected with module hooks (:mod:`~pyro_prune.curvature.recording`) in one pass over the data (one
forward and one batched backward per batch, ``torch.autograd.grad(..., is_grads_batched=True)``).  The network
runs in eval mode; parameters of other modules (BatchNorm, LayerNorm, ...) are constants here: they stay point
estimates.  The posterior precisions built from the factors are in :mod:`~pyro_prune.curvature.precision`.

References

[1] Hippolyt Ritter, Aleksandar Botev, David Barber. "A Scalable Laplace Approximation for Neural Networks",
    ICLR 2018.
[2] Roger Grosse, James Martens. "A Kronecker-factored approximate Fisher matrix for convolution layers",
    ICML 2016.
[3] James Martens, Roger Grosse. "Optimizing Neural Networks with Kronecker-factored Approximate Curvature",
    ICML 2015.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, Mapping, Optional

import torch
import torch.nn as nn

from .._checks import as_batches, check_int, unpack_batch
from ..model.likelihoods import Fisher, Likelihood
from .recording import Recorder, frozen, load_batch, tracked_modules

__all__ = ["LayerFactors", "Curvature", "kfac"]


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


@dataclass
class _LayerSums:
    """Running sums of one layer over the batches: :math:`\\sum a a^\\top`, :math:`\\sum g g^\\top`, the diagonal
    :math:`\\sum_c (\\sum_t g_{ct} a_t^\\top)^{\\circ 2}` and the number of rows of ``A``."""

    A: Optional[torch.Tensor] = None
    G: Optional[torch.Tensor] = None
    diag: Optional[torch.Tensor] = None
    rows: int = 0

    def add_factors(self, a: torch.Tensor, g: torch.Tensor) -> None:
        """Add one batch's ``a`` ``(B, T, in')`` and ``g`` ``(C, B, T, out)`` to the KFAC sums."""
        af, gf = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
        self.A = af.T @ af if self.A is None else self.A + af.T @ af
        self.G = gf.T @ gf if self.G is None else self.G + gf.T @ gf
        self.rows += af.shape[0]

    def add_diagonal(self, a: torch.Tensor, g: torch.Tensor) -> None:
        """Add one batch's exact GGN diagonal (per example, the gradient sums over positions before squaring)."""
        if a.shape[1] == 1:
            d = g[:, :, 0].pow(2).sum(0).T @ a[:, 0].pow(2)
        else:
            d = torch.einsum("cbto,bti->cboi", g, a).pow(2).sum((0, 1))
        self.diag = d if self.diag is None else self.diag + d

    def factors(self, n: int, bias: bool) -> LayerFactors:
        """The normalized :class:`LayerFactors` after ``n`` examples."""
        has_factors = self.A is not None
        return LayerFactors(
            A=self.A / self.rows if has_factors else None,
            G=self.G / n if has_factors else None,
            diag=None if self.diag is None else self.diag / n,
            bias=bias,
            positions=self.rows // n if has_factors else 1,
        )


def _merged(batches: Iterable, rows: int) -> Iterator:
    """Concatenate consecutive ``(x, y)`` batches into chunks of at most ``rows`` rows (fewer, larger passes; the
    sums are the same).  A batch larger than ``rows`` passes as it is."""
    xs: list = []
    ys: list = []
    n = 0

    def flush():
        return (xs[0], ys[0]) if len(xs) == 1 else (torch.cat(xs), torch.cat(ys))

    for batch in batches:
        x, y = unpack_batch(batch, "data")
        if xs and (n + x.shape[0] > rows or x.shape[1:] != xs[0].shape[1:] or y.shape[1:] != ys[0].shape[1:]):
            yield flush()
            xs, ys, n = [], [], 0
        xs.append(x)
        ys.append(y)
        n += x.shape[0]
    if xs:
        yield flush()


def _chunked(data, modules: Mapping[str, nn.Module], chunk_rows: int) -> Iterable:
    """The data's batches, merged into chunks for networks of Linear layers only (small per-example tensors):
    fewer, larger passes, with the chunk's activations and output gradients (about rows · outputs · Σ widths
    numbers) kept under :math:`2^{23}`."""
    batches = as_batches(data)
    if chunk_rows == 0 or not all(isinstance(m, nn.Linear) for m in modules.values()):
        return batches
    width = sum(m.in_features + m.out_features for m in modules.values())
    outputs = max(1, list(modules.values())[-1].out_features)
    return _merged(batches, max(1, min(chunk_rows, (1 << 23) // (width * outputs))))


def batch_gradients(
    net: nn.Module, rec: Recorder, x: torch.Tensor, y: torch.Tensor, likelihood: Likelihood, hessian: dict
) -> tuple:
    """One forward and one batched backward: the batch's log-likelihood sum and every layer's gradients of
    :math:`\\langle f, L_c\\rangle` wrt its pre-activations (also the dense GGN's pass, :mod:`.ggn`)."""
    rec.clear()
    with torch.enable_grad():
        f = net(x)
        flat = likelihood.flatten_output(f)
        likelihood.check_target(y, f)
        loglik = float(likelihood.log_likelihood(f.detach(), y, check=False).sum().detach())  # learned sigma: grad
        L = likelihood.hessian_sqrt(flat, **hessian)  # (C, B, K)
        return loglik, rec.backward(flat, L)


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
    :param likelihood: a likelihood with an output Hessian
        (:meth:`~pyro_prune.model.likelihoods.Likelihood.exact_hessian_sqrt`): :class:`~pyro_prune.Categorical`,
        :class:`~pyro_prune.Bernoulli`, :class:`~pyro_prune.Gaussian` (fixed or learned scale), or your own.
    :param layers: ``{module name: whether its bias is included}`` for Linear/Conv1d/Conv2d modules of ``net``.
    :param fisher: ``"exact"`` GGN or ``"mc"`` sampled-label Fisher (``mc_samples`` labels per example).
    :param factors: collect ``A`` and ``G``.
    :param diagonal: collect the exact diagonal GGN (memory ``C·B·out·in`` per batch for convolutions).
    :param chunk_rows: for networks of Linear layers only, consecutive batches are concatenated into chunks of at
        most this many rows (fewer, larger passes; the sums are unchanged; fewer rows for wide layers, see
        ``_chunked``); 0 keeps the data's batches.
    :returns: :class:`Curvature` (factors divided by the number of examples, as in the module docstring).
    :raises ValueError: empty data, NaN data, unsupported layers or likelihoods, an unknown ``fisher``.
    """
    likelihood.check_curvature()
    chunk_rows = check_int("chunk_rows", chunk_rows, 0)
    modules = tracked_modules(net, layers)
    hessian = dict(fisher=fisher, mc_samples=mc_samples, generator=generator)
    sums = {name: _LayerSums() for name in modules}
    n, loglik = 0, 0.0
    net.eval()
    ref = next(net.parameters())
    with frozen(net), Recorder(modules) as rec:
        for batch in _chunked(data, modules, chunk_rows):
            x, y = load_batch(batch, ref)
            batch_loglik, grads = batch_gradients(net, rec, x, y, likelihood, hessian)
            loglik += batch_loglik
            for name, g in zip(modules, grads):
                a, g = rec.layer_rows(name, layers[name], g)
                if factors:
                    sums[name].add_factors(a, g)
                if diagonal:
                    sums[name].add_diagonal(a, g)
            n += x.shape[0]
    if n == 0:
        raise ValueError("data yielded no examples")
    return Curvature({name: sums[name].factors(n, layers[name]) for name in modules}, n, loglik)
