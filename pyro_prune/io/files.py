r"""One file per posterior: :func:`save` and :func:`load`.

The file is what ``torch.save`` writes, holding only tensors, numbers, strings and containers of them, so that
:func:`load` reads it with ``torch.load(weights_only=True)`` and never runs code from it:

* ``"format"`` (``"pyro_prune.posterior"``) and ``"version"`` (:data:`FORMAT_VERSION`);
* ``"meta"``: a JSON string: library versions, the model's description (:mod:`pyro_prune.io.model_spec`), the
  guide's registered name and constructor arguments (:mod:`pyro_prune.io.guide_formats`), the training records,
  the pruning rules, and the user's own ``metadata``;
* the tensors: the plain network's weights at ``bayesianize`` time (``"template"``), the model's and the guide's
  ``state_dict`` (a Laplace guide's curvature, MAP and prior precision in its extra state), the tensors the
  descriptions refer to (prior parameters), the training state (optimizer moments, step), the random number
  generators' states, the pruning masks, and the user's ``extra`` tensors.

Files are written to a temporary name beside the target and renamed into place, so a crash while saving never
leaves a truncated file where a good one was.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Union

import pyro
import torch
import torch.nn as nn

from .._version import __version__
from ..infer import History
from ..model import Likelihood
from ..model.bayesian_model import BayesianModel
from ..pruning import PruneResult
from .guide_formats import guide_format, guide_format_named
from .model_spec import ModelParts, build_model, describe_model
from .pruned import describe_pruned, rebuild_pruned
from .rng import capture_rng, set_rng
from .specs import TensorStore

__all__ = ["FORMAT", "FORMAT_VERSION", "Saved", "save", "load"]

FORMAT = "pyro_prune.posterior"
#: the layout :func:`save` writes; :func:`load` reads this version and older ones.
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Saved:
    """What :func:`load` returns.

    :ivar model: the :class:`~pyro_prune.BayesianModel`.
    :ivar guide: the guide (``None`` when only the model was saved).
    :ivar history: the :class:`~pyro_prune.History` with its resume state (``None`` unless saved).
    :ivar pruned: ``{name: PruneResult}`` rebuilt from the saved masks (empty unless saved).
    :ivar metadata: the JSON-able ``metadata`` given to :func:`save`.
    :ivar extra: the ``{name: tensor}`` given to :func:`save`.
    :ivar rng: the random number generators' states at save time (``None`` unless saved);
        :meth:`restore_rng` sets them.
    :ivar info: the file's format, version and the library versions that wrote it.
    """

    model: BayesianModel
    guide: Any = None
    history: Optional[History] = None
    pruned: Dict[str, PruneResult] = field(default_factory=dict)
    metadata: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, torch.Tensor] = field(default_factory=dict)
    rng: Optional[Dict[str, Any]] = None
    info: Dict[str, Any] = field(default_factory=dict)

    def restore_rng(self) -> None:
        """Set torch's, Python's and NumPy's random states to the saved ones (to continue a run exactly).

        :raises ValueError: the file holds no random states (saved with ``rng=False``).
        """
        if self.rng is None:
            raise ValueError("the file holds no random number generator states (it was saved with rng=False)")
        set_rng(self.rng)


def _check_json(value: Any, name: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must hold JSON values only (numbers, strings, lists, dicts): {e}") from None
    return dict(value)


def _check_extra(extra: Any) -> Dict[str, torch.Tensor]:
    if extra is None:
        return {}
    if not isinstance(extra, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in extra.items()):
        raise TypeError("extra must be a dict {str: tensor}")
    return {k: v.detach().cpu().clone() for k, v in extra.items()}


def _check_pruned(pruned: Any) -> Dict[str, PruneResult]:
    if pruned is None:
        return {}
    if isinstance(pruned, PruneResult):
        return {"pruned": pruned}
    if not isinstance(pruned, Mapping) or not all(isinstance(k, str) for k in pruned):
        raise TypeError(f"pruned must be a PruneResult or a dict {{name: PruneResult}}, got {type(pruned).__name__}")
    return dict(pruned)


def _payload(model: BayesianModel, guide: Any, history: Optional[History], rng: bool) -> Dict[str, Any]:
    """Everything but the pruning results and the user's additions (see the module docstring)."""
    rng_state = capture_rng() if rng else None  # first: nothing below draws, but the state is the caller's
    store = TensorStore()
    meta: Dict[str, Any] = {
        "library": {"pyro_prune": __version__, "torch": torch.__version__, "pyro": pyro.__version__},
        "model": describe_model(model, store),
        "guide": None,
        "history": None if history is None else history.to_dict(),
    }
    payload: Dict[str, Any] = {"template": model.template().state_dict(), "model": model.state_dict(),
                               "guide": None, "training": None, "rng": rng_state}  # fmt: skip
    if guide is not None:
        fmt = guide_format(guide)
        meta["guide"] = {"class": fmt.name, "config": fmt.config(guide)}
        payload["guide"] = guide.state_dict()
    if history is not None and history.state is not None:
        payload["training"] = history.state.to_dict()
    payload["meta"], payload["tensors"] = meta, store.tensors
    return payload


