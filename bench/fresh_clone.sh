#!/usr/bin/env bash
# Wall time of README's two commands as a new user meets them: each in its own fresh clone of the committed
# HEAD, set-up included (the venv, the install, the data). Prints a markdown table for README.md:
#   bash bench/fresh_clone.sh > /tmp/fresh.md && python bench/update_readme.py fresh_clone /tmp/fresh.md
# Run it on a quiet machine: it measures whatever else the CPUs are doing too.
set -euo pipefail
src=$(git rev-parse --show-toplevel)
commit=$(git -C "$src" rev-parse --short HEAD)
work=$(mktemp -d /tmp/ltrain-times.XXXXXX)
row() {  # row TARGET: clone, run `make TARGET`, print one table row
  git clone -q "$src" "$work/$1"
  local t0 t1 rc=0
  t0=$(date +%s)
  (cd "$work/$1" && CI=true make "$1" > "$work/$1.log" 2>&1 < /dev/null) || rc=$?
  t1=$(date +%s)
  echo "| \`make $1\` | $(( (t1 - t0) / 60 )) min $(( (t1 - t0) % 60 )) s | $([ $rc = 0 ] && echo passed || echo "FAILED (exit $rc)") |"
}
fashion=$([ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && echo "already installed" || echo "installed by the run")
echo "| command (fresh clone, set-up included) | wall time | result |"
echo "|---|---|---|"
row demo
row test
echo
echo "Measured by \`bash bench/fresh_clone.sh\` at commit $commit; Fashion-MNIST package: $fashion (at the start);" \
     "hardware: $(nproc) CPU cores ($(uname -m)), $(free -g | awk '/Mem:/{print $2}') GiB RAM, no GPU; logs in $work."
