// Elementwise kernels: unary maps, binary maps with NumPy broadcasting, and the fused gradient maps their
// backward passes use. One pipeline per op (and per broadcast/contiguous variant) serves every shape.
import { wgsl } from 'wgsl-preprocessor/wgsl-preprocessor.js';
import { Tensor, runtime, fmt, type Shape } from '../autograd/tensor.js';
import { GROUP_INDEX_WGSL, UniformWriter } from './runtime.js';
import { broadcastShapes, stridesOf } from './shape.js';

export const MAX_RANK = 8;
const WG = 256;

/** WGSL expressions over `x` (and uniform params `a`, `b`); numerically stable where it matters. */
export const UNARY_OPS = {
  neg: '-x',
  exp: 'exp(x)',
  log: 'log(x)',
  sqrt: 'sqrt(x)',
  square: 'x * x',
  abs: 'abs(x)',
  sign: 'sign(x)',
  relu: 'max(x, 0.0)',
  step: 'select(0.0, 1.0, x > 0.0)',
  sigmoid: 'stableSigmoid(x)',
  softplus: 'max(x, 0.0) + log1p(exp(-abs(x)))',
  tanh: 'stableTanh(x)',
  clamp: 'clamp(x, a, b)',
  /** x * a + b: scalar scale and shift. */
  affine: 'fma(x, a, b)',
  /** |x|^a, used by p-norms. */
  powAbs: 'pow(abs(x), a)',
  reciprocal: '1.0 / x',
} as const;
export type UnaryOp = keyof typeof UNARY_OPS;

/** WGSL expressions over `x`, `y` (and uniform params `a`, `b`). Ops suffixed Grad are fused backward maps: (x = upstream gradient, y = saved value). */
export const BINARY_OPS = {
  add: 'x + y',
  sub: 'x - y',
  mul: 'x * y',
  div: 'x / y',
  maximum: 'max(x, y)',
  minimum: 'min(x, y)',
  ge: 'select(0.0, 1.0, x >= y)',
  gt: 'select(0.0, 1.0, x > y)',
  eq: 'select(0.0, 1.0, x == y)',
  reluGrad: 'select(0.0, x, y > 0.0)',
  sigmoidGrad: 'x * y * (1.0 - y)',
  tanhGrad: 'x * (1.0 - y * y)',
  softplusGrad: 'x * stableSigmoid(y)',
  sqrtGrad: 'x * 0.5 / y',
  clampGrad: 'select(0.0, x, y >= a && y <= b)',
  /** gradient of |y|^a: x * a * |y|^(a-1) * sign(y) (zero at y = 0 for a > 1). */
  powAbsGrad: 'select(0.0, x * a * pow(abs(y), a - 1.0) * sign(y), y != 0.0)',
} as const;
export type BinaryOp = keyof typeof BINARY_OPS;

const MATH_WGSL = /* wgsl */ `
fn stableSigmoid(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  let e = exp(x);
  return e / (1.0 + e);
}
fn stableTanh(x: f32) -> f32 {
  let t = exp(-2.0 * abs(x));
  return sign(x) * (1.0 - t) / (1.0 + t);
}
// log(1 + t) accurate for small t (Goldberg's trick; WGSL has no log1p).
fn log1p(t: f32) -> f32 {
  let u = 1.0 + t;
  if (u == 1.0) { return t; }
  return log(u) * t / (u - 1.0);
}
`;

function unarySource(op: UnaryOp) {
  return {
    key: `unary:${op}`,
    name: `unary.${op}`,
    wgsl: () => wgsl`
struct U { n: u32, a: f32, b: f32, pad: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read_write> ys: array<f32>;
${MATH_WGSL}
${GROUP_INDEX_WGSL}
fn f(x: f32, a: f32, b: f32) -> f32 { return ${UNARY_OPS[op]}; }
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = groupIndex(wid, nwg) * ${WG}u + lid;
  if (i >= u.n) { return; }
  ys[i] = f(xs[i], u.a, u.b);
}`,
  };
}

/** y = op(x) elementwise; `a`, `b` are the op's scalar parameters (clamp bounds, affine scale/shift). */
export function unaryKernel(op: UnaryOp, x: Tensor, a = 0, b = 0): Tensor {
  const rt = runtime();
  const y = Tensor.empty(x.shape);
  rt.dispatch(unarySource(op), {
    inputs: [x.binding],
    outputs: [y.binding],
    uniforms: new UniformWriter().u32(x.size).f32(a).f32(b).u32(0).finish(),
    workgroups: rt.groups1d(Math.ceil(x.size / WG)),
  });
  return y;
}

/** Innermost elements one broadcasting invocation computes: the index arithmetic is paid once per run. */
const BROADCAST_RUN = 16;

