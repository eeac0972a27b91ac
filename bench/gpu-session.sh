#!/usr/bin/env bash
# One GPU session's work, in the order scarce GPU time is spent: confirm Dawn finds the GPU through the native
# (Vulkan) backend, benchmark kernels and training steps against PyTorch on the same machine, then train the
# `paper` DFZ while the `paper` GFZ checkpoint is evaluated on the full test set (K = 10, seeds 1-3), and evaluate
# DFZ if its training finished. New work stops at the deadline, so what was measured is always written out.
#
#   bash bench/gpu-session.sh OUT_DIR [SECONDS]      (default 480 s; run from the repository root, after `npm run build`)
#
# Needs: node, dist/ (npm run build), python3 with torch, Fashion-MNIST in $FASHION_MNIST_DIR. Writes OUT_DIR/results.tar
# (benchmark JSON, evaluations, logs) and OUT_DIR/dfz-paper.tar.part-* (the DFZ checkpoint and Adam state, split into
# 15 MiB parts: `cat dfz-paper.tar.part-* | tar -x` joins them).
set -u
out=${1:?usage: bash bench/gpu-session.sh OUT_DIR [SECONDS]}
budget=${2:-480}
work=$(mktemp -d)
mkdir -p "$out" "$work/ckpt"
export GENCLS_BACKEND=${GENCLS_BACKEND:-native} # a GPU session that silently fell back to a software renderer would measure nothing useful
left() { echo $((budget - SECONDS)); }
say() { echo "[gpu-session +${SECONDS}s] $*"; }
step() { # step NAME SECONDS CMD...: runs CMD under a time limit; stdout to $work/NAME.out, stderr to NAME.err, both shown
  local name=$1 limit=$2
  shift 2
  ((limit > 5)) || { say "$name: skipped, ${limit}s left"; return 1; }
  say "$name (limit ${limit}s): $*"
  timeout -s INT -k 20 "$limit" "$@" > >(tee "$work/$name.out") 2> >(tee "$work/$name.err" >&2)
  local rc=$?
  say "$name: exit $rc"
  return $rc
}
pack() {
  say "packing results"
  tar -cf "$out/results.tar" -C "$work" --exclude=ckpt .
  if ls "$work"/ckpt/*.safetensors >/dev/null 2>&1; then tar -cf - -C "$work/ckpt" . | split -b 15m - "$out/dfz-paper.tar.part-"; fi
  ls -la "$out"
}
trap pack EXIT

step info 60 node dist/src/cli.js info || { say "no native adapter: nothing else is worth running"; exit 3; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$work/nvidia-smi.csv" 2>&1
step kernels $(($(left) - 380)) node dist/bench/kernels.js --no-cpu --no-webgpu --torch --reps 10 --budget 1 --json "$work/kernels.json"
step train-step $(($(left) - 300)) node dist/bench/train-step.js --no-tfjs --torch --budget 5 --json "$work/train-step.json"

# The paper DFZ trains (checkpointing every epoch; SIGINT at the deadline keeps the last whole epoch) while the
# paper GFZ is scored; DFZ is scored too if it finishes.
(
  step train-dfz-paper $(($(left) - 25)) node dist/src/cli.js train --model dfz --preset paper --out "$work/ckpt" &&
    for seed in 1 2 3; do
      step "evaluate-dfz-paper-seed$seed" $(($(left) - 15)) node dist/src/cli.js evaluate "$work/ckpt/dfz-paper.safetensors" --seed $seed --json || break
    done
) &
for seed in 1 2 3; do
  step "evaluate-gfz-paper-seed$seed" $(($(left) - 15)) node dist/src/cli.js evaluate checkpoints/gfz-paper.safetensors --seed $seed --json || break
done
wait
