r"""Where a :func:`~pyro_prune.fit` run stands, kept so that training survives faults and resumes exactly.

* :class:`History`: the per-epoch records ``fit`` returns, with the run's :class:`TrainingState`.
* :class:`TrainingState`: a plain record of a run (epochs done, optimizer steps taken, i.e. the KL warm-up
  position, and the optimizer's state keyed by stable parameter names), with what it was recorded for (the
  training path, the guide class, each parameter's shape), checked when a run resumes. :meth:`TrainingState.
  to_dict` holds only ints, floats, strings, lists, dicts and tensors, so ``torch.save`` of it loads back with
  ``torch.load(weights_only=True)``.
* :class:`NonFiniteError`: raised by ``fit`` *before* an optimizer step whose loss or gradient is not finite.
* The optimizer adapters: :class:`TorchOptimizer` (one torch optimizer over every parameter: the fused path) and
  :class:`PerParamOptimizer` (``pyro.optim``'s one optimizer per parameter: Pyro's SVI), both exporting and
  loading their state by parameter name, never by object id.
* :func:`first_non_finite`: the check before a step, one device synchronization for the loss and every gradient;
  :func:`numerical_rejection`: tells Pyro's validation stopping NaN/invalid values from a data error.

**Parameter names.** On the fused path a parameter is named by where it lives, ``"guide.<name>"`` or
``"model.<name>"`` (``named_parameters()``); on the SVI path by its Pyro ``param`` site (e.g.
``"AutoNormal.locs.0.weight"``), captured from the step's trace. Both are the same in either setting of
``pyro.settings`` ``module_local_params`` and in every process, so a state recorded in one resumes in another.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import pyro
import pyro.optim
import torch
from pyro.params.param_store import module_from_param_with_module_name, normalize_param_name, user_param_name

from ._checks import check_choice, check_int

__all__ = [
    "History",
    "RunCallback",
    "EarlyStopping",
    "TrainingState",
    "NonFiniteError",
    "TorchOptimizer",
    "PerParamOptimizer",
    "first_non_finite",
    "clone_tree",
    "named_module_parameters",
    "numerical_rejection",
    "leaf_parameter",
    "parameter_shapes",
]

#: Version of :meth:`TrainingState.to_dict`'s layout.
STATE_VERSION = 1


class NonFiniteError(FloatingPointError):
    """The loss or a gradient of a training step was NaN or infinite (or Pyro's validation found a distribution's
    parameter invalid, e.g. NaN logits or a zero scale); ``fit`` raised it *before* the step.

    The parameters and optimizer state are those before the failing step (finite); if an earlier update itself
    overflowed, those of the start of the epoch are restored and the message says so. Every exception leaving
    ``fit`` (this one, a data ``ValueError``, a ``KeyboardInterrupt``) carries the run's
    :class:`~pyro_prune.History` so far as ``err.history``; ``err.history.state`` resumes the run.

    :ivar epoch: the epoch of the failing step (counted over resumed runs).
    :ivar step: the optimizer step that was not taken (counted over resumed runs).
    :ivar batch: index of the input batch within the epoch.
    :ivar cause: what was not finite: ``"the loss (nan)"`` or ``"the gradient of <parameter>"``.
    """

    def __init__(self, message: str, epoch: int, step: int, batch: int, cause: str):
        super().__init__(message)
        self.epoch, self.step, self.batch, self.cause = epoch, step, batch, cause


def clone_tree(tree: Any) -> Any:
    """A copy of nested dicts / lists / tuples whose tensors are cloned (detached), other leaves shared."""
    if torch.is_tensor(tree):
        return tree.detach().clone()
    if isinstance(tree, Mapping):
        return {k: clone_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(clone_tree(v) for v in tree)
    return tree


def named_module_parameters(guide: torch.nn.Module, model: Any) -> Dict[str, torch.nn.Parameter]:
    """The parameters the fused path optimizes, ``{"guide.<name>" | "model.<name>": parameter}`` (each once)."""
    named: Dict[str, torch.nn.Parameter] = {}
    seen = set()
    modules = [("guide", guide)] + ([("model", model)] if isinstance(model, torch.nn.Module) else [])
    for prefix, module in modules:
        for name, p in module.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                named[f"{prefix}.{name}"] = p
    return named


class RunCallback:
    """Base of :func:`~pyro_prune.fit` callbacks that see the whole run, not only the epoch's record.

    ``fit`` calls :meth:`on_epoch_end` after each epoch, once the epoch's record and ``history.state`` (the
    :class:`TrainingState` that resumes the run from here) are stored; a ``True`` return stops training.  Plain
    callables ``cb(epoch, record, model, guide)`` remain the simple form.
    """

    def on_epoch_end(self, history: History, model: Any, guide: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class EarlyStopping:
    """Callback that stops ``fit`` when ``monitor`` has not improved for ``patience`` epochs.

    :param monitor: record key, e.g. ``"val_nll"`` or ``"loss"``.
    :param patience: epochs without improvement before stopping.
    :param mode: ``"min"`` or ``"max"``.
    """

    def __init__(self, monitor: str = "val_nll", patience: int = 5, mode: str = "min"):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a record key (str), got {type(monitor).__name__}")
        self.monitor, self.patience = monitor, check_int("patience", patience, 1)
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.best, self.bad = None, 0

    def __call__(self, epoch: int, record: Dict[str, float], model: Any, guide: Any) -> bool:
        if self.monitor not in record:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, not in the record ({sorted(record)})")
        v = record[self.monitor]
        better = self.best is None or (v < self.best if self.mode == "min" else v > self.best)
        self.best, self.bad = (v, 0) if better else (self.best, self.bad + 1)
        return self.bad >= self.patience


@dataclasses.dataclass
class TrainingState:
    """Where a :func:`~pyro_prune.fit` run stands: what ``fit(..., resume=state)`` needs to continue it exactly.

    :ivar epoch: epochs completed (a resumed run numbers its epochs from here).
    :ivar step: optimizer steps taken: the position of the KL warm-up.
    :ivar path: ``"fused"`` or ``"svi"``: the objective the optimizer state belongs to.
    :ivar guide: the guide's class name.
    :ivar shapes: ``{parameter name: shape}`` of every parameter optimized.
    :ivar optimizer: the optimizer state keyed by parameter name (``{"kind": "torch" | "per_param", ...}``).
    :ivar kl_warmup: the run's ``kl_warmup`` (epochs).
    :ivar kl_weight: the run's ``kl_weight``.
    """

    epoch: int
    step: int
    path: str
    guide: str
    shapes: Dict[str, List[int]]
    optimizer: Dict[str, Any]
    kl_warmup: int = 0
    kl_weight: float = 1.0

    def to_dict(self) -> Dict[str, Any]:
        """A plain dict (tensors cloned) that ``torch.save`` writes and ``torch.load(weights_only=True)`` reads."""
        fields = {f.name: clone_tree(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"version": STATE_VERSION, **fields}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingState:
        """The state written by :meth:`to_dict`.

        :raises ValueError: another layout version, or a missing field.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"TrainingState.from_dict needs a dict, got {type(data).__name__}")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"training state version {data.get('version')!r}; this version reads {STATE_VERSION}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"training state lacks {missing}")
        return cls(**{n: clone_tree(data[n]) for n in names})

    def check_compatible(self, path: str, guide: Any, shapes: Mapping[str, List[int]]) -> None:
        """Raise ``ValueError`` unless this state belongs to a run of ``guide``'s class on ``path`` with parameters
        of ``shapes`` (the same names and shapes)."""
        if self.guide != type(guide).__name__:
            raise ValueError(f"resume: the state was recorded for a {self.guide} guide, not {type(guide).__name__}")
        if self.path != path:
            raise ValueError(
                f"resume: the state was recorded on the {self.path} path, this fit takes the {path} path "
                "(alpha, num_particles and local reparameterization must match the resumed run)"
            )
        for name in sorted(set(self.shapes) | set(shapes)):
            mine, theirs = self.shapes.get(name), shapes.get(name)
            if mine is None or theirs is None or list(mine) != list(theirs):
                raise ValueError(
                    f"resume: parameter {name!r} has shape {_fmt(theirs)} here but {_fmt(mine)} in the state: "
                    "the state belongs to another model or guide"
                )


