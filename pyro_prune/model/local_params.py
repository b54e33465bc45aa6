r"""Parameters that stay on their module, whatever Pyro's global ``module_local_params`` setting says.

Pyro's ``PyroModule`` reads and writes its parameters through the global param store, under names like
``"AutoSparseVD.locs.0.weight"``: two guides of one class (or two models with BatchNorm layers) in one process share
those names, so the second starts from the first's posterior and the first later reads the second's values, even
across ``pyro.clear_param_store()`` (the module copies the store's tensor on its next call).  Pyro's
``pyro.settings.set(module_local_params=True)`` avoids that for the whole process; it is a global switch, and it
changes how *every* ``PyroModule`` (the user's too) behaves.

:class:`LocalParamContext` gives one module tree that behaviour on its own.  It replaces the module's call context
(the object ``PyroModule.__call__`` enters, shared by its sub-``PyroModule``\ s): while the module runs, Pyro's param
store holds a **fresh, empty** state, and the outer one is put back afterwards.  Hence

* with the global flag off, every ``pyro.param`` the module issues lands in that private, per-call store, which
  starts empty and is dropped at the end of the call: the module's own attributes are the only copy of its
  parameters (``state_dict``, ``deepcopy``, pickle and ``.to()`` see everything), and no name can meet another
  module's;
* with the flag on, Pyro already reads the module's attributes; the scope changes nothing;
* the ``param`` messages Pyro's inference relies on (``SVI`` collects the parameters of a step from them) are still
  issued, with the module's own tensors, so training works unchanged.

:func:`keep_params_local` installs the context on a module tree; :class:`LocalParamsMixin` also keeps the context when
the module is attached below another ``PyroModule`` (``AutoGuideList``).  Pyro's own modules (``AutoNormal``) keep
Pyro's semantics.

The swap sets the store's three dictionaries aside and puts them back (``ParamStoreDict.clear()`` starts the empty
state).  ``ParamStoreDict.scope`` would do the same through ``get_state``, which strips the ``unconstrained``
references from every parameter it copies: an enclosing ``SVI`` step that already read one (an ``AutoNormal`` over
this model) would then fail.  Not thread-safe, as Pyro's param store is not: a call swaps the one process-wide store.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import pyro
import torch
from pyro.nn import PyroModule

__all__ = ["LocalParamContext", "LocalParamsMixin", "keep_params_local", "has_local_params"]


#: The attributes of ``ParamStoreDict`` that hold its state (the ones ``ParamStoreDict.clear`` resets).
_STORE_STATE = ("_params", "_param_to_name", "_constraints")


def _empty_state() -> Dict[str, dict]:
    return {"params": {}, "constraints": {}}


class LocalParamContext:
    """The call context of a ``PyroModule`` tree whose parameters stay on the modules (module docstring).

    It offers what ``PyroModule`` uses of its context: ``active`` (the nesting depth of calls), ``used``, a per-call
    ``cache`` of sampled values (``get``/``set``) and ``param_state`` (the store of the last call, empty after it).
    """

    def __init__(self) -> None:
        self.active = 0
        self.used = False
        self.cache: Dict[str, torch.Tensor] = {}
        self.param_state: Dict[str, dict] = _empty_state()
        self._outer: Optional[tuple] = None

    def __enter__(self) -> None:
        if not self.active:
            store = pyro.get_param_store()
            self._outer = (store, tuple(store.__dict__[k] for k in _STORE_STATE))
            store.clear()  # fresh, empty dictionaries; the outer ones are set aside untouched
        self.active += 1
        self.used = True

    def __exit__(self, *exc) -> None:
        self.active -= 1
        if not self.active:
            self.cache.clear()
            (store, state), self._outer = self._outer, None
            for key, value in zip(_STORE_STATE, state):
                store.__dict__[key] = value

    def get(self, name: str) -> Optional[torch.Tensor]:
        """The value of sample site ``name`` drawn earlier in the current call (``None`` outside a call)."""
        return self.cache.get(name) if self.active else None

    def set(self, name: str, value: torch.Tensor) -> None:
        """Remember the value of sample site ``name`` for the rest of the current call."""
        if self.active:
            self.cache[name] = value

    def __getstate__(self) -> Dict[str, Any]:
        if self.active:
            raise RuntimeError("cannot copy or pickle a pyro_prune module while it runs")
        return {"active": 0, "used": self.used, "cache": {}, "param_state": _empty_state(), "_outer": None}


def keep_params_local(module: PyroModule) -> None:
    """Give ``module`` and every sub-``PyroModule`` sharing its context a :class:`LocalParamContext`."""
    if not isinstance(module, PyroModule):
        raise TypeError(f"module must be a PyroModule, got {type(module).__name__}")
    old = module.__dict__["_pyro_context"]
    new = LocalParamContext()
    for sub in module.modules():
        if isinstance(sub, PyroModule) and sub.__dict__.get("_pyro_context") is old:
            sub.__dict__["_pyro_context"] = new


def has_local_params(module: Any) -> bool:
    """Whether ``module`` is a ``PyroModule`` whose parameters stay on it (:class:`LocalParamContext`)."""
    return isinstance(module, PyroModule) and isinstance(module.__dict__.get("_pyro_context"), LocalParamContext)


class LocalParamsMixin:
    """Mixin for a ``PyroModule`` root that keeps its own :class:`LocalParamContext` (and its parameter names) when
    it is attached below another ``PyroModule`` (``AutoGuideList.append``, a user's container), instead of joining
    the parent's context: its parameters never enter a store the parent shares."""

    def _pyro_set_supermodule(self, name: str, context: Any) -> None:
        if not has_local_params(self):  # during construction, before keep_params_local
            super()._pyro_set_supermodule(name, context)
