"""The compression–accuracy front of issue 13 under the paired multi-split protocol (``bench/protocol.py``).

Digits MLP 64-300-100-10, ``--splits`` paired stratified splits (default 10), validation carved from training (20 %
of it, stratified). Every method starts from the same dense network of its split (100 epochs, Adam 1e-3, wd 1e-4):

* ``dense``; ``dense (equal budget)``: trained ``--epochs`` more epochs (as long as our Bayesian fine-tune);
* ``ours``: ``AutoSparseVD`` (log-uniform prior, ``--epochs`` epochs: 300, chosen on split 0's validation curve,
  ``--curve``, with the same validation accuracy as 600, a lower NLL and more compression; KL warm-up ``--warmup``)
  pruned by
  ``Sparsity(1 - 1/c)`` (weights ranked by log α) at each level c, by ``LogAlpha(3)`` (natural) and by a threshold
  chosen on validation (``ours@val``: the most aggressive of -2, -1.5, ..., 4 whose pruned mean network keeps its
  validation NLL within 5 % of the unpruned one); scored as the pruned posterior-mean network;
* ``ours+ft``: the same pruned network after 20 epochs of masked fine-tuning (as magnitude pruning gets);
* ``ours+kd``: the same 20-epoch fine-tune by ``pp.finetune`` distilling the split's dense network (the network the
  posterior started from; T = 2, λ = 0.7); magnitude pruning and the reference get the same ``+kd`` (and the
  reference a ``+ft``), so the comparison stays one of masks, not of fine-tuning recipes;
* ``ours-mask+ft``: the pruned network's mask applied to the *dense* weights, then the same 20-epoch fine-tune
  (the posterior chooses which weights, the dense net supplies their values);
* ``ours+vft``: the pruned *posterior* (θ, log σ² under the mask, biases at their means) trained 20 more epochs on
  the same ELBO with local reparameterization (:func:`variational_finetune`), scored as its mean network;
* ``ours+mag-mask+ft`` (levels below the natural compression only): the weights the posterior keeps at its natural
  threshold plus the largest dense weights up to the level's count, on the dense weights, + 20 epochs fine-tune;
* ``ours-pb`` (and every variant above): the same with the biases as point estimates (a ``bayesianize`` prior
  for the weights only, ``pp.WeightsOnly``), as Molchanov et al.'s Sparse VD and the reference keep them;
* ``ours-mf`` (and ``+ft``, ``+kd``; levels only): this library's ``AutoMeanFieldNormal`` (N(0, 1) prior, the TyXe
  line's method on our fused path) pruned by SNR (:func:`ours_mf_method`);
* ``ours-β<b>`` (``--front-betas``; none by default) and its variants: the same with the KL weighted by β < 1
  (``fit(kl_weight=β)``); ``--tune`` runs the quick validation protocol over ``--betas`` (``front.tune.json``);
* ``ours*``: per split, the variant of ours with the highest validation accuracy;
* ``ours-group-<prior>``: ``AutoGroupSparse`` with the log-uniform and the horseshoe group priors
  (``--group-epochs``, lr 3e-3, warm-up a quarter, KL weight 0.5), ``GroupLogAlpha()``, compact network (natural
  threshold only);
* ``magnitude+ft``: global L1 unstructured (``torch.nn.utils.prune``) at each level + 20 epochs fine-tune;
* ``l1-structured+ft``: ``torch.nn.utils.prune.ln_structured`` (n=1) on the input units of every layer, the same
  fraction f of input pixels and hidden units kept with f solved for the level's weight count, the removed units'
  incoming rows masked too, + 20 epochs fine-tune;
* ``reference``: the plain-PyTorch Sparse VD of ``../shared/bench/peers.py`` (its recipe copied below, because
  importing that script runs it: 200 epochs, warm-up 50), pruned by its log α ranking at each level and at
  ``log α < 3`` (natural);
* ``laplace-diag-snr`` and ``tyxe-mf-snr`` (each raw and ``+ft``): laplace-torch's diagonal Laplace (prior precision
  by its marglik) and TyXe's mean-field VI (200 epochs), pruned by the marginal SNR |μ|/σ at each level and at the
  Savage–Dickey threshold (natural), + the same 20-epoch fine-tune; run by ``bench/front_peers.py`` under the peers'
  interpreter and brought in by ``--merge --reuse ... bench/results/front_peers.json`` (same splits, each split's
  dense network checked identical).

Accuracy, NLL, ECE with paired 95 % CIs and McNemar via ``pyro_prune.compare``; writes ``bench/results/front.json``
(every record, per-example correctness included), ``front.md`` (the tables and the targets) and ``front.png``.
``--quick``: 2 splits, a few epochs (smoke). ``--resume`` continues an interrupted run from ``front.json``.
``--report-only`` rebuilds the tables and the figure from ``front.json``. The current tables::

    python bench/front.py --merge --reuse bench/results/front.json bench/results/front_peers.json

 ``--reuse A.json ... --reuse-methods m ...``
reads the records of unchanged methods from earlier runs (the first file that has them on every split) after
checking, split by split, that the dense network every method starts from is identical; their time in the run that
computed them is added to the stated method time.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

import pyro
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as tprune

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
import pyro_prune as pp  # noqa: E402
from bench import protocol  # noqa: E402
from bench.common import LinearSVDO, mlp, molchanov_kl, train_dense, write_json  # noqa: E402
from pyro_prune import compare, rules  # noqa: E402

LEVELS = (5, 10, 20, 50, 100)
FINETUNE = 20


# -- helpers -----------------------------------------------------------------------------------------------------------
def linears(net: nn.Module):
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def n_weights(net: nn.Module) -> int:
    return sum(m.weight.numel() for m in linears(net))


def kept_weights(net: nn.Module) -> int:
    return sum(int((m.weight != 0).sum()) for m in linears(net))


def apply_masks(net: nn.Module, masks) -> None:
    """Zero, in place, the weights of every Linear of ``net`` outside its mask (list of masks, one per Linear)."""
    with torch.no_grad():
        for layer, mask in zip(linears(net), masks):
            layer.weight.mul_(mask)


def masked_finetune(net: nn.Module, masks, split, epochs: int = FINETUNE) -> nn.Module:
    """A copy of ``net`` with ``masks`` (list of weight masks, one per Linear) fixed, trained ``epochs`` epochs."""
    m = copy.deepcopy(net).train()
    for layer, mask in zip(linears(m), masks):
        tprune.custom_from_mask(layer, "weight", mask)
    torch.manual_seed(20_000 + split.index)
    train_dense(m, split.loader(seed=2), epochs)
    for layer in linears(m):
        tprune.remove(layer, "weight")
    return m.eval()


def kd_finetune(net: nn.Module, masks, split, teacher: nn.Module, epochs: int = FINETUNE) -> nn.Module:
    """``net`` with ``masks`` applied, fine-tuned as :func:`masked_finetune` (same epochs, lr, batches and seed) by
    ``pp.finetune`` with the split's dense network as the teacher (distillation, T = 2, λ = 0.7, its defaults)."""
    m = copy.deepcopy(net)
    apply_masks(m, masks)
    torch.manual_seed(20_000 + split.index)
    return pp.finetune(m, split.loader(seed=2), epochs=epochs, teacher=teacher.eval())


