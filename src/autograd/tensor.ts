// The graph the tape walks: each tensor made by a differentiable op remembers its parents and a backward closure
// (micrograd-style); `record` attaches them only when gradients are being tracked. The tensor itself, the runtime
// and scopes are the backend's (src/backend/tensor.ts), re-exported so the layers above import one module.
import type { Tensor, BackwardFn, RecordOptions } from '../backend/tensor.js';

export * from '../backend/tensor.js';

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording any graph. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Attaches an op's backward closure to its output when any input needs a gradient; returns the output. */
export function record(out: Tensor, op: string, parents: Tensor[], backward: BackwardFn, opts: RecordOptions = {}): Tensor {
  out.op = op;
  if (gradEnabled && parents.some((p) => p.requiresGrad)) {
    out.requiresGrad = true;
    out.parents = parents;
    out.backwardFn = backward;
    out.gradActivation = opts.gradActivation ?? null;
    out.foldsMask = opts.foldsMask ?? null;
    out.maskTransparent = opts.maskTransparent ?? false;
  }
  return out;
}
