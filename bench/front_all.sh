#!/usr/bin/env bash
# The whole compression-accuracy front of issue 13 in one command:
#
#   bash bench/front_all.sh [digits|mnist1d]
#
# 1. bench/front.py (ours, magnitude, gradual magnitude, L1-structured, the plain Sparse VD reference) in PARTS
#    parallel parts of the splits (--first-split), and bench/front_peers.py (TyXe, laplace-torch) under the peers'
#    interpreter, all at once (one torch thread each);
# 2. bench/front.py --merge: every part and the peers' lines assembled split by split (each split's dense network
#    checked identical across the files) into bench/results/front[_<data>].{json,md,png}.
#
# Environment: PYTHON (default python), PEERS_PYTHON (default /work/peers/bin/python: torch, pyro-ppl, laplace-torch,
# tyxe, mnist1d for --data mnist1d), SPLITS (default 10), PARTS (default 2), WORK (the parts' folder, default a
# fresh temporary one). Runtime (this release's runs; each .md states its method time): mnist1d 273 min of method
# time (89 min of wall time on 2 cores), digits 136 min of method time.
set -euo pipefail
data=${1:-digits}
py=${PYTHON:-python}
peers=${PEERS_PYTHON:-/work/peers/bin/python}
splits=${SPLITS:-10}
parts=${PARTS:-2}
work=${WORK:-$(mktemp -d)}
cd "$(dirname "$0")/.."
per=$(( (splits + parts - 1) / parts ))
files=()
pids=()
for ((p = 0; p < parts; p++)); do
  first=$(( p * per ))
  last=$(( first + per < splits ? first + per : splits ))
  (( first < last )) || continue
  "$py" bench/front.py --data "$data" --first-split "$first" --splits "$last" --out "$work/part$p" \
    > "$work/part$p.log" 2>&1 &
  pids+=($!)
  files+=("$work/part$p.json")
done
PYTHONPATH=. "$peers" bench/front_peers.py --data "$data" --splits "$splits" --out "$work/peers" \
  > "$work/peers.log" 2>&1 &
pids+=($!)
files+=("$work/peers.json")
for pid in "${pids[@]}"; do
  wait "$pid" || { echo "front_all: a part failed; logs in $work" >&2; exit 1; }
done
"$py" bench/front.py --data "$data" --splits "$splits" --merge --reuse "${files[@]}"
echo "front_all: parts and logs in $work"