def scored(net, split, compression, **extra):
    with torch.no_grad():
        val_nll = F.cross_entropy(net.eval()(split.x_val), split.y_val).item()
    return protocol.net_record(net, split.x_test, split.y_test, compression,
                               val_accuracy=protocol.val_accuracy(net, split), val_nll=val_nll, **extra)  # fmt: skip


class MaskedSVDO(LinearSVDO):
    r"""A :class:`~bench.common.LinearSVDO` started from a posterior's :math:`(\theta, \log\sigma^2)` whose weights
    outside ``mask`` are exactly zero in every draw and carry no KL: the pruned *posterior*, trained further."""

    def __init__(self, theta, log_sigma2, bias, mask):
        nn.Module.__init__(self)
        self.theta = nn.Parameter(theta.detach().clone())
        self.log_sigma2 = nn.Parameter(log_sigma2.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone())
        self.register_buffer("mask", mask.to(theta.dtype))

    def forward(self, x):
        mu = F.linear(x, self.theta * self.mask, self.bias)
        if not self.training:
            return mu
        var = F.linear(x * x, self.log_sigma2.exp() * self.mask)
        return mu + var.clamp_min(1e-8).sqrt() * torch.randn_like(mu)

    def kl(self):
        return molchanov_kl(self.log_alpha()[self.mask.bool()])


def variational_finetune(guide, pruned: nn.Module, masks, split, beta: float, epochs: int = FINETUNE) -> nn.Module:
    r"""The pruned posterior (AutoSparseVD's :math:`\theta, \log\sigma^2` on the kept weights, the biases of the
    pruned network ``pruned``: their posterior means, or the point estimates) trained ``epochs`` more epochs on the
    tempered ELBO :math:`\sum_n \log p(y_n|x_n, w) - \beta\,KL` (local reparameterization, Molchanov's KL over the
    kept weights, Adam 1e-3); returns its masked mean network."""
    marg = pp.marginals(guide)
    biases = [la.bias for la in linears(pruned)]
    layers = [MaskedSVDO(marg[f"{i}.weight"].loc, 2 * marg[f"{i}.weight"].scale.clamp_min(1e-20).log(), b, mask)
              for i, b, mask in zip((0, 2, 4), biases, masks)]  # fmt: skip
    svd = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])
    opt = torch.optim.Adam(svd.parameters(), lr=1e-3)
    n = split.dataset_size
    torch.manual_seed(40_000 + split.index)
    for _ in range(epochs):
        for xb, yb in split.loader(seed=6):
            opt.zero_grad()
            loss = F.cross_entropy(svd(xb), yb) * n + beta * sum(m.kl() for m in layers)
            (loss / n).backward()
            opt.step()
    return reference_net(svd.eval(), [m.mask for m in layers])


# -- methods -----------------------------------------------------------------------------------------------------------
def dense_method(args, equal_budget: bool = True):
    def run(split, cache):
        cache["dense"] = dense = protocol.train_dense_baseline(args.make_net, split, args.dense_epochs)
        out = {"dense": scored(dense, split, 1.0, epochs=args.dense_epochs)}
        cache["dense_record"] = out["dense"]
        if not equal_budget:
            return out
        longer = protocol.dense_equal_budget(dense, split, args.epochs)
        out["dense (equal budget)"] = scored(longer, split, 1.0, epochs=args.dense_epochs + args.epochs)
        return out

    return run


def val_threshold(model, guide, split) -> float:
    """The most aggressive log α threshold of -2, -1.5, ..., 4 whose pruned mean network keeps its validation NLL
    within 5 % of the unpruned mean network's (validation only)."""

    def val_nll(rule):
        with torch.no_grad():
            net = pp.prune(model, guide, rule).module
            return F.cross_entropy(net(split.x_val), split.y_val).item()

    base = val_nll(rules.Sparsity(0.0))
    grid = [t / 2 for t in range(-4, 9)]
    return next((t for t in grid if val_nll(rules.LogAlpha(t)) <= 1.05 * base), 4.0)


def ours_label(beta: float) -> str:
    """``"ours"`` for the ELBO (β = 1), ``"ours-β0.1"`` for a KL weight β = 0.1."""
    return "ours" if beta == 1.0 else f"ours-β{beta:g}"


def ours_method(args, beta: float = 1.0, tags=None, point_bias: bool = False):
    """AutoSparseVD trained on the ELBO with KL weight ``beta`` (``fit(kl_weight=beta)``), pruned at every tag; with
    ``point_bias`` (label ``ours-pb``) the biases are point estimates, not sample sites."""
    name = ours_label(beta) + ("-pb" if point_bias else "")

    def run(split, cache):
        pyro.clear_param_store()
        pyro.set_rng_seed(split.index)
        prior = pp.distributions.LogUniform()
        prior = pp.WeightsOnly(prior) if point_bias else prior
        model = pp.bayesianize(cache["dense"], prior, pp.Categorical(split.dataset_size))
        guide = pp.AutoSparseVD(model)
        pp.fit(model, guide, split.loader(seed=3), epochs=args.epochs, lr=args.lr, kl_warmup=args.warmup,
               kl_weight=beta, progress=False)  # fmt: skip
        th = val_threshold(model, guide, split)
        nat = pp.prune(model, guide, rules.LogAlpha(3.0))
        natural = _ordered_masks(nat.module, nat.masks)
        out = {}
        named = [(f"@{c}x", rules.Sparsity(1 - 1 / c)) for c in LEVELS]
        named += [("@natural", rules.LogAlpha(3.0)), ("@val", rules.LogAlpha(th))]
        for tag, rule in named:
            if tags is not None and tag not in tags:
                continue
            res = pp.prune(model, guide, rule)
            comp = res.report.compression
            out[name + tag] = scored(res.module, split, comp, threshold=th if tag == "@val" else None)
            masks = _ordered_masks(res.module, res.masks)
            out[name + "+ft" + tag] = scored(masked_finetune(res.module, masks, split), split, comp)
            out[name + "+kd" + tag] = scored(kd_finetune(res.module, masks, split, cache["dense"]), split, comp)
            out[name + "-mask+ft" + tag] = scored(masked_finetune(cache["dense"], masks, split), split, comp)
            vft = variational_finetune(guide, res.module, masks, split, beta)
            out[name + "+vft" + tag] = scored(vft, split, comp)
            if tag.endswith("x") and tag != "@natural":
                fill = filled_mask(cache["dense"], natural, round(n_weights(res.module) / comp))
                if fill is not None:
                    ft = masked_finetune(cache["dense"], fill, split)
                    out[name + "+mag-mask+ft" + tag] = scored(ft, split, comp)
        return out

    return run


