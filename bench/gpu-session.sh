#!/usr/bin/env bash
# One GPU session's work, in the order scarce GPU time is spent: confirm Dawn finds the GPU through the native
# (Vulkan) backend, profile the GFZ and DFZ training steps with GPU timestamps (GFZ also without fusion), benchmark training steps and
# kernels against PyTorch on the same machine (these four within the first 5 minutes), time Dawn's toggles, then train the
# `paper` GFZ and DFZ (or resume them from checkpoints/) and evaluate them on the full test set (K = 10, seeds 1-3).
# New work stops at the deadline, so what was measured is always written out.
#
#   bash bench/gpu-session.sh OUT_DIR [SECONDS]      (default 480 s; run from the repository root, after `npm run build`)
#
# Needs: node, dist/ (npm run build), python3 with torch, Fashion-MNIST in $FASHION_MNIST_DIR. Writes OUT_DIR/results.tar
# (benchmark JSON, evaluations, logs) and OUT_DIR/checkpoints.tar.part-* (the checkpoints trained, with Adam's state,
# split into 15 MiB parts: `cat checkpoints.tar.part-* | tar -x` gives <model>/<model>-paper.*).
set -u
out=${1:?usage: bash bench/gpu-session.sh OUT_DIR [SECONDS]}
budget=${2:-480}
work=$(mktemp -d)
mkdir -p "$out" "$work/ckpt"
export GENCLS_BACKEND=${GENCLS_BACKEND:-native} # a GPU session that silently fell back to a software renderer would measure nothing useful
# The benchmarks' warm-ups tune the shared-memory kernels' tile sizes for this GPU; the choices land in the results.
export GENCLS_AUTOTUNE=${GENCLS_AUTOTUNE:-1} GENCLS_AUTOTUNE_CACHE=${GENCLS_AUTOTUNE_CACHE:-$work/autotune.json}
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
  # Checkpoints of the models trained here (with Adam's state), in parts the size a transfer may carry.
  local trained=$(cd "$work/ckpt" && for m in *; do [ "$m/$m-paper.safetensors" -nt "$m/.before" ] && echo "$m"; done)
  [ -n "$trained" ] && tar -cf - -C "$work/ckpt" $trained | split -b 15m - "$out/checkpoints.tar.part-"
  ls -la "$out"
}
trap pack EXIT

step info 60 node dist/src/cli.js info || { say "no native adapter: nothing else is worth running"; exit 3; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$work/nvidia-smi.csv" 2>&1
# Where a training step's time goes, with GPU timestamps per dispatch, before any comparison.
for m in gfz dfz; do
  step profile-$m 45 node dist/bench/profile.js --model $m --task train --json "$work/profile-$m-train.json"
done
# The same GFZ step with one dispatch per op: what fusion saves on this GPU.
step profile-gfz-eager 45 env GENCLS_FUSION=0 node dist/bench/profile.js --model gfz --task train --json "$work/profile-gfz-train-eager.json"
step train-step $(($(left) - 300)) node dist/bench/train-step.js --no-tfjs --torch --budget 5 --json "$work/train-step.json"
step kernels $(($(left) - 200)) node dist/bench/kernels.js --no-cpu --no-webgpu --torch --reps 10 --budget 1 --json "$work/kernels.json"
# Dawn's toggles on this GPU (each set in its own process, two rounds).
step toggles $(($(left) - 150 < 120 ? $(left) - 150 : 120)) node dist/bench/toggles.js --rounds 2 --steps 20 --json "$work/toggles.json"

# Then the paper models, side by side on the GPU. Each is trained from scratch, or resumed from its checkpoint in
# checkpoints/ when Adam's state is there too, to its last epoch (a checkpoint every epoch; SIGINT at the deadline
# keeps the last whole epoch), then evaluated on the full test set with seeds 1-3. A checkpoint that came without
# its Adam state is only evaluated.
for m in gfz dfz; do
  (
    dir="$work/ckpt/$m"
    mkdir -p "$dir"
    ck="$dir/$m-paper.safetensors"
    cp checkpoints/$m-paper.safetensors checkpoints/$m-paper.optim.safetensors "$dir/" 2>/dev/null
    if [ -f "$ck" ] && [ ! -f "$dir/$m-paper.optim.safetensors" ]; then
      say "$m: checkpoint without Adam state: evaluating only"
    else
      touch "$dir/.before" # checkpoints saved after this were trained here
      step train-$m-paper $(($(left) - 25)) node dist/src/cli.js train --model $m --preset paper --out "$dir" $([ -f "$ck" ] && echo --resume) || exit 0
    fi
    for seed in 1 2 3; do
      step evaluate-$m-paper-seed$seed $(($(left) - 15)) node dist/src/cli.js evaluate "$ck" --seed $seed --json || break
    done
  ) &
done
wait
