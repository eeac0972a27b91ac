// Counter-based random kernels: Philox4x32-10 keyed by an explicit seed. Element i reads word i % 4 of
// Philox(counter = [floor(i / 4), stream_lo, stream_hi, tag], key = [seed_lo, seed_hi]), so every value depends
// only on (seed, stream, i): independent of workgroup layout, reproducible, and recomputable in the backward pass.
// Each invocation evaluates one Philox block and writes its four elements.
import { Tensor, runtime, type Shape } from '../backend/tensor.js';
import { COUNTER_TAGS, assertSeed, splitSeed } from '../core/philox.js';
import { seedResolver } from '../core/dynamic.js';
import { program } from '../backend/program.js';

const WG = 64;

// WGSL has no 64-bit integers: the high word of each 32x32 product is assembled from 16-bit limbs.
export const PHILOX_WGSL = /* wgsl */ `
fn mulhi32(a: u32, b: u32) -> u32 {
  let al = a & 0xffffu;
  let ah = a >> 16u;
  let bl = b & 0xffffu;
  let bh = b >> 16u;
  let albl = al * bl;
  let ahbl = ah * bl;
  let albh = al * bh;
  let mid = (albl >> 16u) + (ahbl & 0xffffu) + (albh & 0xffffu);
  return ah * bh + (ahbl >> 16u) + (albh >> 16u) + (mid >> 16u);
}
fn philox4x32(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = counter;
  var k = key;
  for (var r = 0u; r < 10u; r++) {
    let hi0 = mulhi32(0xd2511f53u, c.x);
    let lo0 = 0xd2511f53u * c.x;
    let hi1 = mulhi32(0xcd9e8d57u, c.z);
    let lo1 = 0xcd9e8d57u * c.z;
    c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    k = k + vec2<u32>(0x9e3779b9u, 0xbb67ae85u);
  }
  return c;
}
// Top 24 bits as a float in [0, 1): exact in f32 and never 1.
fn unitFloat(w: u32) -> f32 { return f32(w >> 8u) * (1.0 / 16777216.0); }
`;

type Mode = 'uniform' | 'normal' | 'dropout';

/** Per-element body for each mode; `w` holds the block's four words, `e` is the element's flat index. */
const BODIES: Record<Mode, string> = {
  // min() keeps lo + span * u below hi when rounding would reach it.
  uniform: `
  for (var j = 0u; j < 4u; j++) {
    let e = base + j;
    if (e < u.n) { ys[e] = min(u.a + u.b * unitFloat(w[j]), u.c); }
  }`,
  // Box-Muller on word pairs; 1 - u lies in (0, 1], so the log is finite.
  normal: `
  for (var j = 0u; j < 4u; j += 2u) {
    let r = sqrt(-2.0 * log(1.0 - unitFloat(w[j])));
    let theta = 6.283185307179586 * unitFloat(w[j + 1u]);
    let e = base + j;
    if (e < u.n) { ys[e] = u.a + u.b * (r * cos(theta)); }
    if (e + 1u < u.n) { ys[e + 1u] = u.a + u.b * (r * sin(theta)); }
  }`,
  // Integer threshold on the top 24 bits: the keep decision is exact and identical on host and device.
  dropout: `
  for (var j = 0u; j < 4u; j++) {
    let e = base + j;
    if (e < u.n) { ys[e] = select(0.0, xs[e] * u.a, (w[j] >> 8u) >= u.threshold); }
  }`,
};

const randomProgram = (mode: Mode) =>
  program(`random:${mode}`, () => ({
    name: `random.${mode}`,
    inputs: mode === 'dropout' ? ['xs'] : [],
    outputs: ['ys'],
    uniforms: { n: 'u32', key0: 'u32', key1: 'u32', stream0: 'u32', stream1: 'u32', threshold: 'u32', a: 'f32', b: 'f32', c: 'f32' },
    workgroupSize: WG,
    prelude: () => PHILOX_WGSL,
    body: () => `
  let block = groupIndex(wid, nwg) * ${WG}u + lid;
  let base = block * 4u;
  if (base >= u.n) { return; }
  var w = philox4x32(vec4<u32>(block, u.stream0, u.stream1, ${COUNTER_TAGS[mode]}u), vec2<u32>(u.key0, u.key1));
${BODIES[mode]}`,
  }));

/** Where a draw starts: a validated seed (the Philox key) and a stream number (counter words 1-2). */
export interface RandomKey {
  seed: number;
  stream?: number;
}

function dispatchRandom(mode: Mode, out: Tensor, key: RandomKey, params: { a: number; b: number; c?: number; threshold?: number }, input?: Tensor): void {
  if (out.size > 2 ** 32 - 4) throw new Error(`random.${mode}: ${out.size} elements exceed the 2^32 counter range`);
  assertSeed(`random.${mode}`, key.seed);
  assertSeed(`random.${mode}`, key.stream ?? 0, 'stream');
  const [key0, key1] = splitSeed(key.seed);
  const [stream0, stream1] = splitSeed(key.stream ?? 0);
  const traced = seedResolver(key.seed);
  randomProgram(mode).run({
    replayed: traced && { key0: (s) => splitSeed(traced(s))[0], key1: (s) => splitSeed(traced(s))[1] },
    inputs: input ? [input.binding] : [],
    outputs: [out.binding],
    uniforms: { n: out.size, key0, key1, stream0, stream1, threshold: params.threshold ?? 0, a: params.a, b: params.b, c: params.c ?? 0 },
    workgroups: runtime().groups1d(Math.ceil(out.size / 4 / WG)),
  });
}

/** The largest f32 strictly below the f32 `v`. */
function f32Below(v: number): number {
  const f = new Float32Array([v]);
  const bits = new Int32Array(f.buffer);
  if (v > 0) bits[0]--;
  else if (v < 0) bits[0]++;
  else return -(2 ** -149);
  return f[0];
}

/** Uniform values in [lo, hi) (f32 bounds, lo < hi); with lo = 0, hi = 1 exactly the 24-bit units of the words. */
export function uniformKernel(shape: Shape, key: RandomKey, lo = 0, hi = 1): Tensor {
  const out = Tensor.empty(shape);
  dispatchRandom('uniform', out, key, { a: lo, b: Math.fround(hi) - Math.fround(lo), c: f32Below(Math.fround(hi)) });
  return out;
}

/** Normal values mean + std * z, z from Box-Muller. */
export function normalKernel(shape: Shape, key: RandomKey, mean = 0, std = 1): Tensor {
  const out = Tensor.empty(shape);
  dispatchRandom('normal', out, key, { a: mean, b: std });
  return out;
}

/** The 24-bit threshold below which dropout drops an element: P(drop) = threshold / 2^24 ≈ rate. */
export const dropoutThreshold = (rate: number): number => Math.ceil(rate * 2 ** 24);

/**
 * x * mask / (1 - rate), mask recomputed from (seed, stream, element index). Applied to an upstream gradient
 * with the same key it is the exact vector-Jacobian product, so the backward pass stores no mask.
 */
export function dropoutKernel(x: Tensor, rate: number, key: RandomKey): Tensor {
  const out = Tensor.empty(x.shape);
  dispatchRandom('dropout', out, key, { a: 1 / (1 - rate), b: 0, threshold: dropoutThreshold(rate) }, x);
  return out;
}