def ours_mf_method(args):
    """``AutoMeanFieldNormal`` (this library's mean-field Gaussian guide on ``fit``'s fused local-reparameterization
    path; N(0, 1) prior and σ₀ = e⁻⁵ as the TyXe line) trained ``--mf-epochs`` epochs with ours' warm-up, pruned by
    ``Sparsity`` (its log α ranking is the SNR ranking) at each level: raw, ``+ft`` and ``+kd``."""

    def run(split, cache):
        pyro.clear_param_store()
        pyro.set_rng_seed(split.index)
        model = pp.bayesianize(cache["dense"], pyro.distributions.Normal(0.0, 1.0), pp.Categorical(split.dataset_size))
        guide = pp.AutoMeanFieldNormal(model, init_scale=math.exp(-5))
        pp.fit(model, guide, split.loader(seed=9), epochs=args.mf_epochs, lr=args.lr, kl_warmup=args.warmup,
               progress=False)  # fmt: skip
        out = {}
        for c in LEVELS:
            res = pp.prune(model, guide, rules.Sparsity(1 - 1 / c))
            comp, masks = res.report.compression, _ordered_masks(res.module, res.masks)
            out[f"ours-mf@{c}x"] = scored(res.module, split, comp)
            out[f"ours-mf+ft@{c}x"] = scored(masked_finetune(res.module, masks, split), split, comp)
            out[f"ours-mf+kd@{c}x"] = scored(kd_finetune(res.module, masks, split, cache["dense"]), split, comp)
        return out

    return run


def filled_mask(dense: nn.Module, natural, n_keep: int):
    """The weights the posterior keeps at its natural threshold (``natural``, masks in layer order) plus the largest
    dense weights (global L1) up to ``n_keep`` in all; ``None`` when the natural mask already holds ``n_keep``."""
    if sum(int(m.sum()) for m in natural) >= n_keep:
        return None
    scores = [torch.where(m.bool(), torch.inf, la.weight.detach().abs()) for la, m in zip(linears(dense), natural)]
    flat = torch.cat([x.flatten() for x in scores])
    cut = torch.sort(flat, descending=True, stable=True).values[n_keep - 1]
    return [(x >= cut).float() for x in scores]


def _ordered_masks(net, masks):
    """The weight masks of ``pp.prune`` in the order of ``net``'s Linear layers (site ``"<module path>.weight"``)."""
    names = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    by_module = {site.rsplit(".", 1)[0]: mask for site, mask in masks.items()}
    return [by_module[n].to(torch.float32) for n in names]


