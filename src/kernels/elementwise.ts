// Elementwise kernels: unary maps, binary maps with NumPy broadcasting, and the fused gradient maps their
// backward passes use. With the runtime's fusion on (the default) they defer to src/kernels/fusion.ts, which runs
// a chain of them as one kernel; otherwise one pipeline per op (and per broadcast/contiguous variant) serves every
// shape.
import { wgsl } from 'wgsl-preprocessor/wgsl-preprocessor.js';
import { Tensor, runtime, fmt, type Shape } from '../backend/tensor.js';
import { program, flatIndex } from '../backend/program.js';
import { STABLE_WGSL } from './activation.js';
import { broadcastShapes, stridesOf } from '../core/shape.js';
import { UNARY_OPS, BINARY_OPS, type UnaryOp, type BinaryOp } from './pointwise.js';
import { fuseUnary, fuseBinary } from './fusion.js';

export const MAX_RANK = 8;
const WG = 256;

export { UNARY_OPS, BINARY_OPS, type UnaryOp, type BinaryOp } from './pointwise.js';

const unaryProgram = (op: UnaryOp) =>
  program(`unary:${op}`, () => ({
    name: `unary.${op}`,
    inputs: ['xs'],
    outputs: ['ys'],
    uniforms: { n: 'u32', a: 'f32', b: 'f32' },
    workgroupSize: WG,
    prelude: () => `${STABLE_WGSL}\nfn f(x: f32, a: f32, b: f32) -> f32 { return ${UNARY_OPS[op]}; }`,
    body: () => `${flatIndex(WG, 'u.n')}
  ys[i] = f(xs[i], u.a, u.b);`,
  }));

/** y = op(x) elementwise; `a`, `b` are the op's scalar parameters (clamp bounds, affine scale/shift). */
export function unaryKernel(op: UnaryOp, x: Tensor, a = 0, b = 0): Tensor {
  if (runtime().fusion) return fuseUnary(op, x, a, b);
  const y = Tensor.empty(x.shape);
  unaryProgram(op).run({ inputs: [x.binding], outputs: [y.binding], uniforms: { n: x.size, a, b }, workgroups: runtime().groups1d(Math.ceil(x.size / WG)) });
  return y;
}

/** Innermost elements one broadcasting invocation computes: the index arithmetic is paid once per run. */
const BROADCAST_RUN = 16;

// Flat: one element per invocation. Broadcast (outerRank >= 0): invocation t computes run t % runs of the
// innermost merged axis at outer index t / runs, decomposed with the rank unrolled (one pipeline per rank).
const binaryProgram = (op: BinaryOp, outerRank: number | null) =>
  program(`binary:${op}:${outerRank === null ? 'flat' : `bc${outerRank}`}`, () => {
    const at = (a: string, k: number) => `u.${a}[${k >> 2}][${k & 3}]`;
    const decompose = [...Array(outerRank ?? 0).keys()]
      .reverse()
      .map((k) => `  { let c = rem % ${at('shape', k)}; rem = rem / ${at('shape', k)}; ix += c * ${at('sx', k)}; iy += c * ${at('sy', k)}; o += c * ${at('so', k)}; }`)
      .join('\n');
    const axes = { array: 'u32', length: MAX_RANK } as const;
    return {
      name: `binary.${op}`,
      inputs: ['xs', 'ys'],
      outputs: ['out'],
      uniforms: { n: 'u32', runs: 'u32', a: 'f32', b: 'f32', inner: 'u32', innerX: 'u32', innerY: 'u32', shape: axes, sx: axes, sy: axes, so: axes },
      workgroupSize: WG,
      prelude: () => `${STABLE_WGSL}\nfn f(x: f32, y: f32, a: f32, b: f32) -> f32 { return ${BINARY_OPS[op]}; }`,
      body: () => wgsl`${flatIndex(WG, 'u.n')}
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
#endif`,
    };
  });

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
  if (rt.fusion) return fuseBinary(op, x, y, outShape, a, b);
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
  const padded = (v: number[], pad: number) => [...v, ...Array<number>(MAX_RANK - v.length).fill(pad)];
  binaryProgram(op, same ? null : outer).run({
    inputs: [x.binding, y.binding],
    outputs: [out.binding],
    uniforms: {
      n: threads,
      runs,
      a,
      b,
      inner,
      innerX: plan.strides[0][outer] ?? 0,
      innerY: plan.strides[1][outer] ?? 0,
      shape: padded(plan.shape.slice(0, outer), 1),
      sx: plan.strides[0].slice(0, outer),
      sy: plan.strides[1].slice(0, outer),
      so: outStrides.slice(0, outer),
    },
    workgroups: rt.groups1d(Math.ceil(threads / WG)),
  });
  return out;
}

const fillProgram = program('fill', () => ({
  name: 'fill',
  inputs: [],
  outputs: ['ys'],
  uniforms: { n: 'u32', value: 'f32' },
  workgroupSize: WG,
  body: () => `${flatIndex(WG, 'u.n')}
  ys[i] = u.value;`,
}));

/** Fills of at most this many elements are written from the host: a copy in stream order costs less than a dispatch. */
const HOST_FILL = 64;

export function fillKernel(shape: Shape, value: number): Tensor {
  const y = Tensor.empty(shape);
  if (y.size === 0) return y;
  if (y.size <= HOST_FILL) {
    runtime().write(y.buffer, new Float32Array(y.size).fill(value), y.byteOffset);
    return y;
  }
  fillProgram.run({ inputs: [], outputs: [y.binding], uniforms: { n: y.size, value }, workgroups: runtime().groups1d(Math.ceil(y.size / WG)) });
  return y;
}
