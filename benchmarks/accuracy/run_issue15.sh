#!/bin/sh
# The issue-15 experiments, one process at a time, resumable (finished runs/<method>[_s<seed>].json are skipped).
# 2 x 128 LSTM LM, SGD (paper schedule), U(+-0.05) init, 1000 steps; results under results/issue15/.
set -e
cd "$(dirname "$0")/../.."
R=benchmarks/accuracy/reproduce.py
O=benchmarks/accuracy/results/issue15
C="--hidden 128 --steps 1000 --eval-every 50 --optimizer sgd --jobs 1"
export OMP_NUM_THREADS=1
run() { nice -n 19 .venv/bin/python $R $C "$@"; }
run --cf 100 --init uniform0.05 --only kp pruning doped_kp_no_cmr doped_kp_lindec --seeds 0 --out $O/fig3_cf100
run --cf 100 --init uniform0.05 --only doped_kp_constant doped_kp_expdec doped_kp_lindec --seeds 0 --out $O/cmr_cf100
run --cf 100 --init uniform0.05 --only kp pruning doped_kp_no_cmr doped_kp_lindec --seeds 0 1 --out $O/fig3_cf100
run --cf 20 --init uniform0.05 --only kp lmf hmd doped_kp_lindec doped_lmf doped_hmd --seeds 0 --out $O/table3_cf20
run --cf 100 --init uniform0.05 --only doped_kp_constant doped_kp_expdec doped_kp_lindec --seeds 0 1 --out $O/cmr_cf100
run --cf 100 --init balanced --only kp pruning doped_kp_no_cmr doped_kp_lindec --seeds 0 --out $O/fig3_cf100_balanced
# longer: 2000 steps, two seeds, the rows that decide Figure 3's ordering
C="--hidden 128 --steps 2000 --eval-every 100 --optimizer sgd --jobs 1"
run --cf 100 --init uniform0.05 --only pruning doped_kp_no_cmr doped_kp_lindec kp --seeds 0 1 --out $O/fig3_cf100_2000
# issue 12: the accuracy cost of W_s in 1 x 4 blocks (TFLite's fast kernel) against unstructured W_s, 20x
C="--hidden 128 --steps 1000 --eval-every 50 --optimizer sgd --jobs 1"
run --cf 20 --init uniform0.05 --only pruning doped_kp_lindec --seeds 0 --out $O/unstructured_cf20
run --cf 20 --init uniform0.05 --only pruning doped_kp_lindec --seeds 0 --sparse-block 4 --out $O/block1x4_cf20
