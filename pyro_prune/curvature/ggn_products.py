r"""GGN–matrix products without the GGN, and the top eigenpairs of the GGN from them (for the low-rank Laplace).

The GGN over chosen parameter entries, :math:`C = \frac1N\sum_n J_n^\top H_n J_n` (the mean over the data set;
:math:`J_n` the ``(K, P)`` Jacobian of the outputs, :math:`H_n = \sum_c L_{nc} L_{nc}^\top` the likelihood's output
Hessian through its square roots, :func:`~pyro_prune.curvature.hessian_sqrt`), is applied to a block of vectors
``V (P, m)`` by one pass over the data: per batch, the Jacobian–vector products :math:`J V` (forward mode,
``torch.func.jvp`` under ``vmap``), the output Hessian :math:`H (J V)`, and the vector–Jacobian products
:math:`J^\top H J V` (reverse mode, ``torch.func.vjp`` under ``vmap``).  Neither :math:`C` nor :math:`J` of the data
set is ever formed: the memory is :math:`O(P m)` plus one batch's activations times ``chunk`` vectors.

:func:`ggn_eigh` finds the top-``k`` eigenpairs of :math:`C` by randomized subspace iteration with a Rayleigh–Ritz
step [1, Alg. 4.4 and 5.3]: a seeded Gaussian test matrix :math:`\Omega` ``(P, k + p)`` (``p`` the oversampling),
``q`` power steps :math:`Q \leftarrow \mathrm{qr}(C Q)`, then :math:`T = Q^\top C Q = S \Theta S^\top` and
:math:`U = Q S_{:, 1..k}`: ``q + 1`` passes over the data in all.  The error of the :math:`i`-th eigenvalue decays as
:math:`(\lambda_{k+p+1}/\lambda_i)^{2q+1}`; with :math:`k + p \ge P` the subspace is the whole space and the
eigenpairs are exact after one pass.

References

[1] Nathan Halko, Per-Gunnar Martinsson, Joel A. Tropp. "Finding Structure with Randomness: Probabilistic Algorithms
    for Constructing Approximate Matrix Decompositions", SIAM Review 2011.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch.func import functional_call, jvp, vjp, vmap
from tqdm.auto import tqdm

from .._checks import as_batches
from ..model.likelihoods import Fisher, Likelihood
from .ggn import param_jacobians
from .recording import load_batch

__all__ = ["Eigensolver", "GGNOperator", "ggn_eigh", "jacobian_products"]

#: ``reduce(sum of products (P, m), examples, log-likelihood sum) -> the same over every worker`` (data
#: parallelism: :func:`pyro_prune.distributed.all_reduce_sums`).
Reduce = Callable[[torch.Tensor, int, float], Tuple[torch.Tensor, int, float]]


@dataclass(frozen=True)
class Eigensolver:
    """Settings of the randomized subspace iteration of :func:`ggn_eigh`.

    :param oversample: extra test vectors :math:`p` beyond the rank :math:`k` (the subspace has
        :math:`\\min(k + p, P)` columns).
    :param iterations: power steps :math:`q` (passes over the data: ``q + 1``).
    :param seed: seed of the Gaussian test matrix (and of the sampled labels for ``fisher="mc"``).
    :param chunk: vectors pushed through the network at once (memory: ``chunk`` × one batch's activations).
    :param progress: show a tqdm bar over the passes.
    """

    oversample: int = 10
    iterations: int = 4
    seed: int = 0
    chunk: int = 64
    progress: bool = False

    def __post_init__(self):
        for name in ("oversample", "iterations", "seed", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Eigensolver.{name} must be an int, got {value!r}")
        if self.oversample < 0 or self.iterations < 0 or self.chunk < 1:
            raise ValueError(
                f"Eigensolver needs oversample >= 0, iterations >= 0 and chunk >= 1, got {self.oversample}, "
                f"{self.iterations} and {self.chunk}"
            )


class GGNOperator:
    r"""The mean GGN :math:`C` over the entries ``masks`` selects (``{parameter name: flat bool mask}``, in the order
    of the flat vector) as a linear operator: :meth:`matmul` is one pass over ``data``.

    :param data: a re-iterable ``DataLoader`` / list of ``(x, y)`` batches or one ``(x, y)`` tuple.
    :param reduce: applied to each pass's sums before the mean is taken (default: none); under data parallelism
        :func:`pyro_prune.distributed.all_reduce_sums` makes :math:`C` the mean GGN of the union of the workers'
        shards, every product identical on every worker.
    :ivar num_examples: examples seen by the first pass; :ivar log_likelihood: their log-likelihood sum.
    """

    def __init__(self, net: nn.Module, data: Iterable, likelihood: Likelihood, masks: Mapping[str, torch.Tensor],
                 fisher: Fisher = "exact", seed: int = 0, chunk: int = 64,
                 reduce: Optional[Reduce] = None):  # fmt: skip
        likelihood.check_curvature()
        self.net, self.data, self.likelihood, self.fisher = net, data, likelihood, fisher
        self.seed, self.chunk, self.reduce = seed, chunk, reduce
        named = dict(net.named_parameters())
        named.update(dict(net.named_buffers()))
        self.base = {k: v.detach() for k, v in named.items()}
        self.masks = {k: m for k, m in masks.items() if bool(m.any())}
        self.index = {k: m.nonzero().reshape(-1).to(self.base[k].device) for k, m in self.masks.items()}
        self.numel = int(sum(int(i.numel()) for i in self.index.values()))
        self.num_examples: Optional[int] = None
        self.log_likelihood = 0.0

    @property
    def reference(self) -> torch.Tensor:
        return next(iter(self.base.values()))

    def _tangents(self, V: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Columns of ``V (P, m)`` as parameter-shaped tangents ``{name: (m,) + shape}`` (0 off the selection)."""
        out, pos = {}, 0
        for k, idx in self.index.items():
            t = V.new_zeros(V.shape[1], self.base[k].numel())
            t[:, idx] = V[pos : pos + idx.numel()].T
            out[k] = t.reshape((V.shape[1],) + self.base[k].shape)
            pos += idx.numel()
        return out

    def _gather(self, grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{name: (m,) + shape}`` back to ``(P, m)`` over the selected entries."""
        return torch.cat([grads[k].reshape(grads[k].shape[0], -1)[:, idx] for k, idx in self.index.items()], 1).T

    def _batch_product(self, x: torch.Tensor, y: torch.Tensor, V: torch.Tensor, generator) -> Tuple[Any, float]:
        primals = {k: self.base[k] for k in self.index}

        def fn(ps):
            return self.likelihood.flatten_output(functional_call(self.net, {**self.base, **ps}, (x,)))

        f, vjp_fn = vjp(fn, primals)
        f = f.detach()
        self.likelihood.check_target(y, f)
        loglik = float(self.likelihood.log_likelihood(f, y, check=False).sum())
        L = self.likelihood.hessian_sqrt(f, self.fisher, 1, generator)  # (C, B, K)
        parts = []
        for Vc in V.split(self.chunk, dim=1):
            JV = vmap(lambda t: jvp(fn, (primals,), (t,))[1])(self._tangents(Vc))  # (m, B, K)
            HJV = torch.einsum("cbk,cbl,mbl->mbk", L, L, JV)
            parts.append(self._gather(vmap(vjp_fn)(HJV)[0]))
        return torch.cat(parts, 1), loglik

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        """:math:`C V` for ``V`` ``(P, m)`` (one pass over the data).

        :raises ValueError: the data yields no examples, or another number of examples than on the first pass (an
            iterator that cannot be iterated twice).
        """
        was = self.net.training
        self.net.eval()
        generator = torch.Generator(device=self.reference.device).manual_seed(self.seed)  # same labels every pass
        out, seen, loglik = torch.zeros_like(V), 0, 0.0
        try:
            with torch.no_grad():
                for batch in as_batches(self.data):
                    x, y = load_batch(batch, self.reference)
                    with torch.enable_grad():
                        prod, ll = self._batch_product(x, y.to(x.device), V.to(x.dtype), generator)
                    out += prod.detach()
                    seen, loglik = seen + x.shape[0], loglik + ll
        finally:
            self.net.train(was)
        if self.reduce is not None:
            out, seen, loglik = self.reduce(out, seen, loglik)
        if self.num_examples is None:
            if seen == 0:
                raise ValueError("data yielded no examples")
            self.num_examples, self.log_likelihood = seen, loglik
        elif seen != self.num_examples:
            raise ValueError(
                f"data yielded {seen} examples on a later pass and {self.num_examples} on the first: structure="
                "'lowrank' iterates the data several times; pass a DataLoader, a list of batches or an (x, y) tuple"
            )
        return out / seen


def _orthonormal(Y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(Y.double())[0].to(Y.dtype)


def ggn_eigh(
    operator: GGNOperator, rank: int, solver: Optional[Eigensolver] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""The top-``rank`` eigenpairs of the operator's GGN by randomized subspace iteration (module docstring).

    The test matrix is drawn on the CPU from a generator seeded with ``solver.seed`` (then moved to the parameters'
    device), so it is the same on every device and every worker: with the operator's ``reduce`` summing each
    product over a process group, every worker runs the same iteration.

    :returns: eigenvalues ``(rank,)`` in decreasing order (clamped at 0) and orthonormal eigenvectors
        ``(P, rank)``, in the parameters' dtype.
    """
    n, ref = operator.numel, operator.reference
    solver = Eigensolver() if solver is None else solver
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"rank must be an int, got {rank!r}")
    if not 1 <= rank <= n:
        raise ValueError(f"rank must lie in [1, {n}] (the number of weights the posterior covers), got {rank}")
    m = min(n, rank + solver.oversample)
    g = torch.Generator(device="cpu").manual_seed(solver.seed)  # the same start on every device and worker
    start = torch.randn(n, m, generator=g, dtype=torch.float64, device="cpu")
    Q = _orthonormal(start.to(dtype=ref.dtype, device=ref.device))
    for _ in tqdm(range(solver.iterations), disable=not solver.progress, desc="lowrank GGN", unit="pass"):
        Q = _orthonormal(operator.matmul(Q))
    T = Q.T.double() @ operator.matmul(Q).double()
    theta, S = torch.linalg.eigh((T + T.T) / 2)
    top = theta.flip(0)[:rank]
    U = Q.double() @ S.flip(1)[:, :rank]
    if not bool(torch.isfinite(top).all()):
        raise FloatingPointError("the GGN has non-finite eigenvalues: the curvature itself is not finite")
    return top.clamp_min(0).to(ref.dtype), U.to(ref.dtype)


def jacobian_products(
    net: nn.Module,
    x: torch.Tensor,
    likelihood: Likelihood,
    masks: Mapping[str, torch.Tensor],
    vecs: torch.Tensor,
    budget: int = 64,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per parameter (site) :math:`s`, the Gram matrix :math:`J_s J_s^\top` and the projection :math:`J_s U_s` of
    the Jacobian of the outputs wrt the selected entries, for the low-rank GLM predictive.

    The Jacobian is formed for ``max(1, budget // K)`` examples at a time (``torch.func.jacrev``), so its memory is
    at most ``max(budget, K) · P`` numbers: :math:`O(Pk)` with ``budget`` of the order of the rank.

    :param masks: ``{parameter name: flat bool mask}`` (entries in the order of the rows of ``vecs``).
    :param vecs: :math:`U` ``(P, k)``.
    :returns: ``f`` ``(B, K)``, ``JJ`` ``(S, B, K, K)`` and ``JU`` ``(S, B, K, k)`` over the ``S`` sites with a
        selected entry.
    """
    masks = {k: m for k, m in masks.items() if bool(m.any())}
    sizes = [int(m.sum()) for m in masks.values()]
    fs, JJs, JUs = [], [], []
    start, step = 0, 1  # one example first, to learn K
    while start < x.shape[0]:
        f, J = param_jacobians(net, x[start : start + step], likelihood, masks)  # (b, K, P)
        start, step = start + step, max(1, budget // f.shape[-1])
        Js = J.split(sizes, -1)
        fs.append(f)
        JJs.append(torch.stack([torch.einsum("bkp,blp->bkl", j, j) for j in Js]))
        JUs.append(torch.stack([j @ u for j, u in zip(Js, vecs.split(sizes, 0))]))
    return torch.cat(fs), torch.cat(JJs, 1), torch.cat(JUs, 1)
