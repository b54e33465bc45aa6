r"""Fine-tune a pruned network with its mask fixed, optionally distilling a teacher (the network it was pruned from).

After :func:`~pyro_prune.prune` removes weights, the kept weights sit at their posterior means, which were fitted
together with the noise of the removed ones; a few epochs of training with the mask fixed recover some accuracy
(as magnitude pruning is always followed by fine-tuning). With a **teacher** :math:`t(x)` (e.g. the dense network
the posterior was initialized from, or any callable returning logits) the loss is Hinton et al.'s (2015)
distillation objective, for a student with logits :math:`s(x)`, temperature :math:`T` and weight :math:`\lambda`:

.. math::

    \ell = (1-\lambda)\,\mathrm{CE}\big(s(x), y\big) + \lambda\,T^2\,
    \mathrm{KL}\big(\mathrm{softmax}(t(x)/T)\,\big\|\,\mathrm{softmax}(s(x)/T)\big),

the :math:`T^2` keeping the soft term's gradient on the scale of the hard term's. For regression (floating
targets) both terms are squared errors, :math:`(1-\lambda)\|s - y\|^2 + \lambda\|s - t\|^2` (mean over the batch).

The mask is :mod:`torch.nn.utils.prune`'s: each masked weight is re-parameterized as ``weight_orig * weight_mask``
during training (so removed weights get no gradient and stay exactly zero) and made plain again at the end.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as tprune
from tqdm.auto import tqdm

from .._checks import Batches, as_batches, check_bool, check_int, check_positive, check_real, unpack_batch
from .pruner import PruneResult

__all__ = ["finetune", "distillation_loss"]


def distillation_loss(student: torch.Tensor, target: torch.Tensor, teacher: Optional[torch.Tensor] = None,
                      temperature: float = 2.0, weight: float = 0.0) -> torch.Tensor:  # fmt: skip
    r"""The fine-tuning loss of the module docstring, averaged over the batch.

    :param student: ``(B, K)`` logits (classification, ``target`` integer) or ``(B, ...)`` outputs (regression).
    :param target: ``(B,)`` class indices or real targets shaped like ``student``.
    :param teacher: the teacher's logits/outputs shaped like ``student`` (``None``: the hard term only).
    :param temperature: :math:`T > 0`.
    :param weight: :math:`\lambda \in [0, 1]`, the soft term's weight (0 without a teacher).
    """
    classification = not torch.is_floating_point(target)
    hard = F.cross_entropy(student, target) if classification else F.mse_loss(student, target.to(student.dtype))
    if teacher is None or weight == 0.0:
        return hard
    if classification:
        log_t, log_s = F.log_softmax(teacher / temperature, -1), F.log_softmax(student / temperature, -1)
        soft = F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * temperature**2
    else:
        soft = F.mse_loss(student, teacher)
    return (1.0 - weight) * hard + weight * soft


def _masks_of(pruned: Union[PruneResult, nn.Module]) -> Dict[str, torch.Tensor]:
    """``{parameter name: keep mask}``: a :class:`PruneResult`'s masks (none for a compact structured network,
    whose removed units are gone), else the nonzero entries of every weight of 2 or more dimensions."""
    if isinstance(pruned, PruneResult):
        return {} if pruned.compact is not None else {site: m.bool() for site, m in pruned.masks.items()}
    return {name: p.detach() != 0 for name, p in pruned.named_parameters() if p.dim() >= 2}


def _apply_masks(net: nn.Module, masks: Dict[str, torch.Tensor]) -> None:
    for name, mask in masks.items():
        owner, _, attr = name.rpartition(".")
        module = net.get_submodule(owner)
        if getattr(module, attr, None) is None or getattr(module, attr).shape != mask.shape:
            raise ValueError(f"pruned: the mask of {name!r} does not match the network's parameter")
        tprune.custom_from_mask(module, attr, mask.to(getattr(module, attr).device))


def _remove_masks(net: nn.Module, masks: Dict[str, torch.Tensor]) -> None:
    for name in masks:
        owner, _, attr = name.rpartition(".")
        tprune.remove(net.get_submodule(owner), attr)


def _check_teacher(teacher, temperature, distill_weight) -> float:
    check_positive("temperature", temperature)
    if teacher is not None and not callable(teacher):
        raise TypeError(f"teacher must be a callable returning logits (an nn.Module), got {type(teacher).__name__}")
    if distill_weight is None:
        return 0.7 if teacher is not None else 0.0
    weight = check_real("distill_weight", distill_weight)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distill_weight must be in [0, 1], got {weight}")
    if weight > 0.0 and teacher is None:
        raise ValueError(f"distill_weight={weight} needs a teacher (teacher=None)")
    return weight


def finetune(
    pruned: Union[PruneResult, nn.Module],
    data: Batches,
    epochs: int = 20,
    lr: float = 1e-3,
    teacher: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    temperature: float = 2.0,
    distill_weight: Optional[float] = None,
    weight_decay: float = 0.0,
    progress: bool = False,
) -> nn.Module:
    r"""A fine-tuned copy of a pruned network, its removed weights kept at exactly zero (module docstring).

    :param pruned: a :class:`PruneResult` (its ``module`` with its ``masks``; a compact structured network is
        trained whole) or a plain ``nn.Module``, whose weights (parameters of 2+ dimensions) that are exactly zero
        stay zero. It is not modified.
    :param data: a ``DataLoader`` of ``(x, y)`` batches (its order, e.g. a seeded generator, makes the run
        reproducible) or one ``(x, y)`` tuple; integer ``y``: classification (cross-entropy), floating: squared
        error.
    :param epochs: passes over ``data``.
    :param lr: Adam's learning rate.
    :param teacher: a callable giving logits for ``x`` (e.g. the dense network before pruning, in eval mode),
        evaluated as given, without gradients.
    :param temperature: :math:`T` of the soft term.
    :param distill_weight: :math:`\lambda`; default 0.7 with a teacher, 0 without.
    :param weight_decay: Adam's weight decay (applied to the kept weights only).
    :param progress: show a progress bar over epochs.
    :returns: the trained copy, in eval mode, on the device and in the dtype of ``pruned``'s network.
    :raises TypeError: ``pruned`` is neither; ``teacher`` not callable.
    :raises ValueError: invalid sizes or rates; ``distill_weight > 0`` without a teacher; a mask that does not fit.
    """
    if not isinstance(pruned, (PruneResult, nn.Module)):
        raise TypeError(f"pruned must be a PruneResult or an nn.Module, got {type(pruned).__name__}")
    check_int("epochs", epochs, 1)
    lr, weight_decay = check_positive("lr", lr), float(weight_decay)
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    weight = _check_teacher(teacher, temperature, distill_weight)
    check_bool("progress", progress)
    batches = as_batches(data)
    net = copy.deepcopy(pruned.module if isinstance(pruned, PruneResult) else pruned).train()
    masks = _masks_of(pruned)
    _apply_masks(net, masks)
    ref = next(net.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in tqdm(range(epochs), desc="fine-tune", disable=not progress):
        for batch in batches:
            x, y = unpack_batch(batch, "data", ref.device)
            x = x.to(ref.dtype) if torch.is_floating_point(x) else x
            with torch.no_grad():
                soft = teacher(x) if weight > 0.0 else None
            loss = distillation_loss(net(x), y, soft, temperature, weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    _remove_masks(net, masks)
    return net.eval()