def _fmt(shape: Optional[Iterable[int]]) -> str:
    return "(absent)" if shape is None else str(tuple(shape))


@dataclasses.dataclass
class History:
    """Per-epoch training records, and the state that resumes the run.

    Each record holds ``epoch``, ``loss`` (objective per training example), ``ell`` (mean
    expected log-likelihood per example), ``kl`` (total KL at the epoch's end), ``beta``,
    ``seconds`` and, with validation data, ``val_<metric>`` entries. A resumed run's History starts with the
    records of the run it continues.

    :ivar state: the :class:`TrainingState` after the last completed epoch (or, on an
        exception, after the last step taken): ``fit(..., resume=history)`` continues from it.

    Every exception leaving :func:`~pyro_prune.fit` (``KeyboardInterrupt`` included) carries the History so far as
    ``err.history``.
    """

    records: List[Dict[str, float]] = dataclasses.field(default_factory=list)
    stopped_early: bool = False
    state: Optional[TrainingState] = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> List[float]:
        """The list of one quantity over epochs, e.g. ``history["loss"]``."""
        if not self.records or key not in self.records[-1]:
            raise KeyError(f"no {key!r} in history; have {sorted(self.records[-1]) if self.records else []}")
        return [r.get(key, float("nan")) for r in self.records]

    @property
    def last(self) -> Dict[str, float]:
        return self.records[-1]

    def to_dict(self) -> Dict[str, Any]:
        """The records (JSON-serializable); the training state is ``self.state.to_dict()``."""
        return {"records": list(self.records), "stopped_early": self.stopped_early}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], state: Optional[Mapping[str, Any]] = None) -> History:
        """The History of :meth:`to_dict` (and a state from :meth:`TrainingState.to_dict`, when given)."""
        return cls(
            records=[dict(r) for r in data["records"]],
            stopped_early=bool(data.get("stopped_early", False)),
            state=None if state is None else TrainingState.from_dict(state),
        )


