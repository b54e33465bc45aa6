r"""The sampled-network ensemble of :func:`pyro_prune.predict` in bounded memory (``method="mc"``).

Networks are drawn from the guide ``draw_block`` at a time (the unit in which random numbers are consumed), run
``sample_chunk`` at a time on ``batch_size`` inputs at a time, and the summaries (:math:`\bar p`, mean member entropy,
regression mean and variances) are accumulated member by member, in member order, so that the same seed gives the
same bits whatever the chunking (see :mod:`pyro_prune.prediction`, "Memory" and "Reproducibility").
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from pyro.infer import Predictive
from pyro.infer.autoguide.initialization import InitMessenger, init_to_sample

from .model import BayesianModel

__all__ = ["ensemble", "Members"]

Members = Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]


def entropy(p: torch.Tensor) -> torch.Tensor:
    """The entropy of class probabilities ``p`` over the last dimension."""
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


class _Stream:
    """Summaries accumulated member by member, in member order: the same bits whatever the chunking.

    Classification: the sum of :math:`p_s` and of :math:`H[p_s]`; regression: Welford's running mean and sum of
    squared deviations of the member means, and the sum of :math:`\\sigma_s^2`; unknown task: the sum of outputs.
    """

    def __init__(self, task: str, num_samples: int, num_inputs: Optional[int]) -> None:
        self.task, self.S, self.B = task, num_samples, num_inputs
        self.acc: Dict[str, torch.Tensor] = {}

    def _zeros(self, key: str, like: torch.Tensor) -> torch.Tensor:
        if key not in self.acc:
            shape = tuple(like.shape) if self.B is None else (self.B,) + tuple(like.shape[1:])
            self.acc[key] = like.new_zeros(shape)
        return self.acc[key]

    def add(self, first: int, rows: slice, values: torch.Tensor, scales: Optional[torch.Tensor]) -> None:
        """Members ``first, first + 1, …`` on the inputs ``rows``: ``values`` is ``(n, b, …)``."""
        if self.task == "regression":
            mean, m2, noise = (self._zeros(k, values[0]) for k in ("mean", "m2", "noise"))
            for j in range(values.shape[0]):
                delta = values[j] - mean[rows]
                mean[rows] += delta / (first + j + 1)
                m2[rows] += delta * (values[j] - mean[rows])
                noise[rows] += scales[j].square()
            return
        total = self._zeros("sum", values[0])
        ent = entropy(values) if self.task == "classification" else None
        hsum = self._zeros("entropy", ent[0]) if ent is not None else None
        for j in range(values.shape[0]):
            total[rows] += values[j]
            if ent is not None:
                hsum[rows] += ent[j]

    def result(self, members: Optional[Members], note: str) -> Dict[str, Any]:
        """The :class:`~pyro_prune.prediction.Prediction` arguments: task, size, mean and the summaries."""
        a, S = self.acc, self.S
        kw: Dict[str, Any] = {"task": self.task, "num_samples": S, "members": members, "members_note": note}
        if self.task == "regression":
            return dict(kw, mean=a["mean"], epistemic_var=a["m2"] / S, aleatoric_var=a["noise"] / S)
        ent = a["entropy"] / S if self.task == "classification" else None
        return dict(kw, mean=a["sum"] / S, member_entropy=ent)


def _read_outputs(
    lik: Any, outputs: torch.Tensor, noise: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    r"""Per-member values (probabilities / means / raw outputs) and aleatoric scales of network outputs (``noise``:
    the guide's own Gaussian :math:`\sigma`, replacing the likelihood's)."""
    if lik is None:
        return outputs, None
    if lik.task == "classification":
        return lik.probs(outputs), None
    loc, scale = lik.mean_scale(outputs)
    if noise is not None:
        scale = noise.to(loc).expand_as(loc)
    if loc.shape[-1] == 1:
        loc, scale = loc.squeeze(-1), scale.squeeze(-1)
    return loc, scale


def _predictive_target(model: Any, guide: Any) -> Any:
    """The model as ``Predictive`` should run it.

    ``Predictive`` first runs the model alone to count its plates, which would draw the weights from the prior
    (impossible for improper priors): weight sites get a placeholder there; the posterior draws replace it.
    """
    if not isinstance(model, BayesianModel):
        return model
    weight_sites = set(model.sites) | set(model.scale_sites)  # group scales too (improper priors)
    dtype, device = model.dtype, model.device
    return InitMessenger(
        lambda site: (
            torch.ones(site["fn"].shape(), dtype=dtype, device=device)
            if site["name"] in weight_sites
            else init_to_sample(site)
        )
    )(model)


def _rng_devices(x: torch.Tensor) -> List[int]:
    return [x.device.index if x.device.index is not None else torch.cuda.current_device()] if x.is_cuda else []


class _Draws:
    """Networks drawn from ``guide`` (or the model's prior) in blocks of ``block``, handed out in any chunk sizes.

    The blocks are the only consumer of the random state in :func:`predict`, so the networks depend on the seed,
    ``total``, ``block`` and ``parallel`` only.
    """

    def __init__(self, model: Any, guide: Any, x1: torch.Tensor, total: int, block: int, parallel: bool) -> None:
        self.sampler = guide if guide is not None else model
        self.keep = (set(model.sites) | set(model.scale_sites)) if isinstance(model, BayesianModel) else None
        self.x1, self.left, self.block, self.parallel = x1, total, block, parallel
        self.pieces: List[Dict[str, torch.Tensor]] = []
        self.have = 0

    def _draw_block(self) -> None:
        n = min(self.block, self.left)
        draws = Predictive(self.sampler, num_samples=n, parallel=self.parallel)(self.x1)
        keep = self.keep if self.keep is not None else set(draws) - {"obs", "data"}
        self.pieces.append({k: v for k, v in draws.items() if k in keep})
        self.left -= n
        self.have += n

    def _joined(self) -> Dict[str, torch.Tensor]:
        if len(self.pieces) > 1:
            self.pieces = [{k: torch.cat([p[k] for p in self.pieces]) for k in self.pieces[0]}]
        return self.pieces[0]

    def peek(self) -> Dict[str, torch.Tensor]:
        """The next network, without taking it."""
        if self.have == 0:
            self._draw_block()
        return {k: v[:1] for k, v in self.pieces[0].items()}

    def take(self, n: int) -> Dict[str, torch.Tensor]:
        """The next ``n`` networks, ``{site: (n, …)}``."""
        while self.have < n:
            self._draw_block()
        joined = self._joined()
        self.pieces = [{k: v[n:] for k, v in joined.items()}]
        self.have -= n
        return {k: v[:n] for k, v in joined.items()}


def _forward(target: Any, draws: Dict[str, torch.Tensor], n: int, xb: torch.Tensor, parallel: bool) -> torch.Tensor:
    """Outputs ``(n, b, …)`` of the ``n`` drawn networks on ``xb``; the random state is left untouched.

    In parallel, a lone network runs as a pair (then one is dropped): torch computes a batch of one matrix product
    with other kernels than a batch of several, and its last bits would depend on the chunking.
    """
    m = 2 if parallel and n == 1 else n
    if m != n:
        draws = {k: v.expand((m,) + v.shape[1:]) for k, v in draws.items()}
    with torch.random.fork_rng(devices=_rng_devices(xb)):
        run = Predictive(target, posterior_samples=draws, num_samples=m, parallel=parallel, return_sites=("_RETURN",))
        out = run(xb)["_RETURN"].detach()
    if out.dim() == 0 or out.shape[0] != m:  # a model that ignores the samples (e.g. no latent sites)
        out = out.expand((m,) + out.shape)
    return out[:n]


def _probe_bytes(model: Any, target: Any, draws: _Draws, x: torch.Tensor, parallel: bool) -> Tuple[int, int]:
    """Bytes per (network, input) of every module's output, and bytes per network of the weights."""
    one = draws.peek()
    sizes: List[int] = []

    def hook(module: Any, args: Any, out: Any) -> None:
        outs = out if isinstance(out, (tuple, list)) else (out,)
        sizes.extend(t.numel() * t.element_size() for t in outs if torch.is_tensor(t))

    handles = [m.register_forward_hook(hook) for m in model.modules()] if isinstance(model, torch.nn.Module) else []
    try:
        out = _forward(target, one, 1, x[:1], parallel)
    finally:
        for h in handles:
            h.remove()
    per_row = max(sum(sizes), out.numel() * out.element_size(), 1)
    per_net = sum(v.numel() * v.element_size() for v in one.values())
    return per_row, per_net


def _plan(
    sizes: Tuple[int, int],
    num_samples: int,
    num_inputs: int,
    sample_chunk: Optional[int],
    batch_size: Optional[int],
    max_memory: int,
) -> Tuple[int, int]:
    """``(networks, inputs)`` per forward pass: ``networks * (inputs * per_row + 2 * per_net) <= max_memory``."""
    per_row, per_net = sizes
    rows = batch_size if batch_size is not None else num_inputs
    if sample_chunk is not None:
        nets = sample_chunk
    else:
        nets = max(1, max_memory // (rows * per_row + 2 * per_net))
    if batch_size is None:
        rows = max(1, min(num_inputs, (max_memory // nets - 2 * per_net) // per_row))
    return min(nets, num_samples), min(rows, num_inputs)


def _members_buffer(out: torch.Tensor, values: torch.Tensor, scales: Optional[torch.Tensor], S: int, B: Optional[int]):
    """Empty ``(S, B, …)`` tensors for the kept members (``B=None``: one input batch, any output shape)."""

    def empty(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if t is None:
            return None
        return t.new_empty((S,) + (tuple(t.shape[1:]) if B is None else (B,) + tuple(t.shape[2:])))

    return empty(out), empty(values), empty(scales)


def ensemble(model: Any, guide: Any, x: torch.Tensor, S: int, lik: Any, opts: Dict[str, Any]) -> Dict[str, Any]:
    """Draw, run and summarize ``S`` networks chunk by chunk (module docstring); returns the
    :class:`~pyro_prune.prediction.Prediction` arguments."""
    parallel, max_memory = opts["parallel"], opts["max_memory"]
    target = _predictive_target(model, guide)
    with torch.no_grad():
        draws = _Draws(model, guide, x[:1], S, opts["draw_block"], parallel)
        sizes = _probe_bytes(model, target, draws, x, parallel)
        nets, rows = _plan(sizes, S, x.shape[0], opts["sample_chunk"], opts["batch_size"], max_memory)
        single = rows >= x.shape[0]
        task = "unknown" if lik is None else lik.task
        stream, members, keep, note = _Stream(task, S, None if single else x.shape[0]), None, None, ""
        for first in range(0, S, nets):
            n = min(nets, S - first)
            chunk = draws.take(n)
            for r0 in range(0, x.shape[0], rows):
                out = _forward(target, chunk, n, x[r0 : r0 + rows], parallel)
                values, scales = _read_outputs(lik, out, opts.get("noise"))
                sel = slice(None) if single else slice(r0, r0 + rows)
                stream.add(first, sel, values, scales)
                if keep is None:
                    keep, note = _decide_keep(opts["keep_samples"], (out, values, scales), S, x.shape[0], max_memory)
                    members = _members_buffer(out, values, scales, S, None if single else x.shape[0]) if keep else None
                if keep:
                    idx = (slice(first, first + n),) if single else (slice(first, first + n), sel)
                    for buf, t in zip(members, (out, values, scales)):
                        if buf is not None:
                            buf[idx] = t
    return stream.result(members, note)


def _decide_keep(keep_samples: Optional[bool], first: Tuple, S: int, B: int, max_memory: int) -> Tuple[bool, str]:
    """Keep the members if asked, or (``keep_samples=None``) if they fit in ``max_memory``."""
    out = first[0]
    per = sum(t.numel() * t.element_size() for t in first if t is not None) / max(out.shape[0] * out.shape[1], 1)
    need = int(per * S * B) if out.dim() > 1 else int(per * S)
    if keep_samples is not None:
        return keep_samples, "keep_samples=False"
    return need <= max_memory, f"they take {need / 2**20:.1f} MiB > max_memory={max_memory / 2**20:.1f} MiB"