def save(
    path: PathLike,
    model: BayesianModel,
    guide: Any = None,
    *,
    history: Optional[History] = None,
    pruned: Union[None, PruneResult, Mapping[str, PruneResult]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    extra: Optional[Mapping[str, torch.Tensor]] = None,
    rng: bool = False,
) -> None:
    """Write ``model`` and its posterior ``guide`` to one file that :func:`load` rebuilds (module docstring).

    :param path: the file to write (replaced atomically).
    :param model: the :class:`~pyro_prune.BayesianModel`.
    :param guide: its guide, of a registered class (:func:`~pyro_prune.io.register_guide`: every guide of this
        library and Pyro's ``AutoNormal``, ``AutoDelta``, ``AutoDiagonalNormal``, ``AutoMultivariateNormal``), or
        ``None`` for the model alone.
    :param history: a :class:`~pyro_prune.History`: its records and its resume state (the optimizer's moments, the
        step), so that ``fit(..., resume=loaded.history)`` continues the run.
    :param pruned: a :class:`~pyro_prune.PruneResult` or ``{name: PruneResult}`` of this posterior.
    :param metadata: JSON-able ``dict`` of your own (e.g. how the inputs were standardized).
    :param extra: ``{name: tensor}`` of your own.
    :param rng: also save the random generators' states (``Saved.restore_rng()`` sets them).
    :raises TypeError: an argument of the wrong type, or a guide class that is not registered.
    :raises ValueError: a prior the file cannot describe, or ``metadata`` that is not JSON.
    """
    if not isinstance(model, BayesianModel):
        raise TypeError(f"model must be a BayesianModel (from pp.bayesianize), got {type(model).__name__}")
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a pyro_prune History (from fit), got {type(history).__name__}")
    if not isinstance(rng, bool):
        raise TypeError(f"rng must be a bool, got {type(rng).__name__}")
    metadata, extra, pruned = _check_json(metadata, "metadata"), _check_extra(extra), _check_pruned(pruned)
    payload = _payload(model, guide, history, rng)
    described = {name: describe_pruned(result) for name, result in pruned.items()}
    payload["meta"]["pruned"] = {name: d[0] for name, d in described.items()}
    payload["meta"]["metadata"] = metadata
    payload.update(format=FORMAT, version=FORMAT_VERSION, meta=json.dumps(payload["meta"]), extra=extra,
                   pruned={name: d[1] for name, d in described.items()})  # fmt: skip
    _write_atomically(os.fspath(path), payload)


def _write_atomically(path: str, payload: Dict[str, Any]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pyro_prune-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read(path: PathLike) -> Dict[str, Any]:
    try:
        payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises several types for a file it cannot read safely
        raise ValueError(f"{os.fspath(path)!r} is not a pyro_prune file readable without running code: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a pyro_prune posterior file (no format {FORMAT!r})")
    version = payload.get("version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r} has format version {version!r}; this pyro_prune reads versions 1 to "
            f"{FORMAT_VERSION} (a newer pyro_prune wrote it?)"
        )
    return payload


def _load_guide(model: BayesianModel, meta: Optional[Mapping[str, Any]], state: Any) -> Any:
    if meta is None:
        return None
    fmt = guide_format_named(meta["class"])
    guide = fmt.build(model, dict(meta["config"]), state)
    guide.load_state_dict(state)
    return guide


def load(
    path: PathLike,
    *,
    net: Optional[nn.Module] = None,
    likelihood: Optional[Likelihood] = None,
    device: Union[None, str, torch.device] = None,
) -> Saved:
    """Rebuild what :func:`save` wrote, reading tensors with ``torch.load(weights_only=True)`` and the rest as JSON:
    nothing in the file is executed.

    :param path: the file.
    :param net: the plain network, for a file that does not describe it (a network that is not a ``torch.nn``
        container of ``torch.nn`` layers, e.g. your own ``nn.Module`` subclass): a freshly built network of the same
        architecture (it is copied, never modified; its parameter names and shapes are checked against the file).
    :param likelihood: the likelihood head, for a file whose head class is not registered
        (:func:`~pyro_prune.io.register_likelihood`).
    :param device: where to put the model and guide (default: the CPU).
    :returns: a :class:`Saved` with the model, guide, history, pruned results, metadata and extra tensors.
    :raises FileNotFoundError: no such file.
    :raises ValueError: not a pyro_prune file, a newer format version, an unregistered guide class, or a file that
        needs ``net``/``likelihood`` passed in (or that does not match the one passed).
    """
    payload = _read(path)
    meta = json.loads(payload["meta"])
    with torch.random.fork_rng(devices=[]):  # rebuilding initializes weights: the caller's generator never moves
        model = build_model(meta["model"], TensorStore(payload["tensors"]), payload["template"],
                            ModelParts(net, likelihood))  # fmt: skip
        model.load_state_dict(payload["model"])
        guide = _load_guide(model, meta["guide"], payload["guide"])
    if device is not None:
        model.to(device)
        if isinstance(guide, nn.Module):
            guide.to(device)
    history = None if meta["history"] is None else History.from_dict(meta["history"], payload["training"])
    pruned = {name: rebuild_pruned(model, guide, m, payload["pruned"][name]) for name, m in meta["pruned"].items()}
    info = {"format": payload["format"], "version": payload["version"], **meta["library"]}
    return Saved(model, guide, history, pruned, meta["metadata"], dict(payload["extra"]), payload["rng"], info)
