"""The 7,510-weight ``full`` line of bench/laplace_parity.py, with laplace-torch's tuning left out.

laplace-torch 0.3 tunes a full-network prior precision by 100 Adam steps on its marginal likelihood, each a dense
7,510² log-determinant; in bench/laplace_parity.py that line did not finish within 23 and 45 minutes on this
2-core machine. Here both libraries fit the full GGN of the same MAP network (bench/laplace_parity.py's
``digits_map``) once; ours tunes τ by its marginal likelihood (eigenvalues once per fit); then both evaluate the
log evidence at ours' τ and at τ = 1 (the same arguments), and predict the test digits with the GLM-probit predictive
at ours' τ. Times: fit, ours' tuning, one laplace-torch evidence evaluation, predict.

    PYTHONPATH=. /work/peers/bin/python bench/laplace_parity_full.py
"""

from __future__ import annotations

import copy
import os
import sys
import time
import warnings

import pyro.distributions as dist
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
import pyro_prune as pp  # noqa: E402
from bench.common import run_stamp, scores, tensor_loader, write_json  # noqa: E402
from bench.laplace_parity import RESULTS, Laplace, digits_map  # noqa: E402  (hides bench/ from `laplace`)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    torch.set_num_threads(2)
    net, train, _, test = digits_map(100)
    tl = tensor_loader(*train, batch_size=64)
    model = pp.bayesianize(net, dist.Normal(0.0, 1.0), pp.Categorical(len(train[0])))
    guide, ours_fit = timed(lambda: pp.laplace_guide(model, tl, "full", prior_precision=1.0))
    tau, ours_tune = timed(lambda: float(guide.optimize_prior_precision()))
    ours_pred, ours_predict = timed(lambda: pp.predict(model, guide, test[0]).probs)
    la = Laplace(copy.deepcopy(net), "classification", subset_of_weights="all", hessian_structure="full")
    _, theirs_fit = timed(lambda: la.fit(tl))
    theirs_at_ours, theirs_eval = timed(lambda: float(la.log_marginal_likelihood(torch.tensor(tau))))
    la.prior_precision = tau
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        theirs_pred, theirs_predict = timed(lambda: la(test[0], pred_type="glm", link_approx="probit"))
    ours_at_ours, ours_at_1 = float(guide.log_marginal_likelihood()), float(guide.log_marginal_likelihood(1.0))
    theirs_at_1 = float(la.log_marginal_likelihood(torch.tensor(1.0)))
    res = dict(
        config=dict(torch=torch.__version__, threads=2, **run_stamp()),
        tau_ours=round(tau, 4),
        evidence=dict(
            ours_at_ours_tau=round(ours_at_ours, 3),
            theirs_at_ours_tau=round(theirs_at_ours, 3),
            rel_at_ours_tau=round(abs(ours_at_ours - theirs_at_ours) / abs(theirs_at_ours), 5),
            ours_at_1=round(ours_at_1, 3),
            theirs_at_1=round(theirs_at_1, 3),
            rel_at_1=round(abs(ours_at_1 - theirs_at_1) / abs(theirs_at_1), 5),
        ),  # fmt: skip
        ours=dict(
            fit_s=round(ours_fit, 2),
            tune_s=round(ours_tune, 3),
            predict_s=round(ours_predict, 3),
            **scores(ours_pred, test[1]),
        ),  # fmt: skip
        theirs=dict(
            fit_s=round(theirs_fit, 2),
            one_evidence_s=round(theirs_eval, 2),
            predict_s=round(theirs_predict, 3),
            **scores(theirs_pred, test[1]),
        ),  # fmt: skip
    )
    print(res, flush=True)
    write_json(res, os.path.join(RESULTS, "laplace_parity_full.json"))


if __name__ == "__main__":
    main()