// Flat: one element per invocation. Broadcast (outerRank >= 0): invocation t computes run t % runs of the
// innermost merged axis at outer index t / runs, decomposed with the rank unrolled (one pipeline per rank).
function binarySource(op: BinaryOp, outerRank: number | null) {
  const R4 = MAX_RANK / 4;
  const at = (a: string, k: number) => `u.${a}[${k >> 2}][${k & 3}]`;
  const decompose = [...Array(outerRank ?? 0).keys()]
    .reverse()
    .map((k) => `  { let c = rem % ${at('shape', k)}; rem = rem / ${at('shape', k)}; ix += c * ${at('sx', k)}; iy += c * ${at('sy', k)}; o += c * ${at('so', k)}; }`)
    .join('\n');
  return {
    key: `binary:${op}:${outerRank === null ? 'flat' : `bc${outerRank}`}`,
    name: `binary.${op}`,
    wgsl: () => wgsl`
struct U { n: u32, runs: u32, a: f32, b: f32, inner: u32, innerX: u32, innerY: u32, pad: u32,
  shape: array<vec4<u32>, ${R4}>, sx: array<vec4<u32>, ${R4}>, sy: array<vec4<u32>, ${R4}>, so: array<vec4<u32>, ${R4}> }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> ys: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
${MATH_WGSL}
${GROUP_INDEX_WGSL}
fn f(x: f32, y: f32, a: f32, b: f32) -> f32 { return ${BINARY_OPS[op]}; }
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = groupIndex(wid, nwg) * ${WG}u + lid;
  if (i >= u.n) { return; }
#if ${outerRank !== null}
  let j0 = (i % u.runs) * ${BROADCAST_RUN}u;
  var rem = i / u.runs;
  var ix = j0 * u.innerX;
  var iy = j0 * u.innerY;
  var o = j0;
${decompose}
  let len = min(${BROADCAST_RUN}u, u.inner - j0);
  for (var j = 0u; j < len; j++) {
    out[o] = f(xs[ix], ys[iy], u.a, u.b);
    ix += u.innerX;
    iy += u.innerY;
    o += 1u;
  }
#else
  out[i] = f(xs[i], ys[i], u.a, u.b);
#endif
}`,
  };
}

/**
 * Broadcast strides of `shape` against `outShape` after merging adjacent dimensions that broadcast alike,
 * which keeps the index arithmetic short (e.g. [100,784] + [784] becomes a rank-2 problem).
 */
export function broadcastPlan(outShape: Shape, inShapes: Shape[]): { shape: number[]; strides: number[][] } {
  const R = outShape.length;
  const padded = inShapes.map((s) => [...Array(R - s.length).fill(1), ...s]);
  const shape: number[] = [];
  const patterns: string[] = []; // per merged dim: for each input, 'b' (broadcast) or 'f' (full)
  for (let k = 0; k < R; k++) {
    if (outShape[k] === 1) continue;
    const pat = padded.map((s) => (s[k] === 1 ? 'b' : 'f')).join('');
    if (patterns.length > 0 && patterns[patterns.length - 1] === pat) shape[shape.length - 1] *= outShape[k];
    else {
      shape.push(outShape[k]);
      patterns.push(pat);
    }
  }
  const strides = inShapes.map((_, j) => {
    const st = new Array<number>(shape.length).fill(0);
    let stride = 1;
    for (let k = shape.length - 1; k >= 0; k--) {
      if (patterns[k][j] === 'f') {
        st[k] = stride;
        stride *= shape[k];
      }
    }
    return st;
  });
  return { shape, strides };
}

/** out = op(x, y) with NumPy broadcasting. */
export function binaryKernel(op: BinaryOp, x: Tensor, y: Tensor, a = 0, b = 0): Tensor {
  let outShape: number[];
  try {
    outShape = broadcastShapes(x.shape, y.shape);
  } catch {
    throw new Error(`${op}: shapes ${fmt(x.shape)} and ${fmt(y.shape)} cannot be broadcast together`);
  }
  const rt = runtime();
  const out = Tensor.empty(outShape);
  const n = out.size;
  const same = x.size === n && y.size === n;
  const plan = broadcastPlan(outShape, [x.shape, y.shape]);
  const outer = Math.max(0, plan.shape.length - 1);
  if (outer > MAX_RANK) throw new Error(`${op}: rank ${plan.shape.length} exceeds the supported ${MAX_RANK + 1}`);
  const inner = plan.shape[outer] ?? 1;
  const runs = Math.ceil(inner / BROADCAST_RUN);
  const threads = same ? n : (n / inner) * runs;
  const outStrides = stridesOf(plan.shape);
  const uw = new UniformWriter().u32(threads).u32(runs).f32(a).f32(b);
  uw.u32(inner).u32(plan.strides[0][outer] ?? 0).u32(plan.strides[1][outer] ?? 0).u32(0);
  uw.u32Array(plan.shape.slice(0, outer), MAX_RANK, 1).u32Array(plan.strides[0].slice(0, outer), MAX_RANK);
  uw.u32Array(plan.strides[1].slice(0, outer), MAX_RANK).u32Array(outStrides.slice(0, outer), MAX_RANK);
  rt.dispatch(binarySource(op, same ? null : outer), {
    inputs: [x.binding, y.binding],
    outputs: [out.binding],
    uniforms: uw.finish(),
    workgroups: rt.groups1d(Math.ceil(threads / WG)),
  });
  return out;
}

const fillSource = {
  key: 'fill',
  name: 'fill',
  wgsl: () => `
struct U { n: u32, value: f32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> ys: array<f32>;
${GROUP_INDEX_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = groupIndex(wid, nwg) * ${WG}u + lid;
  if (i >= u.n) { return; }
  ys[i] = u.value;
}`,
};

export function fillKernel(shape: Shape, value: number): Tensor {
  const rt = runtime();
  const y = Tensor.empty(shape);
  rt.dispatch(fillSource, {
    inputs: [],
    outputs: [y.binding],
    uniforms: new UniformWriter().u32(y.size).f32(value).u32(0).u32(0).finish(),
    workgroups: rt.groups1d(Math.ceil(y.size / WG)),
  });
  return y;
}
