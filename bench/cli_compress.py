"""`pyro-prune compress` on breast cancer (written as a CSV from scikit-learn's bundled copy) and on the embedded
digits with every guide: compression, test accuracy, NLL, ECE and wall time, from each run's report.json.

    OMP_NUM_THREADS=1 .venv/bin/python bench/cli_compress.py [--epochs 20] [--pretrain-epochs 20] [--out DIR]

Each run is one `python -m pyro_prune compress` process (torch threads 1, seed 0, one split: differences of about
1-2 pp in accuracy are within split noise). Writes bench/results/cli_compress.{json,md}.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

from sklearn.datasets import load_breast_cancer

GUIDES = [
    "normal",
    "sparse-vd",
    "group-log-uniform",
    "group-horseshoe",
    "laplace-kron",
    "laplace-diag",
    "laplace-full",
    "laplace-last-layer",
    "subnetwork",
]
HERE = os.path.dirname(os.path.abspath(__file__))


def write_bc_csv(path):
    bunch = load_breast_cancer()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([n.replace(" ", "_") for n in bunch.feature_names] + ["diagnosis"])
        for row, label in zip(bunch.data, bunch.target):
            w.writerow([repr(float(v)) for v in row] + [int(label)])


def run(data, guide, args, folder, extra):
    out = os.path.join(folder, f"{os.path.basename(data)}-{guide}")
    cmd = [
        sys.executable,
        "-m",
        "pyro_prune",
        "compress",
        "--data",
        data,
        "--guide",
        guide,
        "--hidden",
        args.hidden,
        "--epochs",
        str(args.epochs),
        "--pretrain-epochs",
        str(args.pretrain_epochs),
        "--num-samples",
        "30",
        "--no-progress",
        "--no-figures",
        "--out",
        out,
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"data": data, "guide": guide, "error": proc.stderr.strip().splitlines()[-1:], "seconds": seconds}
    rep = json.load(open(os.path.join(out, "report.json")))
    test = rep["scores"].get("test pruned", {})
    return {
        "data": os.path.basename(data),
        "guide": guide,
        "compression": rep["compression"]["compression"],
        "rule": rep["selection"]["chosen"]["rule"],
        "accuracy": test.get("accuracy"),
        "nll": test.get("nll"),
        "ece": test.get("ece"),
        "unpruned_accuracy": rep["scores"]["test posterior"].get("accuracy"),
        "csr_speedup": rep["speedup"]["speedup"],
        "seconds": seconds,
        "warnings": rep["warnings"],
    }


def table(rows):
    lines = [
        "| data | guide | compression | chosen rule | accuracy | NLL | ECE | unpruned acc | CSR speed-up | time s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['data']} | {r['guide']} | failed: {r['error']} | | | | | | | {r['seconds']:.0f} |")
            continue
        lines.append(
            f"| {r['data']} | {r['guide']} | {r['compression']:.1f}x | {r['rule']} | {r['accuracy']:.4f} | "
            f"{r['nll']:.4f} | {r['ece']:.4f} | {r['unpruned_accuracy']:.4f} | {r['csr_speedup']:.2f} | "
            f"{r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--pretrain-epochs", type=int, default=20)
    p.add_argument("--hidden", default="100")
    p.add_argument("--guides", default=",".join(GUIDES))
    p.add_argument("--out", default=os.path.join(HERE, "results", "cli_compress"))
    args = p.parse_args()
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        bc = os.path.join(folder, "breast_cancer.csv")
        write_bc_csv(bc)
        for data, extra in ((bc, ["--target", "diagnosis"]), ("digits", [])):
            for guide in args.guides.split(","):
                rows.append(run(data, guide, args, folder, extra))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    total = time.perf_counter() - t0
    cmd = (
        f"OMP_NUM_THREADS=1 .venv/bin/python bench/cli_compress.py --epochs {args.epochs} "
        f"--pretrain-epochs {args.pretrain_epochs} --hidden {args.hidden}"
    )
    md = f"`{cmd}` ({total / 60:.1f} min in all, one seed, one split)\n\n{table(rows)}\n"
    with open(args.out + ".json", "w") as f:
        json.dump({"command": cmd, "seconds": total, "rows": rows}, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