def groups_method(args):
    def run(split, cache):
        out = {}
        for kind in ("log-uniform", "horseshoe"):
            pyro.clear_param_store()
            pyro.set_rng_seed(split.index)
            model = pp.bayesianize(cache["dense"], pp.GroupPrior(kind, tau0=1.0), pp.Categorical(split.dataset_size))
            guide = pp.AutoGroupSparse(model)
            e = args.group_epochs
            pp.fit(model, guide, split.loader(seed=4), epochs=e, lr=3e-3, kl_warmup=max(1, e // 4), kl_weight=0.5,
                   progress=False)  # fmt: skip
            res = pp.prune(model, guide, rules.GroupLogAlpha())  # each prior's default threshold
            st = res.report.structure
            out[f"ours-group-{kind}@natural"] = scored(
                res.module, split, res.report.compression, architecture=st["after"],
                flops_reduction=st["flops_before"] / st["flops_after"],
            )  # fmt: skip
        return out

    return run


def magnitude_method(args):
    def run(split, cache):
        out = {}
        for c in LEVELS:
            m = copy.deepcopy(cache["dense"])
            tprune.global_unstructured([(la, "weight") for la in linears(m)], tprune.L1Unstructured, amount=1 - 1 / c)
            masks = [la.weight_mask.clone() for la in linears(m)]
            for la in linears(m):
                tprune.remove(la, "weight")
            ft = masked_finetune(m, masks, split)
            out[f"magnitude+ft@{c}x"] = scored(ft, split, n_weights(ft) / kept_weights(ft))
            kd = kd_finetune(m, masks, split, cache["dense"])
            out[f"magnitude+kd@{c}x"] = scored(kd, split, n_weights(kd) / kept_weights(kd))
        return out

    return run


GRADUAL_PRUNE, GRADUAL_TRAIN = 200, 120  #: epochs of gradual pruning, then of training at the final mask


def cubic_sparsity(epoch: int, final: float, epochs: int = GRADUAL_PRUNE) -> float:
    r"""Zhu & Gupta's (2017) schedule :math:`s_t = s_f\,(1 - (1 - t/T)^3)` at the end of epoch ``epoch`` of ``T``."""
    return final * (1 - (1 - min(epoch, epochs) / epochs) ** 3)


def global_magnitude_masks(net: nn.Module, masks, n_keep: int):
    """The ``n_keep`` largest ``|w|`` over every Linear layer, among the weights ``masks`` still keeps."""
    mags = torch.cat([(la.weight.detach() * m).abs().flatten() for la, m in zip(linears(net), masks)])
    cut = torch.topk(mags, n_keep, sorted=True).values[-1]
    return [((la.weight.detach() * m).abs() >= cut).to(m.dtype) * m for la, m in zip(linears(net), masks)]


def gradual_magnitude(dense: nn.Module, split, c: float) -> nn.Module:
    """Gradual magnitude pruning (Zhu & Gupta 2017) from the split's dense network to ``1/c`` of its weights:
    :data:`GRADUAL_PRUNE` epochs of training with the global magnitude mask recomputed after each epoch on the cubic
    schedule (:func:`cubic_sparsity`), then :data:`GRADUAL_TRAIN` epochs at the final mask (320 epochs: ours' 300
    epochs plus its 20-epoch fine-tune); Adam 1e-3, weight decay 1e-4, the pruned weights held at zero after every
    step."""
    net = copy.deepcopy(dense).train()
    total = n_weights(net)
    masks = [torch.ones_like(la.weight) for la in linears(net)]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    torch.manual_seed(50_000 + split.index)
    loader = split.loader(seed=9)
    for epoch in range(1, GRADUAL_PRUNE + GRADUAL_TRAIN + 1):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
            apply_masks(net, masks)
        if epoch <= GRADUAL_PRUNE:
            n_keep = max(1, round(total * (1 - cubic_sparsity(epoch, 1 - 1 / c))))
            masks = global_magnitude_masks(net, masks, n_keep)
            apply_masks(net, masks)
    return net.eval()


def gradual_method(args):
    """``magnitude-gradual@<c>x``: :func:`gradual_magnitude` at every level (a peer: torch-only, no posterior)."""

    def run(split, cache):
        out = {}
        for c in LEVELS:
            net = gradual_magnitude(cache["dense"], split, c)
            out[f"magnitude-gradual@{c}x"] = scored(net, split, n_weights(net) / kept_weights(net))
        return out

    return run


def structured_fraction(net: nn.Module, c: float) -> float:
    """The fraction f of input units kept in every layer with ``sum_l f n_in f n_out = total / c`` (the output layer's
    units all kept), by bisection."""
    layers, target = linears(net), n_weights(net) / c

    def count(f):
        outs = [f * la.out_features for la in layers[:-1]] + [layers[-1].out_features]
        return sum(f * la.in_features * o for la, o in zip(layers, outs))

    lo, hi = 0.0, 1.0
    for _ in range(60):
        lo, hi = ((lo + hi) / 2, hi) if count((lo + hi) / 2) < target else (lo, (lo + hi) / 2)
    return hi


def l1_structured(dense: nn.Module, c: float) -> nn.Module:
    """``ln_structured`` (L1) on the input columns of every Linear layer keeping ``round(f n_in)`` units, and the
    rows of the removed hidden units in the layer before; the returned copy keeps ``weight_mask`` reparametrized."""
    m = copy.deepcopy(dense)
    layers, f = linears(m), structured_fraction(dense, c)
    for la in layers:
        keep = max(1, round(f * la.in_features))
        tprune.ln_structured(la, "weight", amount=la.in_features - keep, n=1, dim=1)
    for prev, nxt in zip(layers[:-1], layers[1:]):
        cols = nxt.weight_mask.any(0).to(prev.weight.dtype)  # input units kept by the next layer
        tprune.custom_from_mask(prev, "weight", cols[:, None].expand_as(prev.weight))
    return m


def structured_method(args):
    def run(split, cache):
        out = {}
        for c in LEVELS:
            m = l1_structured(cache["dense"], c)
            masks = [la.weight_mask.clone() for la in linears(m)]
            for la in linears(m):
                tprune.remove(la, "weight")
            ft = masked_finetune(m, masks, split)
            out[f"l1-structured+ft@{c}x"] = scored(ft, split, n_weights(ft) / int(sum(x.sum() for x in masks)))
        return out

    return run


# -- the plain-PyTorch Sparse VD reference (recipe of ../shared/bench/peers.py; its layer is bench.common.LinearSVDO)
def train_reference(dense, split, epochs, warmup):
    sizes = [(la.in_features, la.out_features) for la in linears(dense)]
    svd = nn.Sequential(*[m for i, o in sizes for m in (LinearSVDO(i, o), nn.ReLU())][:-1])
    svd.load_state_dict({k.replace("weight", "theta"): v for k, v in dense.state_dict().items()}, strict=False)
    opt = torch.optim.Adam(svd.parameters(), lr=1e-3)
    n = split.dataset_size
    torch.manual_seed(30_000 + split.index)
    loader = split.loader(seed=5)
    for ep in range(epochs):
        beta = min(1.0, ep / warmup)
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(svd(xb), yb) * n + beta * sum(m.kl() for m in svd if isinstance(m, LinearSVDO))
            (loss / n).backward()
            opt.step()
    return svd.eval()


def reference_net(svd, keep):
    """The reference's mean network with weights ``keep`` (list of masks) as a plain MLP."""
    layers = [m for m in svd if isinstance(m, LinearSVDO)]
    net = mlp(layers[0].theta.shape[1])
    with torch.no_grad():
        for la, s, k in zip(linears(net), layers, keep):
            la.weight.copy_(s.theta * k)
            la.bias.copy_(s.bias)
    return net.eval()


def reference_records(net, keep, split, dense, tag):
    """The reference's pruned mean network ``net`` scored raw, after the masked fine-tune (``+ft``) and after the
    distillation fine-tune (``+kd``), as ours and magnitude pruning get them."""
    comp = n_weights(net) / max(1, kept_weights(net))
    return {
        f"reference{tag}": scored(net, split, comp),
        f"reference+ft{tag}": scored(masked_finetune(net, keep, split), split, comp),
        f"reference+kd{tag}": scored(kd_finetune(net, keep, split, dense), split, comp),
    }


def reference_method(args):
    def run(split, cache):
        svd = train_reference(cache["dense"], split, args.ref_epochs, max(1, args.ref_epochs // 4))
        with torch.no_grad():
            las = [m.log_alpha() for m in svd if isinstance(m, LinearSVDO)]
        flat = torch.cat([la.flatten() for la in las])
        out = {}
        for c in LEVELS:
            n_keep = round(flat.numel() / c)
            cut = torch.sort(flat, stable=True).values[n_keep - 1]
            keep = [(la <= cut).float() for la in las]
            out.update(reference_records(reference_net(svd, keep), keep, split, cache["dense"], f"@{c}x"))
        keep = [(la < 3).float() for la in las]
        out.update(reference_records(reference_net(svd, keep), keep, split, cache["dense"], "@natural"))
        return out

    return run


# -- reuse of an earlier run's records ------------------------------------------------------------------------------
#: The labels each reusable method wrote (``ours``: the ELBO, β = 1, without ``+vft``).
REUSABLE = {
    "dense-equal": ("dense (equal budget)",),
    "ours": ("ours@", "ours+ft@", "ours+kd@", "ours-mask+ft@", "ours+vft@", "ours+mag-mask+ft@"),
    "ours-pb": tuple(p.replace("ours", "ours-pb", 1) for p in ("ours@", "ours+ft@", "ours+kd@", "ours-mask+ft@",
                                                               "ours+vft@", "ours+mag-mask+ft@")),
    "ours-mf": ("ours-mf@", "ours-mf+ft@", "ours-mf+kd@"), "groups": ("ours-group-",),
    "magnitude": ("magnitude+ft@", "magnitude+kd@"),
    "gradual": ("magnitude-gradual@",),
    "l1-structured": ("l1-structured+ft@",),
    "reference": ("reference@", "reference+ft@", "reference+kd@"),
    "laplace": ("laplace-diag-snr@", "laplace-diag-snr+ft@"), "tyxe": ("tyxe-mf-snr@", "tyxe-mf-snr+ft@"),
}  # fmt: skip


def split_entries(data):
    """``{split index: (records, {method: seconds in the run that computed it})}`` of a checkpoint (a run with
    ``--first-split k`` holds splits k, k + 1, ...; a reused method's time is the earlier run's)."""
    first = data["meta"].get("first_split", 0)
    reused = data["meta"].get("reused_seconds") or {}
    if isinstance(reused, list):  # the format of the first runs with --reuse: one entry per split from 0
        reused = {str(i): v for i, v in enumerate(reused)}
    out = {}
    for pos, (recs, secs) in enumerate(zip(data["splits"], data["seconds"])):
        i = first + pos
        times = {k.removesuffix(" (reused)"): v for k, v in secs.items()}
        times.update(reused.get(str(i), {}))
        out[i] = (recs, times)
    return out


def lookup(entries, index: int, name: str):
    """``(records, seconds)`` of split ``index`` from the first of ``entries`` (:func:`split_entries`) that holds
    records of method ``name`` there, or ``None``."""
    for e in entries:
        if index in e and any(lab.startswith(REUSABLE[name]) for lab in e[index][0]):
            return e[index]
    return None


def reused_seconds(entries, index: int, name: str) -> float:
    _, times = lookup(entries, index, name)
    return times.get(name, times.get("dense", 0.0)) if name == "dense-equal" else times.get(name, 0.0)


def merge(args):
    """``--merge``: the checkpoint of a run done in parts (``--first-split``, ``--reuse``), assembled from the
    ``--reuse`` files without training: per split, every method's records from the first file holding them
    (:func:`lookup`), after checking that every file used agrees on the split's dense network (identical per-example
    test correctness, NLL within 1e-6; each part checked it against its own sources when it ran)."""
    entries = [split_entries(protocol.load_checkpoint(p)) for p in args.reuse]
    names = ["dense-equal", *(m for m in REUSABLE if m != "dense-equal")]
    splits, seconds, reused = [], [], {}
    for i in range(args.splits):
        found = {m: lookup(entries, i, m) for m in names}
        missing = [m for m, f in found.items() if f is None]
        if missing:  # the report shows such a method's labels on the splits that have them only
            print(f"--merge: split {i} has no records of {missing} in the --reuse files")
        found = {m: f for m, f in found.items() if f is not None}
        dense = next(e[i][0]["dense"] for e in entries if i in e)
        recs = {"dense": dense}
        for m, (old, _) in found.items():
            if old["dense"]["correct"] != dense["correct"] or abs(old["dense"]["nll"] - dense["nll"]) > 1e-6:
                raise RuntimeError(f"--merge: split {i}: the files disagree on the dense network")
            recs.update({lab: rec for lab, rec in old.items() if lab.startswith(REUSABLE[m])})
        splits.append(recs)
        seconds.append({"dense": 0.0})
        reused[str(i)] = {m: reused_seconds(entries, i, m) for m in found}
    meta = {k: v for k, v in vars(args).items() if k in ("data", "splits", "reuse", "epochs", "warmup", "group_epochs")}
    meta.update(reuse_methods=names, reused_seconds=reused, merged=True)
    write_json({"meta": meta, "splits": [{k: protocol._encode(v) for k, v in s.items()} for s in splits],
                "seconds": seconds}, args.out + ".json")  # fmt: skip


def reused_method(name: str, entries):
    """The records of method ``name`` on this split from earlier runs (:func:`lookup`), after checking that the
    split's dense network is the same (identical per-example test correctness, NLL within 1e-6): every method starts
    from it, with the same seeds, so the method's records are those it would compute again."""

    def run(split, cache):
        old, _ = lookup(entries, split.index, name)
        now = cache["dense_record"]
        if old["dense"]["correct"] != now["correct"] or abs(old["dense"]["nll"] - now["nll"]) > 1e-6:
            raise RuntimeError(f"split {split.index}: the dense network differs from the reused run's; cannot reuse")
        return {lab: rec for lab, rec in old.items() if lab.startswith(REUSABLE[name])}

    return run


# -- report: tables, targets, figure --------------------------------------------------------------------------------
#: The peer lines at each level (``laplace-*``, ``tyxe-*``: from ``bench/front_peers.py``, where merged in); the best
#: peer at a level is the one with the highest mean test accuracy (a choice that favours the peers).
#: ``+kd``: the fine-tune distilling the split's dense network (:func:`kd_finetune`), given to the peers as to ours.
PEERS = ("magnitude+ft", "magnitude+kd", "magnitude-gradual", "l1-structured+ft", "reference", "reference+ft",
         "reference+kd", "laplace-diag-snr", "laplace-diag-snr+ft", "tyxe-mf-snr", "tyxe-mf-snr+ft")  # fmt: skip
TAGS = [f"@{c}x" for c in LEVELS] + ["@natural", "@val"]
MARGIN = 0.003  # non-inferiority margin: 0.3 pp


def variants(res):
    """The unstructured variants of ours in ``res`` (``ours``, ``ours+ft``, ``ours-mask+ft``, ``ours+vft`` and the
    same for every tempered ``ours-β<b>``), in order of appearance."""
    out = []
    for lab in res:
        name = lab.split("@")[0]
        if name.startswith("ours") and not name.startswith(("ours*", "ours-group")) and name not in out:
            out.append(name)
    return out


def add_val_chosen(res):
    """``ours*@tag``: per split, the variant of :func:`variants` with the highest validation accuracy (ties: the
    first); the test set plays no part in the choice."""
    for tag in TAGS:
        names = [v for v in variants(res) if v + tag in res]
        if names:
            per_split = zip(*(res[v + tag] for v in names))
            res["ours*" + tag] = [max(recs, key=lambda r: r["val_accuracy"]) for recs in per_split]


def acc(res, label):
    return [r["accuracy"] for r in res[label]]


def pp_ci(d):
    return f"{100 * d.mean:+.2f} pp [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"


def verdict_at_least(d, bound):
    """Met when the CI lies above ``bound``, missed when it lies below, unresolved when it straddles it."""
    return "met" if d.low >= bound else ("missed" if d.high < bound else "unresolved (CI straddles)")


def targets(res):
    """Rows ``(target, level, evidence, verdict)`` of TARGETS.md's compression targets, ours = ``ours*``."""
    rows = []
    for c in LEVELS:
        tag = f"@{c}x"
        peers = [p for p in PEERS if p + tag in res]
        best = max(peers, key=lambda p: sum(acc(res, p + tag)))
        d = compare.paired_difference(acc(res, "ours*" + tag), acc(res, best + tag))
        rows.append(("ours − best peer ≥ −0.3 pp (CI low)", f"{c}×", f"vs {best}: {pp_ci(d)}",
                     verdict_at_least(d, -MARGIN)))  # fmt: skip
        if c >= 50:
            for p in peers:
                d = compare.paired_difference(acc(res, "ours*" + tag), acc(res, p + tag))
                rows.append(("resolvably better than every peer", f"{c}×", f"vs {p}: {pp_ci(d)}",
                             verdict_at_least(d, 1e-12)))  # fmt: skip
    for tag in ("@100x", "@natural"):
        d = compare.paired_difference(acc(res, "dense"), acc(res, "ours*" + tag))
        comp = sum(r["compression"] for r in res["ours*" + tag]) / len(res["dense"])
        v = "met" if d.high <= 0.01 else ("missed" if d.low > 0.01 else "unresolved (CI straddles)")
        where = f"{tag[1:]} ({comp:.0f}×)"
        rows.append(("gap to dense ≤ 1.0 pp (CI high) at ≥ 100×", where, f"dense − ours {pp_ci(d)}",
                     v if comp >= 100 else "n/a (below 100×)"))  # fmt: skip
    ours_c = [r["compression"] for r in res["ours*@natural"]]
    ref_c = [r["compression"] for r in res["reference@natural"]]
    dc = compare.paired_difference(ours_c, [0.0] * len(ours_c))
    rows.append(("≥ 200× (natural threshold)", "natural", f"{dc.mean:.0f}× [{dc.low:.0f}, {dc.high:.0f}] "
                 f"(reference {sum(ref_c) / len(ref_c):.0f}×)", verdict_at_least(dc, 200.0)))  # fmt: skip
    d = compare.paired_difference(acc(res, "ours*@natural"), acc(res, "reference@natural"))
    rows.append(("accuracy non-inferior to the reference (−0.3 pp)", "natural", pp_ci(d), verdict_at_least(d, -MARGIN)))
    return rows


def level_labels(res, tag):
    peers = [p + tag for p in PEERS if p + tag in res]
    return ["dense", "ours*" + tag, *(v + tag for v in variants(res)), *peers]


def natural_labels(res):
    labels = ["dense", "dense (equal budget)",
              *(v + t for t in ("@natural", "@val") for v in ("ours*", *variants(res))),
              "ours-group-log-uniform@natural", "ours-group-horseshoe@natural",
              *(p + "@natural" for p in PEERS)]  # fmt: skip
    return [lab for lab in labels if lab in res]


def markdown(res, data, tuned=None, out=""):
    k = len(res["dense"])
    secs = data["seconds"]
    total = sum(sum(s.values()) for s in secs)
    run_meta = {key: v for key, v in data["meta"].items() if key != "reused_seconds"}
    reused = ""
    if "reused_seconds" in data["meta"]:
        prev = sum(sum(s.values()) for s in data["meta"]["reused_seconds"].values()) / 60
        reused = (f", plus {prev:.1f} min in the run whose records of {run_meta['reuse_methods']} were reused (same "
                  "splits and seeds; each split's dense network checked identical)")  # fmt: skip
    lines = [f"# Compression–accuracy front ({k} paired {data['meta'].get('data', 'digits')} splits)", "",
             "Generated by `python bench/front.py` (tables by `pyro_prune.compare`); mean ± sd over the splits; Δ is "
             "method − dense with the paired 95 % t CI; McNemar pools the discordant test examples of every split "
             "(test sets of different splits overlap, so its p-value is optimistic). `ours*` picks, per split, one of "
             f"{', '.join(variants(res))} by validation accuracy.", "",
             f"Run: {run_meta}; {total / 60:.1f} min of method time for {k} splits{reused}.", ""]  # fmt: skip
    lines += peers_note(res, data["meta"].get("epochs"))
    for tag in [f"@{c}x" for c in LEVELS]:
        labels = [lab for lab in level_labels(res, tag) if lab in res]
        lines += [f"## {tag[1:]}", "", protocol.comparison(res, labels, "dense").to_markdown(["accuracy", "nll"]), ""]
    lines += ["## natural thresholds", "",
              protocol.comparison(res, natural_labels(res), "dense").to_markdown(["accuracy", "nll"]), ""]  # fmt: skip
    lines += partial_tables(data)
    if tuned is not None:
        m = tuned["meta"]
        lines += ["## what was tried: the quick protocol (validation only)", "",
                  f"`python bench/front.py --tune` (KL weights {m['betas']}, {m['epochs']} epochs, warm-up "
                  f"{m['warmup']}; finished on {len(tuned['splits'])} of {m['splits']} splits; mean over them of "
                  "the validation accuracy and NLL; no test figure is computed for the choice). `+vft`: the pruned "
                  "posterior (θ, log σ² under the mask) trained 20 more epochs on the tempered ELBO.", "",
                  tune_table(tuned), ""]  # fmt: skip
    if os.path.exists(out + ".curve.json"):
        with open(out + ".curve.json") as fh:
            rows = json.load(fh)
        lines += ["### training length (`python bench/front.py --curve`: split 0, validation only)", "",
                  curve_table(rows), ""]  # fmt: skip
    lines += [
        "## validation scores of every variant of ours in this run (what ours* chooses from)",
        "",
        tune_table({"splits": data["splits"]}, lambda lab: lab.startswith("ours") and "group" not in lab),
        "",
    ]
    if not all(f"ours*@{c}x" in res for c in LEVELS) or "reference@natural" not in res:
        return "\n".join(lines + ["(no targets: this run has no ours or no reference line; see `--merge`)"]) + "\n"
    lines += ["## targets (../shared/TARGETS.md), ours = ours*", "",
              "| target | level | evidence (95 % CI) | verdict |", "| --- | --- | --- | --- |"]  # fmt: skip
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(res)]
    return "\n".join(lines) + "\n"


#: Line style of each method family in the figure: (color, line style, line width).
STYLE = {
    "ours*": ("k", "-", 2.2), "ours+ft": ("C0", ":", 1.2), "ours+kd": ("C1", "-", 1.4),
    "ours-pb+kd": ("C1", "--", 1.4),
    "ours-mf+kd": ("C9", "-", 1.4),
    "magnitude+ft": ("C2", "-", 1.2), "magnitude-gradual": ("C8", "-", 1.2),
    "l1-structured+ft": ("C3", "-", 1.2), "reference+kd": ("C4", "-", 1.2),
    "laplace-diag-snr+ft": ("darkgoldenrod", "-", 1.2), "tyxe-mf-snr+ft": ("teal", "-", 1.2),
}  # fmt: skip
#: The accuracy panel's range (%) on digits: the lines that matter sit within a few points of dense; lower ones leave
#: it. On another data set: :data:`ACCURACY_WINDOW` points below and above the dense network's mean accuracy.
ACCURACY_RANGE = (90.0, 99.0)
ACCURACY_WINDOW = (12.0, 12.0)
#: The figure's title per data set (``--data``).
TITLES = {"digits": "Digits MLP 64-300-100-10", "mnist1d": "mnist1d MLP 40-300-100-10 (10,000 test signals a split)"}
#: Single points at natural thresholds: label -> (color, marker).
POINTS = {"ours*@natural": ("k", "*"), "ours*@val": ("k", "D"), "reference+kd@natural": ("C4", "*"),
          "ours-group-log-uniform@natural": ("C5", "P"), "ours-group-horseshoe@natural": ("C6", "X"),
          "laplace-diag-snr+ft@natural": ("darkgoldenrod", "*"), "tyxe-mf-snr+ft@natural": ("teal", "*")}  # fmt: skip


def peers_note(res, epochs):
    """A paragraph on the laplace-torch and TyXe lines (``bench/front_peers.py``) when they are in ``res``."""
    if "tyxe-mf-snr@5x" not in res and "laplace-diag-snr@5x" not in res:
        return []
    lam = [r["prior_precision"] for r in res.get("laplace-diag-snr@5x", [])]
    ep = {r["epochs"] for r in res.get("tyxe-mf-snr@5x", [])}
    lam_text = f"λ {min(lam):.3g}–{max(lam):.3g} over the splits" if lam else "not run"
    return ["Peers pruning from marginals (`bench/front_peers.py`, peers' interpreter; pruned by |μ|/σ, natural = "
            "the Savage–Dickey ratio, `+ft` = the same 20-epoch masked fine-tune): `laplace-diag-snr`, laplace-torch's "
            f"diagonal Laplace of the dense network, prior precision by its marglik ({lam_text}); `tyxe-mf-snr`, "
            f"TyXe mean-field VI (N(0, 1) prior, local reparameterization) for {sorted(ep)} epochs (ours: {epochs}; "
            "**a smaller budget**), no KL warm-up.", ""]  # fmt: skip


def partial_tables(data):
    """Tables for labels run on only some of the splits (``--skip`` on a resumed run): over those splits only."""
    splits = data["splits"]
    partial = sorted({lab for s in splits for lab in s} - set(protocol.by_label(splits)))
    lines = []
    for lab in partial:
        idx = [i for i, s in enumerate(splits) if lab in s]
        res = protocol.by_label([{"dense": splits[i]["dense"], lab: splits[i][lab]} for i in idx])
        lines += [f"## {lab}: only on splits {idx}", "",
                  protocol.comparison(res, ["dense", lab], "dense").to_markdown(["accuracy", "nll"]), ""]  # fmt: skip
    return lines


def figure(res, path, data_name: str = "digits"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8))
    for metric, ax in zip(("accuracy", "nll"), axes):
        for name, (color, ls, lw) in STYLE.items():
            labs = [name + f"@{c}x" for c in LEVELS if name + f"@{c}x" in res]
            if labs:
                _errorbar(ax, res, labs, metric, dict(label=name, color=color, ls=ls, lw=lw, marker="o", ms=4))
        for lab, (color, marker) in POINTS.items():
            if lab in res:
                _errorbar(ax, res, [lab], metric, dict(label=lab, color=color, ls="", marker=marker, ms=9))
        s = compare.summarize({"dense": res["dense"]}, "dense", [metric])
        dense_mean = s["dense"].mean[metric] * (100 if metric == "accuracy" else 1)
        ax.axhline(dense_mean, color="gray", ls="--", label="dense")
        ax.set_xscale("log")
        ax.set_xlabel("compression (weights, ×)")
        ax.set_ylabel("test accuracy %" if metric == "accuracy" else "test NLL")
        if metric == "nll":
            ax.set_yscale("log")
        else:
            low, high = (
                ACCURACY_RANGE
                if data_name == "digits"
                else (dense_mean - ACCURACY_WINDOW[0], dense_mean + ACCURACY_WINDOW[1])
            )
            ax.set_ylim(low, high)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    axes[0].set_title(f"accuracy (lines below {low:.0f} % leave the panel; tables in the .md)", fontsize=9)
    title = TITLES.get(data_name, data_name)
    fig.suptitle(f"{title}: mean and 95 % t interval over {len(res['dense'])} paired splits")
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _errorbar(ax, res, labels, metric, style):
    k = len(res["dense"])
    f = 100 if metric == "accuracy" else 1
    xs, ys, es = [], [], []
    for lab in labels:
        v = [r[metric] for r in res[lab]]
        m = sum(v) / k
        sd = math.sqrt(sum((x - m) ** 2 for x in v) / (k - 1)) if k > 1 else 0.0
        xs.append(sum(r["compression"] for r in res[lab]) / k)
        ys.append(m * f)
        es.append(compare.t_quantile(0.975, max(1, k - 1)) * sd / math.sqrt(k) * f)
    ax.errorbar(xs, ys, yerr=es, capsize=3, **style)


def report(out):
    data = protocol.load_checkpoint(out + ".json")
    res = protocol.by_label(data["splits"])
    add_val_chosen(res)
    tuned = protocol.load_checkpoint(out + ".tune.json") if os.path.exists(out + ".tune.json") else None
    text = markdown(res, data, tuned, out)
    with open(out + ".md", "w") as fh:
        fh.write(text)
    figure(res, out + ".png", data["meta"].get("data", "digits"))
    print(text)


# -- main -----------------------------------------------------------------------------------------------------------
METHODS = ("dense", "ours", "ours-pb", "ours-mf", "groups", "magnitude", "gradual", "l1-structured", "reference")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        default="digits",
        choices=sorted(protocol.DATASETS),
        help="digits (360 test digits a split) or mnist1d (4,000 training, 10,000 test signals a split)",
    )
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--dense-epochs", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=300, help="AutoSparseVD epochs (chosen on validation: --curve)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--group-epochs", type=int, default=200)
    ap.add_argument("--mf-epochs", type=int, default=300, help="AutoMeanFieldNormal epochs (ours-mf)")
    ap.add_argument("--ref-epochs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: small ops on shared cores)")
    ap.add_argument("--skip", nargs="*", default=[], choices=METHODS, help="methods not run (on the splits left)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 splits, few epochs")
    ap.add_argument("--tune", action="store_true", help="the quick validation protocol over --betas (tune())")
    ap.add_argument("--tune-splits", type=int, default=3)
    ap.add_argument("--curve", action="store_true", help="validation scores along training on split 0 (curve())")
    ap.add_argument("--betas", type=float, nargs="+", default=[0.3, 0.1, 0.03], help="KL weights tried by --tune")
    ap.add_argument(
        "--front-betas",
        type=float,
        nargs="*",
        default=[],
        help="KL weights below 1 trained beside the ELBO in the front (ours-β<b>), ours* chooses on val",
    )
    ap.add_argument("--merge", action="store_true", help="assemble a run done in parts from --reuse (merge())")
    ap.add_argument("--first-split", type=int, default=0, help="start at this split (one part of a run)")
    ap.add_argument("--reuse", nargs="*", default=[], help="earlier front.json files (first that has them wins)")
    ap.add_argument(
        "--reuse-methods",
        nargs="*",
        default=[],
        choices=list(REUSABLE),
        help="methods whose records are read from --reuse instead of computed",
    )
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="rebuild front.md/png from front.json")
    ap.add_argument("--out", default=None, help="results/front (digits), results/front_<data> otherwise")
    args = ap.parse_args(argv)
    if args.out is None:
        stem = "front" if args.data == "digits" else f"front_{args.data}"
        args.out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", stem)
    args.make_net = protocol.net_factory(args.data)
    if args.quick:
        args.splits, args.dense_epochs, args.epochs, args.warmup, args.group_epochs, args.ref_epochs = 2, 5, 6, 2, 4, 4
        args.tune_splits = 2
        args.out += "_quick"
    return args