# --------------------------------------------------------------------------------------------------
# optimizer adapters
# --------------------------------------------------------------------------------------------------
class TorchOptimizer:
    """One torch optimizer over every parameter (the fused path's multi-tensor update), state keyed by name.

    :param optimizer: the torch optimizer, built on the values of ``named`` in order.
    :param names: the parameters' names, in the optimizer's order.
    """

    kind = "torch"

    def __init__(self, optimizer: torch.optim.Optimizer, names: List[str]):
        self.optimizer, self.names = optimizer, list(names)

    def step(self, named: Mapping[str, torch.Tensor]) -> None:
        self.optimizer.step()

    def lr(self) -> Optional[float]:
        """The current learning rate (of the first parameter group), ``None`` if the optimizer has none."""
        return self.optimizer.param_groups[0].get("lr")

    def state_dict(self, named: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        """The optimizer's ``state_dict`` with parameter names in place of indices (tensors cloned)."""
        sd = self.optimizer.state_dict()
        groups = [{**g, "params": [self.names[i] for i in g["params"]]} for g in sd["param_groups"]]
        state = {self.names[i]: s for i, s in sd["state"].items()}
        return clone_tree({"kind": self.kind, "state": state, "param_groups": groups})

    def load_state_dict(self, state: Mapping[str, Any], named: Mapping[str, torch.Tensor]) -> None:
        """Load a state from :meth:`state_dict` (parameters matched by name; the state's tensors are copied)."""
        _check_kind(state, self.kind)
        index = {n: i for i, n in enumerate(self.names)}
        try:
            groups = [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]
            per_param = {index[n]: s for n, s in state["state"].items()}
        except KeyError as e:
            raise ValueError(f"resume: the optimizer state names parameter {e.args[0]!r}, which this fit lacks") from e
        self.optimizer.load_state_dict(clone_tree({"state": per_param, "param_groups": groups}))


class PerParamOptimizer:
    """``pyro.optim``'s one torch optimizer per parameter, as Pyro's ``SVI`` steps them, state keyed by name.

    :param optim: the ``pyro.optim`` optimizer (its ``optim_objs`` map a parameter to its torch optimizer or
        scheduler).
    """

    kind = "per_param"

    def __init__(self, optim: pyro.optim.PyroOptim):
        self.optim = optim

    def step(self, named: Mapping[str, torch.Tensor]) -> None:
        self._create_unregistered(named)
        self.optim(set(named.values()))  # as pyro.infer.SVI.step: a set of the step's parameters

    def _create_unregistered(self, named: Mapping[str, torch.Tensor]) -> None:
        """Build the optimizers of parameters Pyro's param store does not name (module-local ones: every guide of
        this library keeps its parameters on itself) when the optimizer or clipping arguments are per-parameter
        callables: ``pyro.optim`` would look the name up in the global store and fail. The callable gets the
        name ``fit`` knows, in the form Pyro would pass."""
        optim = self.optim
        if not (callable(optim.pt_optim_args) or callable(getattr(optim, "pt_clip_args", None))):
            return
        store = pyro.get_param_store()
        for name, p in named.items():
            if p in optim.optim_objs or store.param_name(p) is not None:
                continue
            opt = optim.pt_optim_constructor([p], **_per_param_args(optim.pt_optim_args, optim, name))
            if isinstance(optim, pyro.optim.PyroLRScheduler):
                opt = optim.pt_scheduler_constructor(opt, **optim.kwargs)
            optim.optim_objs[p] = opt
            clip = _per_param_args(getattr(optim, "pt_clip_args", None), optim, name, argc=2)
            optim.grad_clip[p] = functools.partial(optim._clip_grad, **clip) if clip else None

    def lr(self) -> Optional[float]:
        """The current learning rate of one parameter's optimizer (``None`` before the first step)."""
        for obj in self.optim.optim_objs.values():
            opt = obj.optimizer if _is_scheduler(obj) else obj
            return opt.param_groups[0].get("lr")
        return None

    def state_dict(self, named: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        """``{"kind", "state": {name: that parameter's optimizer (and scheduler) state}}`` (tensors cloned)."""
        objs = self.optim.optim_objs
        state = {name: _optimizer_state(objs[p]) for name, p in named.items() if p in objs}
        return clone_tree({"kind": self.kind, "state": state})

    def load_state_dict(self, state: Mapping[str, Any], named: Mapping[str, torch.Tensor]) -> None:
        """Give each parameter of ``named`` the optimizer state saved under its name; a parameter the state does
        not name gets a fresh optimizer (as on its first step)."""
        _check_kind(state, self.kind)
        unknown = sorted(set(state["state"]) - set(named))
        if unknown:
            raise ValueError(f"resume: the optimizer state names parameter {unknown[0]!r}, which this fit lacks")
        for name, p in named.items():
            self.optim.optim_objs.pop(p, None)
            if name in state["state"]:
                _load_optimizer_state(self._create(p, name), clone_tree(state["state"][name]))

    def _create(self, p: torch.Tensor, name: Optional[str] = None) -> Any:
        """Let ``pyro.optim`` build the optimizer of ``p`` (with its per-parameter arguments) without a step."""
        grad, p.grad = p.grad, None  # torch optimizers skip parameters without a gradient
        try:
            if name is not None:
                self._create_unregistered({name: p})
            self.optim([p])
        finally:
            p.grad = grad
        return self.optim.optim_objs[p]


def _per_param_args(args: Any, optim: pyro.optim.PyroOptim, name: str, argc: Optional[int] = None) -> Dict[str, Any]:
    """``args`` of a ``pyro.optim`` optimizer for the parameter ``name``: a dict as is, or the per-parameter callable
    called as Pyro calls it (one argument: the normalized name; two: module name and parameter name)."""
    if not callable(args):
        return dict(args or {})
    argc = getattr(optim, "pt_optim_args_argc", 2) if argc is None else argc
    if argc == 1:
        out = args(normalize_param_name(name))
    else:
        out = args(module_from_param_with_module_name(name), user_param_name(name))
    if not isinstance(out, dict):
        raise TypeError(f"the per-parameter optimizer arguments must be a dict, got {type(out).__name__} for {name!r}")
    return out


def _is_scheduler(obj: Any) -> bool:
    return not isinstance(obj, torch.optim.Optimizer) and isinstance(
        getattr(obj, "optimizer", None), torch.optim.Optimizer
    )


def _optimizer_state(obj: Any) -> Dict[str, Any]:
    if _is_scheduler(obj):
        return {"scheduler": obj.state_dict(), "optimizer": obj.optimizer.state_dict()}
    return obj.state_dict()


def _load_optimizer_state(obj: Any, state: Dict[str, Any]) -> None:
    if _is_scheduler(obj):
        obj.load_state_dict(state["scheduler"])
        obj.optimizer.load_state_dict(state["optimizer"])
    else:
        obj.load_state_dict(state)


def _check_kind(state: Mapping[str, Any], kind: str) -> None:
    if not isinstance(state, Mapping) or state.get("kind") != kind:
        got = state.get("kind") if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"resume: the optimizer state is of kind {got!r}, this fit's optimizer is {kind!r}")


# --------------------------------------------------------------------------------------------------
# the check before a step
# --------------------------------------------------------------------------------------------------
def first_non_finite(
    loss: Any, grads: Mapping[str, Optional[torch.Tensor]], rename: Optional[Callable[[str], str]] = None
) -> Tuple[float, Optional[str]]:
    """The loss as a float and the first quantity that is not finite (``None`` when all are).

    Every gradient element goes into one sum (NaN or ±inf anywhere makes it non-finite; a sum above the dtype's
    largest value also counts: gradients that large would overflow the optimizer's moments anyway), which comes to
    the host with the loss: one reduction and one synchronization per step. Only when that sum is not finite are
    the gradients examined one by one, to name the parameter.

    :param loss: the step's loss (a tensor or a float).
    :param grads: ``{parameter name: gradient or None}``.
    :param rename: maps the name of a non-finite gradient to the name reported (``fit``'s fused path: a flat
        buffer to the parameter inside it); identity by default.
    :returns: ``(loss, None)``, ``(loss, "the loss")`` or ``(loss, "the gradient of 'name'")``.
    """
    named = {n: g.detach() for n, g in grads.items() if g is not None}
    ref = loss.detach().reshape(()) if torch.is_tensor(loss) else next(iter(named.values()), None)
    if ref is None:
        return float(loss), None if math.isfinite(float(loss)) else "the loss"
    flat = [g.reshape(-1).to(device=ref.device, dtype=ref.dtype) for g in named.values()]
    total = (flat[0] if len(flat) == 1 else torch.cat(flat)).sum() if flat else ref.new_zeros(())
    if torch.is_tensor(loss):
        value, total_host = torch.stack([ref, total]).tolist()
    else:
        value, total_host = float(loss), float(total)
    if not math.isfinite(value):
        return value, "the loss"
    if not math.isfinite(total_host):
        for name, g in named.items():
            if not bool(torch.isfinite(g).all()):
                return value, f"the gradient of {(rename(name) if rename is not None else name)!r}"
        return value, "the sum of the gradients (it overflows)"
    return value, None


def numerical_rejection(error: BaseException) -> Optional[str]:
    """What torch's distribution validation rejected, when ``error`` (or an exception it was raised from) is that
    validation finding a distribution *parameter* invalid (e.g. logits NaN or a scale 0 after too large a step) or a
    *value* NaN/inf (a sample from an overflowing guide); ``None`` for any other error: a data check of the model or
    likelihood (those run before any distribution is built), or finite values outside a support (e.g. a label a
    hand-written model did not check)."""
    e: Optional[BaseException] = error
    while e is not None:
        head, found, values = str(e).partition("found invalid values")
        what = re.search(r"Expected (parameter \w+|value argument)", head)
        if found and what and (what[1] != "value argument" or re.search(r"\b(nan|inf)\b", values)):
            shown = " ".join(values.split())[:60]
            return f"the {what[1]} of a distribution is invalid ({shown}...; Pyro's validation)"
        e = e.__cause__
    return None


def leaf_parameter(value: torch.Tensor) -> torch.Tensor:
    """The leaf tensor behind a ``param`` site's value: Pyro's store marks it ``value.unconstrained()``; a module's
    own ``nn.Parameter`` (``module_local_params``) is its own leaf."""
    leaf = getattr(value, "unconstrained", None)
    return leaf() if callable(leaf) else value


def parameter_shapes(named: Mapping[str, torch.Tensor]) -> Dict[str, List[int]]:
    """``{name: shape as a list}`` of the parameters ``named`` (what :class:`TrainingState` records)."""
    return {n: list(p.shape) for n, p in named.items()}
