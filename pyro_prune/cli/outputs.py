"""What a run writes: the posterior file (with the standardization and the split), the pruned network in its
forms, and prediction files.

Files of a run folder:

* ``posterior.pt`` — ``pp.save`` of the model and guide, with the pruning (``pruned["selected"]``), the history,
  the data description (``metadata["cli"]``, with the per-example ``input_shape``) and the input standardization
  (one mean and std per feature of the flattened example) and split (``extra``);
* ``network.pt`` (plain ``state_dict``) and ``network.pt2`` (``torch.export``, loads without the class) of the
  pruned network (physically smaller for structured pruning);
* ``network.ts`` — the same network as TorchScript (``torch.jit.load``, from Python or C++): scripted, or traced
  on an example batch where it does not script (``report.json``'s ``torchscript.method`` says which, and why);
* ``network_torch_prune.pt`` — the ``torch.nn.utils.prune`` convention (``weight_orig`` + ``weight_mask``);
* ``network_csr.pt`` — the ``state_dict`` with ``torch.sparse_csr`` Linear weights.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..io import load, save
from ..pruning.export import export_program, measure_speedup, to_sparse, to_torch_prune, to_torchscript
from .network import build_network

__all__ = ["default_out", "save_posterior", "load_posterior", "write_networks", "write_predictions"]

POSTERIOR = "posterior.pt"


def default_out(data: str, guide: str) -> str:
    """``pyro-prune-runs/<data>-<guide>-<YYYYmmdd-HHMMSS>``."""
    name = os.path.splitext(os.path.basename(data.rstrip("/")))[0] or "data"
    return os.path.join("pyro-prune-runs", f"{name}-{guide}-{time.strftime('%Y%m%d-%H%M%S')}")


def save_posterior(folder: str, post: Any, dataset: Any, cli: Dict[str, Any], result: Any = None) -> str:
    """``pp.save`` into ``folder/posterior.pt`` with what ``predict`` needs to read new inputs."""
    meta = dict(
        cli,
        task=dataset.task,
        num_classes=dataset.num_classes,
        classes=dataset.classes,
        columns=dataset.columns,
        target=dataset.target,
        data=dataset.spec,
        input_shape=list(dataset.input_shape),
    )
    extra = {f"split_{k}": v for k, v in dataset.indices.items()}
    if dataset.mean is not None:
        extra.update(input_mean=dataset.mean, input_std=dataset.std)
    path = os.path.join(folder, POSTERIOR)
    pruned = None if result is None else {"selected": result}
    save(path, post.model, post.guide, history=post.history, pruned=pruned, metadata={"cli": meta}, extra=extra)
    return path


def load_posterior(source: str) -> Any:
    """``pp.load`` of a run folder's ``posterior.pt`` (or a posterior file); a ``--model`` network is rebuilt by
    its factory (the file describes it by parameter names and shapes only).

    :raises ValueError: not a posterior written by this command (no ``metadata["cli"]``).
    """
    path = os.path.join(source, POSTERIOR) if os.path.isdir(source) else source
    payload = torch.load(path, map_location="cpu", weights_only=True)
    meta = json.loads(payload["meta"]).get("metadata", {}).get("cli") if isinstance(payload, dict) else None
    if not meta:
        raise ValueError(f"{path!r} is not a posterior written by pyro-prune fit/compress (no metadata['cli'])")
    net = None
    if meta["network"].get("model"):
        n_out = meta["num_classes"] if meta["task"] == "classification" else 1
        shape = meta.get("input_shape")
        net = build_network(
            meta["network"]["hidden"], meta["network"]["model"], len(meta["columns"]), n_out, shape and tuple(shape)
        )
    return load(path, net=net)


def write_networks(folder: str, result: Any, example: torch.Tensor, speed_batch: int) -> Dict[str, Any]:
    """The pruned network's forms and the measured CSR speed-up, all from CPU copies (the files load on a machine
    without the run's device); returns ``{"files", "speedup", "torchscript"}`` (how ``network.ts`` was made)."""
    net = copy.deepcopy(result.module).cpu().eval()
    full = copy.deepcopy(result.masked_module if result.masked_module is not None else result.module).cpu().eval()
    masks = {k: v.cpu() for k, v in result.masks.items()}
    example = example.detach().cpu()
    files = {
        "state_dict": "network.pt",
        "export": "network.pt2",
        "torchscript": "network.ts",
        "torch_prune": "network_torch_prune.pt",
        "csr": "network_csr.pt",
    }
    torch.save(net.state_dict(), os.path.join(folder, files["state_dict"]))
    small = example[: max(2, min(len(example), 8))]
    export_program(net, small, os.path.join(folder, files["export"]))
    script = to_torchscript(net, small, os.path.join(folder, files["torchscript"]))
    torch.save(to_torch_prune(full, masks).state_dict(), os.path.join(folder, files["torch_prune"]))
    sparse = to_sparse(full, masks)
    torch.save(sparse.state_dict(), os.path.join(folder, files["csr"]))
    batch = example[:speed_batch]
    if len(batch) < speed_batch:
        batch = batch.repeat((speed_batch + len(batch) - 1) // len(batch), *[1] * (batch.dim() - 1))[:speed_batch]
    speed = measure_speedup(full, sparse, batch)
    return {"files": files, "speedup": speed.to_dict(), "torchscript": script.to_dict()}


def write_predictions(path: str, arrays: Dict[str, torch.Tensor], task: str, classes: Optional[List[Any]]) -> None:
    """A CSV (one row per input) or NPZ file: ``prediction``, then ``p_<class>`` and ``entropy`` (and
    ``mutual_information``) for classification, or ``mean``, ``std``, ``epistemic_std``, ``aleatoric_std``."""
    cols: Dict[str, np.ndarray] = {}
    if task == "classification":
        probs = arrays["probs"].detach().cpu().numpy()
        labels = classes if classes is not None else list(range(probs.shape[1]))
        cols["prediction"] = np.asarray([labels[i] for i in probs.argmax(1)])
        cols.update({f"p_{c}": probs[:, i] for i, c in enumerate(labels)})
        cols.update({k: arrays[k].detach().cpu().numpy() for k in ("entropy", "mutual_information") if k in arrays})
    else:
        cols["prediction"] = arrays["mean"].detach().cpu().numpy()
        cols.update({k: arrays[k].detach().cpu().numpy() for k in ("mean", "std", "epistemic_std", "aleatoric_std")})
    if path.lower().endswith(".npz"):
        np.savez(path, **cols)
        return
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(cols))
        for i in range(len(cols["prediction"])):
            w.writerow([_cell(v[i]) for v in cols.values()])


def _cell(v: Any) -> Any:
    return repr(float(v)) if isinstance(v, (float, np.floating)) else v