TUNE_TAGS = ("@5x", "@10x", "@100x", "@natural")


def tune(args):
    """The quick protocol: on the first ``--tune-splits`` splits, ours with each KL weight of ``--betas`` (all
    variants at :data:`TUNE_TAGS`); writes ``<out>.tune.json`` and prints *validation* accuracy and NLL only."""
    methods = {"dense": dense_method(args, equal_budget=False)}
    methods.update({ours_label(b): ours_method(args, b, TUNE_TAGS) for b in args.betas})
    meta = dict(betas=args.betas, epochs=args.epochs, warmup=args.warmup, splits=args.tune_splits)
    path = args.out + ".tune.json"
    data = protocol.run(protocol.flat_splits(args.data, args.tune_splits), methods, path, meta, args.resume)
    print(tune_table(data))


def curve(args):
    """Training length: split 0, ours (``--epochs``, warm-up ``--warmup``) with the validation accuracy and NLL of
    the unpruned and the natural-threshold (``LogAlpha(3)``) mean network every 50 epochs; ``<out>.curve.json``."""
    split = protocol.flat_splits(args.data, 1)[0]
    dense = protocol.train_dense_baseline(args.make_net, split, args.dense_epochs)
    pyro.clear_param_store()
    pyro.set_rng_seed(split.index)
    model = pp.bayesianize(dense, pp.distributions.LogUniform(), pp.Categorical(split.dataset_size))
    guide = pp.AutoSparseVD(model)
    rows = []

    def every_50(epoch, record, model, guide):
        if (epoch + 1) % 50 == 0:
            row = {"epoch": epoch + 1}
            for tag, rule in (("mean", rules.Sparsity(0.0)), ("natural", rules.LogAlpha(3.0))):
                res = pp.prune(model, guide, rule)
                r = scored(res.module, split, res.report.compression)
                row.update({f"{tag}_val_accuracy": r["val_accuracy"], f"{tag}_val_nll": r["val_nll"]})
                row[f"{tag}_compression"] = r["compression"]
            rows.append(row)
            print(row, flush=True)

    pp.fit(model, guide, split.loader(seed=3), epochs=args.epochs, lr=args.lr, kl_warmup=args.warmup,
           callbacks=[every_50], progress=False)  # fmt: skip
    write_json(rows, args.out + ".curve.json")


