r"""Data parallelism: the scaling of a worker's mini-batch objective, and curvature summed over workers.

Nothing here starts processes: launching is Lightning's (``Trainer(strategy="ddp", devices=...)``) or
``torchrun``'s. Every function is the identity when ``torch.distributed`` is not initialized (one process).

**The objective under data parallelism.** With :math:`W` workers, worker :math:`r` holding a mini-batch
:math:`\mathcal B_r` of :math:`B_r` examples (global batch :math:`B = \sum_r B_r`) and :math:`N` training
examples in all, each worker minimizes

.. math::

    \mathcal L_r = -c_r\, \frac{N}{B_r} \sum_{b \in \mathcal B_r} \ell_b + \beta\,\mathrm{KL}(q\,\|\,p), \qquad
    c_r = \frac{W B_r}{B},

and ``DistributedDataParallel`` averages the gradients, :math:`\frac1W\sum_r \nabla \mathcal L_r = \nabla\big(
-\frac{N}{B}\sum_{b} \ell_b + \beta\,\mathrm{KL}\big)`: the single-process gradient on the concatenated batch,
the likelihood scaled by the global data size and the KL counted once per global step. With equal batches
(``DistributedSampler`` pads the shards to equal length) :math:`c_r = 1`; :func:`likelihood_factor` computes
:math:`c_r` with one all-reduce of the batch sizes, so uneven shards are exact too.  Strategies that *sum*
gradients instead of averaging them would need :math:`\beta\,\mathrm{KL}/W` (none of Lightning's does).

**Curvature.** :func:`all_reduce_curvature` turns the :class:`~pyro_prune.curvature.Curvature` of each worker's
shard into that of the union of the shards: the factors of :func:`~pyro_prune.curvature.kfac` are means
(:math:`A = \frac{1}{NT}\sum a a^\top`, :math:`G = \frac1N\sum g g^\top`, the diagonal :math:`\frac1N\sum`), so each
is multiplied back by its worker's count, summed over workers and divided by the global count.
:func:`all_reduce_sums` does the same for passes whose results are plain sums over examples: the dense GGN of
``structure="full"``, each GGN–matrix product of ``structure="lowrank"`` and the held-out scores of
:math:`\tau`-tuning, each with its example count and log-likelihood sum.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import torch
import torch.distributed as dist

from .curvature import Curvature, LayerFactors

__all__ = ["is_distributed", "world_size", "likelihood_factor", "all_reduce_curvature", "all_reduce_sums"]


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is available and a process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def world_size(group: Optional[Any] = None) -> int:
    """The number of processes of ``group`` (the default group), 1 without a process group."""
    return dist.get_world_size(group) if is_distributed() else 1


def likelihood_factor(batch: int, ref: torch.Tensor, group: Optional[Any] = None) -> float:
    r"""The factor :math:`c_r = W B_r / B` of this worker's likelihood term (module docstring); 1.0 in one process.

    :param batch: :math:`B_r`, this worker's mini-batch size.
    :param ref: a tensor on the device the process group communicates on (the batch, a parameter).
    :raises ValueError: ``batch`` is not positive.
    """
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    size = world_size(group)
    if size == 1:
        return 1.0
    total = torch.tensor([float(batch)], dtype=torch.float64, device=ref.device)
    dist.all_reduce(total, group=group)
    return batch * size / float(total)


def all_reduce_sums(
    total: torch.Tensor, count: int, log_likelihood: float, group: Optional[Any] = None
) -> Tuple[torch.Tensor, int, float]:
    r"""Sum a pass over this worker's shard, :math:`(\sum_{n \in \mathcal D_r} t_n,\ N_r,\ \sum_{n \in
    \mathcal D_r} \log p_n)`, over the workers: every worker gets :math:`(\sum_n t_n, N, \sum_n \log p_n)` of the
    union of the shards. Returns the arguments themselves when ``torch.distributed`` is not initialized.

    :param total: :math:`\sum_n t_n`, a tensor (a dense GGN ``(P, P)``, a GGN–matrix product ``(P, m)``, a score
        ``(G,)``...) of the same shape on every worker; it is not modified.
    :param count: :math:`N_r \ge 0`, the examples this worker summed over.
    :param log_likelihood: their log-likelihood sum (0.0 where the pass has none).
    :returns: ``(total, count, log_likelihood)`` over all workers.
    :raises TypeError: ``total`` is not a tensor.
    """
    if not torch.is_tensor(total):
        raise TypeError(f"total must be a tensor, got {type(total).__name__}")
    if not is_distributed():
        return total, count, log_likelihood
    out = total.clone()
    dist.all_reduce(out, group=group)
    scalars = torch.tensor([float(count), float(log_likelihood)], dtype=torch.float64, device=total.device)
    dist.all_reduce(scalars, group=group)
    return out, int(round(float(scalars[0]))), float(scalars[1])


def _sum(t: Optional[torch.Tensor], weight: float, group: Optional[Any]) -> Optional[torch.Tensor]:
    """:math:`\\sum_r` ``weight_r · t_r`` over the workers (``None`` stays ``None``)."""
    if t is None:
        return None
    out = t * weight
    dist.all_reduce(out, group=group)
    return out


def all_reduce_curvature(curvature: Curvature, group: Optional[Any] = None) -> Curvature:
    r"""The :class:`~pyro_prune.curvature.Curvature` of all workers' shards together, from each worker's own.

    Each worker calls it with the result of :func:`~pyro_prune.curvature.kfac` on its shard; every worker gets
    the same result, equal (up to summation order) to one process's :func:`~pyro_prune.curvature.kfac` on the
    union of the shards:

    .. math::

        A = \frac{\sum_r N_r T A_r}{N T}, \qquad G = \frac{\sum_r N_r G_r}{N}, \qquad
        \mathrm{diag} = \frac{\sum_r N_r \,\mathrm{diag}_r}{N}, \qquad N = \sum_r N_r,

    and the log-likelihoods summed. Returns ``curvature`` itself when ``torch.distributed`` is not initialized.

    :param curvature: this worker's curvature (its ``num_examples`` :math:`N_r \ge 1`).
    :param group: the process group (default: the world).
    :raises TypeError: ``curvature`` is not a :class:`~pyro_prune.curvature.Curvature`.
    :raises ValueError: the workers' layers differ in positions per example :math:`T` (another input shape).
    """
    if not isinstance(curvature, Curvature):
        raise TypeError(f"curvature must be a pyro_prune.curvature.Curvature (from kfac), got {curvature!r}")
    if not is_distributed():
        return curvature
    n_r, names = curvature.num_examples, list(curvature.layers)
    ref = next((t for f in curvature.layers.values() for t in (f.A, f.G, f.diag) if t is not None), None)
    device = ref.device if ref is not None else torch.device("cpu")
    counts = [float(n_r), float(curvature.log_likelihood)] + [float(curvature.layers[k].positions) for k in names]
    counts_t = torch.tensor(counts, dtype=torch.float64, device=device)
    dist.all_reduce(counts_t, group=group)
    largest = torch.tensor(counts[2:], dtype=torch.float64, device=device)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX, group=group)
    size = world_size(group)
    n = int(round(float(counts_t[0])))
    layers = {}
    for name, total_t, max_t in zip(names, counts_t[2:].tolist(), largest.tolist()):
        f = curvature.layers[name]
        if total_t != f.positions * size or max_t != f.positions:  # all equal: the sum is W times the largest
            raise ValueError(f"layer {name!r}: the workers' positions per example differ (inputs of other shapes?)")
        layers[name] = LayerFactors(
            A=None if f.A is None else _sum(f.A, n_r * f.positions, group) / (n * f.positions),
            G=None if f.G is None else _sum(f.G, n_r, group) / n,
            diag=None if f.diag is None else _sum(f.diag, n_r, group) / n,
            bias=f.bias,
            positions=f.positions,
        )
    return dataclasses.replace(curvature, layers=layers, num_examples=n, log_likelihood=float(counts_t[1]))
