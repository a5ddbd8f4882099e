#!/usr/bin/env bash
# Rerun published README tables: each recipe over seeds 0-4, `ltrain-report`, then the table (and its plot)
# pasted into README.md by bench/update_readme.py. Nothing in a table is typed by hand.
#
#   bash bench/publish.sh mnist_transfer fashion_transfer     # the names of README's generated blocks
#
# Two processes share the seeds (0,1,2 and 3,4; one torch thread each) on a 2-core machine; the sweeps,
# their runs and a private zoo go to $OUT/<name> (default /tmp/pub). Run it on a quiet machine: the tables
# name the hardware, and a figure measured under load should say so.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/pub}
BIN=${BIN:-.venv/bin}
declare -A TITLE=(
  [mnist_transfer]="mnist_transfer (digits 0-4 to 5-9, 100 labelled images per digit)"
  [fashion_transfer]="fashion_transfer (shirt vs sandal from 200 labelled images; model A on the other 8 classes)"
  [imagenet_fashion]="imagenet_fashion (ImageNet EfficientNet-Lite0 on Fashion-MNIST, 100 labels per class, 64x64, 6 epochs)"
  [imagenet_fashion_files]="imagenet_fashion_files (the same from PNG files through data=image_folder with the lite0 timm preprocessing at 224 px, NHWC, 6 epochs; tested on a seeded 2,000 of the 10,000 test images)"
)
declare -A METRICS=([imagenet_fashion]="[test_acc,best_val_acc]" [imagenet_fashion_files]="[test_acc,best_val_acc]")
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
for name in "$@"; do
  dir=$OUT/$name
  rm -rf "$dir" && mkdir -p "$dir"
  export LTRAIN_ZOO_HOME=$dir/zoo
  start=$(date +%s)
  pids=()
  for seeds in 0,1,2 3,4; do
    "$BIN/ltrain" -m "recipe=$name" "seed=$seeds" "hydra.sweep.dir=$dir/seeds_${seeds/,*/}" \
      trainer.enable_progress_bar=false >"$dir/seeds_${seeds/,*/}.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "$name: a sweep failed, see $dir/seeds_*.log" >&2; exit 1; }; done
  args=("dir=$dir")
  [[ -n ${TITLE[$name]:-} ]] && args+=("title='${TITLE[$name]}'")
  [[ -n ${METRICS[$name]:-} ]] && args+=("metrics=${METRICS[$name]}")
  "$BIN/ltrain-report" "${args[@]}"
  "$BIN/python" bench/update_readme.py "$name" "$dir/report.md"
  if [[ -f docs/results/$name.png ]]; then cp "$dir/report.png" "docs/results/$name.png"; fi
  if [[ -f docs/results/${name}_curves_s0.png ]]; then cp "$dir/seeds_0/0/curves.png" "docs/results/${name}_curves_s0.png"; fi
  echo "$name: $(( ($(date +%s) - start) / 60 )) min wall, 2 processes" | tee -a "$OUT/times.txt"
done