def curve_table(rows) -> str:
    out = ["| epoch | val accuracy % (mean net) | val NLL | val accuracy % (LogAlpha(3)) | val NLL | compression × |",
           "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        out.append(f"| {r['epoch']} | {100 * r['mean_val_accuracy']:.2f} | {r['mean_val_nll']:.4f} | "
                   f"{100 * r['natural_val_accuracy']:.2f} | {r['natural_val_nll']:.4f} | "
                   f"{r['natural_compression']:.0f} |")  # fmt: skip
    return "\n".join(out)


def tune_table(data, keep=lambda label: True) -> str:
    """Markdown: mean validation accuracy % and NLL (where recorded) of the labels ``keep`` accepts over the splits
    of ``data`` (no test figure)."""
    res = protocol.by_label(data["splits"])
    rows = ["| variant | val accuracy % | val NLL | compression × |", "| --- | --- | --- | --- |"]
    for lab, recs in res.items():
        if not keep(lab):
            continue
        k = len(recs)
        va = sum(r["val_accuracy"] for r in recs) / k
        vn = f"{sum(r['val_nll'] for r in recs) / k:.4f}" if all("val_nll" in r for r in recs) else "—"
        rows.append(f"| {lab} | {100 * va:.2f} | {vn} | {sum(r['compression'] for r in recs) / k:.0f} |")
    return "\n".join(rows)


