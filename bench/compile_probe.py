r"""Does ``torch.compile`` pay on the fused sparse-VD step? (issue 13, point 4: "``torch.compile`` where it pays").

On the digits MLP 64-300-100-10 (50,200 weights, batch 64, CPU), interleaved in one process:

* ``kl_share``: the fraction of one fused training step (forward, backward, Adam) spent in the KL term, as
  1 − (step without KL) ÷ (step with KL), steps alternating; the most a faster KL can save;
* ``kl_compiled_vs_eager``: forward + backward of the sparse-VD KL over the flat parameters,
  ``torch.compile`` of :func:`pyro_prune.distributions.molchanov_kl` (Inductor fuses the elementwise chain) ÷ our
  eager :func:`~pyro_prune.distributions.molchanov_kl_sum` (a hand-fused autograd function), calls alternating;
* ``compile_seconds``: the first compiled call (tracing and code generation), paid once per process and shape.

The epoch saving compiling the KL could bring is ``kl_share × (1 − kl_compiled_vs_eager)``. Medians and 10–90 %
ranges over ``--reps`` alternating pairs, each pair ``--inner`` calls. Usage:
``python bench/compile_probe.py [--reps 30] [--inner 20] [--out bench/results/compile_probe.json]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
import pyro_prune as pp  # noqa: E402
from bench import protocol  # noqa: E402
from bench.common import mlp, write_json  # noqa: E402
from pyro_prune.distributions import molchanov_kl, molchanov_kl_sum  # noqa: E402
from pyro_prune.fused import FlatParameters, fused_loss  # noqa: E402


def quantiles(values):
    """``[median, 10 %, 90 %]`` of ``values``."""
    q = statistics.quantiles(values, n=10)
    return [round(statistics.median(values), 4), round(q[0], 4), round(q[-1], 4)]


def reference_kl(loc: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """The sparse-VD KL as plain tensor code (what ``torch.compile`` sees)."""
    return molchanov_kl(log_sigma2 - (loc * loc + 1e-8).log()).sum()


def clock(fn, inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def kl_calls(n: int):
    """Forward + backward closures of the eager and the compiled KL on ``n`` flat parameters, and the compile time."""
    torch.manual_seed(0)
    loc = torch.randn(n, requires_grad=True)
    log_sigma2 = torch.full((n,), -8.0, requires_grad=True)
    compiled = torch.compile(reference_kl)

    def run(f):
        return lambda: torch.autograd.backward(f(loc, log_sigma2))

    t = time.perf_counter()
    run(compiled)()
    first = time.perf_counter() - t
    value_gap = float((compiled(loc, log_sigma2) - molchanov_kl_sum(loc, log_sigma2)).detach().abs())
    return run(molchanov_kl_sum), run(compiled), first, value_gap


def step_calls(split):
    """One fused training step of ``fit``'s path (forward, backward, Adam) with and without the KL term."""
    dense = mlp()
    model = pp.bayesianize(dense, pp.distributions.LogUniform(), pp.Categorical(split.dataset_size))
    guide = pp.AutoSparseVD(model)
    pp.fit(model, guide, split.loader(), epochs=1, progress=False)  # sets the guide up
    params = FlatParameters(guide, model)
    opt = torch.optim.Adam(list(params.named.values()), lr=1e-3)
    xb, yb = next(iter(split.loader()))

    def step(beta):
        def run():
            params.zero_grads()
            loss, _ = fused_loss(model, guide, xb, yb, beta, check=False)
            loss.backward()
            opt.step()

        return run

    return step(1.0), step(0.0), params


def alternate(a, b, reps: int, inner: int):
    """``reps`` pairs of ``(seconds of a, seconds of b)``, the first of each pair alternating."""
    pairs = []
    for r in range(reps):
        ta, tb = (
            (clock(a, inner), clock(b, inner)) if r % 2 == 0 else tuple(reversed((clock(b, inner), clock(a, inner))))
        )
        pairs.append((ta, tb))
    return pairs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--inner", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "compile_probe")
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    split = protocol.digits_splits(1)[0]
    with_kl, without_kl, params = step_calls(split)
    steps = alternate(with_kl, without_kl, args.reps, args.inner)
    params.release()
    eager, compiled, first, gap = kl_calls(50_200)
    kls = alternate(compiled, eager, args.reps, args.inner)
    out = {
        "kl_share": quantiles([1 - b / a for a, b in steps]),
        "kl_compiled_vs_eager": quantiles([a / b for a, b in kls]),
        "compile_seconds": round(first, 2),
        "kl_value_gap": gap,
        "step_ms_with_kl": round(1e3 * statistics.median(a for a, _ in steps), 3),
        "kl_eager_ms": round(1e3 * statistics.median(b for _, b in kls), 3),
        "reps": args.reps, "inner": args.inner, "threads": args.threads, "torch": torch.__version__,
        "load_1min": round(os.getloadavg()[0], 2),
    }  # fmt: skip
    write_json(out, args.out + ".json")
    print(out)


if __name__ == "__main__":
    main()
