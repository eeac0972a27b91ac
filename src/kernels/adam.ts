// Fused Adam: one dispatch updates every parameter of a ParameterSet arena. A small segment table
// (start, size, per-parameter step size and bias correction) tells each element which parameter it belongs to,
// so parameters without a gradient this step (size 0 in the table) and the alignment padding are left alone.
// Hyperparameters and bias corrections arrive as data, so one pipeline serves every step and learning rate.
import { runtime } from '../backend/tensor.js';
import { program, flatIndex } from '../backend/program.js';

const WG = 256;
export const ADAM_SEGMENT_BYTES = 16;

const adamProgram = program('adam', () => ({
  name: 'adam',
  inputs: ['grads', { name: 'table', type: 'Segment' }],
  outputs: ['params', 'm', 'v'],
  uniforms: { n: 'u32', segments: 'u32', beta1: 'f32', oneMinusBeta1: 'f32', beta2: 'f32', oneMinusBeta2: 'f32', eps: 'f32', l2: 'f32', decayFactor: 'f32' },
  workgroupSize: WG,
  prelude: () => 'struct Segment { start: u32, size: u32, stepSize: f32, invSqrtBias2: f32 }',
  body: () => `${flatIndex(WG, 'u.n')}
  // The last segment starting at or before i (segment starts ascend from 0).
  var lo = 0u;
  var hi = u.segments;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (table[mid].start <= i) { lo = mid; } else { hi = mid; }
  }
  let seg = table[lo];
  if (i - seg.start >= seg.size) { return; }
  let p = params[i];
  let g = grads[i] + u.l2 * p;
  let mi = u.beta1 * m[i] + u.oneMinusBeta1 * g;
  let vi = u.beta2 * v[i] + u.oneMinusBeta2 * g * g;
  m[i] = mi;
  v[i] = vi;
  params[i] = p * u.decayFactor - seg.stepSize * mi / (sqrt(vi) * seg.invSqrtBias2 + u.eps);`,
}));

/** One parameter's row of the segment table; `size` 0 skips it this step. Offsets and sizes in elements. */
export interface AdamSegment {
  start: number;
  size: number;
  /** lr / (1 - beta1^t). */
  stepSize: number;
  /** 1 / sqrt(1 - beta2^t). */
  invSqrtBias2: number;
}

export function packAdamSegments(segments: readonly AdamSegment[]): ArrayBuffer {
  const buf = new ArrayBuffer(segments.length * ADAM_SEGMENT_BYTES);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  segments.forEach((s, k) => {
    u[4 * k] = s.start;
    u[4 * k + 1] = s.size;
    f[4 * k + 2] = s.stepSize;
    f[4 * k + 3] = s.invSqrtBias2;
  });
  return buf;
}

export interface AdamHyper {
  beta1: number;
  beta2: number;
  eps: number;
  /** Coupled (L2) weight decay added to the gradient, as in torch.optim.Adam. */
  l2: number;
  /** Multiplies the parameter before the update: 1 - lr * weightDecay for decoupled (AdamW) decay, else 1. */
  decayFactor: number;
}

export interface AdamArenas {
  params: GPUBuffer;
  grads: GPUBuffer;
  m: GPUBuffer;
  v: GPUBuffer;
  /** The packed segment table (see packAdamSegments). */
  table: GPUBuffer;
  /** Arena length in f32 elements, padding included. */
  elements: number;
  segments: number;
}

/** Updates params, m and v in place over the whole arena in one dispatch. */
export function adamKernel(a: AdamArenas, h: AdamHyper): void {
  if (a.elements === 0 || a.segments === 0) return;
  const whole = (buffer: GPUBuffer) => ({ buffer, offset: 0, size: a.elements * 4 });
  adamProgram.run({
    inputs: [whole(a.grads), { buffer: a.table, offset: 0, size: a.segments * ADAM_SEGMENT_BYTES }],
    outputs: [whole(a.params), whole(a.m), whole(a.v)],
    uniforms: { n: a.elements, segments: a.segments, beta1: h.beta1, oneMinusBeta1: 1 - h.beta1, beta2: h.beta2, oneMinusBeta2: 1 - h.beta2, eps: h.eps, l2: h.l2, decayFactor: h.decayFactor },
    workgroups: runtime().groups1d(Math.ceil(a.elements / WG)),
  });
}