def build_methods(args):
    """The methods of a front run in order (dense first: every other method starts from its network); methods named
    in ``--reuse-methods`` are read from ``--reuse`` (:func:`reused_method`)."""
    entries = [split_entries(protocol.load_checkpoint(p)) for p in args.reuse]
    indices = range(args.first_split, args.splits)
    missing = [m for m in args.reuse_methods if any(lookup(entries, i, m) is None for i in indices)]
    if missing:
        raise ValueError(f"--reuse-methods {missing}: not on every split in the --reuse files")
    reuse = set(args.reuse_methods)
    methods = {"dense": dense_method(args, equal_budget="dense-equal" not in reuse)}
    methods.update({f"{m} (reused)": reused_method(m, entries) for m in REUSABLE if m in reuse})
    fresh = {"ours": ours_method(args)} if "ours" not in reuse else {}
    fresh.update({ours_label(b): ours_method(args, b) for b in args.front_betas})
    fresh["ours-pb"] = ours_method(args, point_bias=True)
    fresh.update({
        "ours-mf": ours_mf_method(args), "groups": groups_method(args),
        "magnitude": magnitude_method(args), "gradual": gradual_method(args),
        "l1-structured": structured_method(args),
        "reference": reference_method(args),
    })  # fmt: skip
    methods.update({k: v for k, v in fresh.items() if k not in reuse and k not in args.skip})
    seconds = {str(i): {m: reused_seconds(entries, i, m) for m in reuse} for i in indices} if reuse else None
    return methods, seconds


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tune:
        return tune(args)
    if args.curve:
        return curve(args)
    if args.merge:
        merge(args)
    if not (args.report_only or args.merge):
        methods, seconds = build_methods(args)
        drop = ("resume", "report_only", "out", "skip", "tune", "curve", "make_net")
        meta = {k: v for k, v in vars(args).items() if k not in drop}
        meta.update(torch=torch.__version__, pyro=pyro.__version__, levels=list(LEVELS))
        if seconds:
            meta["reused_seconds"] = seconds  # the reused methods' time in the runs that computed them
        t = time.perf_counter()
        splits = protocol.flat_splits(args.data, args.splits)[args.first_split :]
        data = protocol.run(splits, methods, args.out + ".json", meta, args.resume)
        print(f"front: {len(data['splits'])} splits in {time.perf_counter() - t:.0f} s")
    report(args.out)


if __name__ == "__main__":
    main()
