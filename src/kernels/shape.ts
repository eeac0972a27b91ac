// Data-movement kernels: a strided copy (transpose/permute, slice, broadcastTo, writing into a region for
// concat), row gather by integer index, and one-hot encoding. Plus the shape arithmetic they share.
import { Tensor, runtime, type Shape } from '../backend/tensor.js';
import { stridesOf } from '../core/shape.js';

export { stridesOf, broadcastShapes, normAxes } from '../core/shape.js';
import { program, flatIndex } from '../backend/program.js';
import { fillKernel } from './elementwise.js';
import { readSource, sourcePrelude, fuseBinary, fuseBroadcast, fuseSlice, fusePad, fusePermute, fuseConcat, fuseReshape, type Source } from './fusion.js';

const WG = 256;
export const COPY_MAX_RANK = 8;

/** Innermost elements one invocation copies: integer index arithmetic is paid once per run, not per element. */
const COPY_RUN = 16;

// Thread t copies run t % runs of the innermost axis at outer index t / runs; the outer index is decomposed with
// the rank unrolled (constant uniform indices, one pipeline per outer rank).
const copyProgram = (outerRank: number, source: Source) =>
  program(`stridedCopy:${outerRank}${source.key}`, () => {
    const at = (a: string, k: number) => `u.${a}[${k >> 2}][${k & 3}]`;
    const decompose = [...Array(outerRank).keys()]
      .reverse()
      .map((k) => `  { let c = rem % ${at('shape', k)}; rem = rem / ${at('shape', k)}; src += c * ${at('inStrides', k)}; dst += c * ${at('outStrides', k)}; }`)
      .join('\n');
    const axes = { array: 'u32', length: COPY_MAX_RANK } as const;
    return {
      name: 'stridedCopy',
      inputs: source.inputs,
      outputs: ['ys'],
      uniforms: { threads: 'u32', runs: 'u32', inOffset: 'u32', outOffset: 'u32', inner: 'u32', innerIn: 'u32', innerOut: 'u32', shape: axes, inStrides: axes, outStrides: axes, ...source.uniforms },
      workgroupSize: WG,
      prelude: () => sourcePrelude(source),
      body: () => `${flatIndex(WG, 'u.threads', 't')}
  let j0 = (t % u.runs) * ${COPY_RUN}u;
  var rem = t / u.runs;
  var src = u.inOffset + j0 * u.innerIn;
  var dst = u.outOffset + j0 * u.innerOut;
${decompose}
  let len = min(${COPY_RUN}u, u.inner - j0);
  for (var j = 0u; j < len; j++) {
    ys[dst] = load_xs(src);
    src += u.innerIn;
    dst += u.innerOut;
  }`,
    };
  });

/**
 * For every index c of `shape`: dst[dstOffset + c·dstStrides] = src[srcOffset + c·srcStrides].
 * Works on raw f32/i32 bits alike (a copy never interprets them).
 */
export function stridedCopy(
  src: Tensor,
  dst: Tensor,
  shape: Shape,
  srcStrides: readonly number[],
  dstStrides: readonly number[],
  srcOffset = 0,
  dstOffset = 0,
): void {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n === 0) return;
  // Drop size-1 axes, then merge each axis into the next wherever both sides are contiguous across them
  // (a slice of rows, a concat along the last axis): fewer axes, longer innermost runs.
  const dims: { size: number; in: number; out: number }[] = [];
  shape.forEach((size, k) => {
    if (size === 1) return;
    const last = dims[dims.length - 1];
    if (last && last.in === size * srcStrides[k] && last.out === size * dstStrides[k]) {
      last.size *= size;
      last.in = srcStrides[k];
      last.out = dstStrides[k];
    } else dims.push({ size, in: srcStrides[k], out: dstStrides[k] });
  });
  if (dims.length === 0) dims.push({ size: 1, in: 0, out: 0 });
  const inner = dims.pop()!;
  if (dims.length > COPY_MAX_RANK) throw new Error(`stridedCopy: rank ${dims.length + 1} exceeds ${COPY_MAX_RANK + 1}`);
  const runs = Math.ceil(inner.size / COPY_RUN);
  const threads = (n / inner.size) * runs;
  const sizes = dims.map((d) => d.size);
  const source = readSource(src);
  copyProgram(dims.length, source).run({
    inputs: source.bindings,
    outputs: [dst.binding],
    uniforms: {
      threads,
      runs,
      inOffset: srcOffset,
      outOffset: dstOffset,
      inner: inner.size,
      innerIn: inner.in,
      innerOut: inner.out,
      shape: [...sizes, ...Array<number>(COPY_MAX_RANK - sizes.length).fill(1)],
      inStrides: dims.map((d) => d.in),
      outStrides: dims.map((d) => d.out),
      ...source.values,
    },
    workgroups: runtime().groups1d(Math.ceil(threads / WG)),
  });
}

/** With fusion on, f32 data movement is an index map its readers apply (src/kernels/fusion.ts), not a copy. */
const fusable = (x: Tensor) => runtime().fusion && x.dtype === 'f32';

/** x's elements under a new shape of the same size: a view of its buffer, or still deferred where fusion allows. */
export function reshapeKernel(x: Tensor, shape: Shape): Tensor {
  return (fusable(x) ? fuseReshape(x, shape) : null) ?? new Tensor(x.sharedStorage, shape, x.dtype, x.byteOffset);
}

/** Permutes axes: out.shape[k] = x.shape[perm[k]]. */
export function permuteKernel(x: Tensor, perm: readonly number[]): Tensor {
  if (fusable(x)) return fusePermute(x, perm);
  const st = stridesOf(x.shape);
  const shape = perm.map((p) => x.shape[p]);
  const out = Tensor.empty(shape, x.dtype);
  stridedCopy(x, out, shape, perm.map((p) => st[p]), stridesOf(shape));
  return out;
}

/** Materialises x broadcast to `shape` (x's shape must broadcast to it). */
export function broadcastToKernel(x: Tensor, shape: Shape): Tensor {
  if (fusable(x)) return fuseBroadcast(x, shape);
  const R = shape.length;
  const xs = [...Array(R - x.rank).fill(1), ...x.shape];
  const st = stridesOf(xs);
  const out = Tensor.empty(shape, x.dtype);
  stridedCopy(x, out, shape, xs.map((d, k) => (d === 1 ? 0 : st[k])), stridesOf(shape));
  return out;
}

/** x[begin[k] : begin[k] + size[k]] along every axis. */
export function sliceKernel(x: Tensor, begin: readonly number[], size: readonly number[]): Tensor {
  if (fusable(x)) return fuseSlice(x, begin, size);
  const st = stridesOf(x.shape);
  const out = Tensor.empty(size, x.dtype);
  const offset = begin.reduce((acc, b, k) => acc + b * st[k], 0);
  stridedCopy(x, out, size, st, stridesOf(size), offset, 0);
  return out;
}

/** Writes x into the region of `dst` starting at `begin` (used by concat and by slice's gradient). */
export function writeRegion(x: Tensor, dst: Tensor, begin: readonly number[]): void {
  const dstSt = stridesOf(dst.shape);
  const offset = begin.reduce((acc, b, k) => acc + b * dstSt[k], 0);
  stridedCopy(x, dst, x.shape, stridesOf(x.shape), dstSt, 0, offset);
}

/** x placed at `begin` in zeros of `shape` (slice's gradient). */
export function padKernel(x: Tensor, shape: Shape, begin: readonly number[]): Tensor {
  if (fusable(x)) return fusePad(x, shape, begin);
  const out = fillKernel(shape, 0);
  writeRegion(x, out, begin);
  return out;
}

/** The xs (same dtype, shapes equal off `axis`) joined along `axis` into `shape`, each starting at `starts[i]`. */
export function concatKernel(xs: Tensor[], axis: number, shape: Shape, starts: readonly number[]): Tensor {
  if (xs.every(fusable)) return fuseConcat(xs, axis, shape, starts);
  const out = Tensor.empty(shape, xs[0].dtype);
  xs.forEach((t, i) => writeRegion(t, out, shape.map((_, k) => (k === axis ? starts[i] : 0))));
  return out;
}

const gatherProgram = program('gatherRows', () => ({
  name: 'gatherRows',
  inputs: ['xs', { name: 'idx', type: 'i32' }],
  outputs: ['ys'],
  uniforms: { n: 'u32', rowSize: 'u32', rows: 'u32' },
  workgroupSize: WG,
  body: () => `${flatIndex(WG, 'u.n')}
  let r = i / u.rowSize;
  let j = idx[r];
  // Out-of-range indices read as zero rather than out of bounds; the host validates indices it knows.
  if (j < 0 || u32(j) >= u.rows) { ys[i] = 0.0; return; }
  ys[i] = xs[u32(j) * u.rowSize + i % u.rowSize];`,
}));

/** out[i] = x[indices[i]] along axis 0. */
export function gatherRowsKernel(x: Tensor, indices: Tensor): Tensor {
  if (indices.dtype !== 'i32') throw new Error(`gather: indices must be i32, got ${indices.dtype}`);
  const rowSize = x.size / x.shape[0];
  const shape = [...indices.shape, ...x.shape.slice(1)];
  const out = Tensor.empty(shape, x.dtype);
  gatherProgram.run({
    inputs: [x.binding, indices.binding],
    outputs: [out.binding],
    uniforms: { n: out.size, rowSize, rows: x.shape[0] },
    workgroups: runtime().groups1d(Math.ceil(out.size / WG)),
  });
  return out;
}

// One thread per output element sums every gathered row that came from it: no atomics on f32 needed.
const scatterAddProgram = program('scatterAddRows', () => ({
  name: 'scatterAddRows',
  inputs: ['g', { name: 'idx', type: 'i32' }],
  outputs: ['out'],
  uniforms: { n: 'u32', rowSize: 'u32', count: 'u32' },
  workgroupSize: WG,
  body: () => `${flatIndex(WG, 'u.n')}
  let r = i32(i / u.rowSize);
  let c = i % u.rowSize;
  var acc = 0.0;
  for (var k = 0u; k < u.count; k++) {
    if (idx[k] == r) { acc += g[k * u.rowSize + c]; }
  }
  out[i] = acc;`,
}));

/** Gradient of gatherRows: out[r] = sum of g[k] over k with indices[k] = r. */
export function scatterAddRowsKernel(g: Tensor, indices: Tensor, rows: number): Tensor {
  const rowSize = g.size / Math.max(1, indices.size);
  const shape = [rows, ...g.shape.slice(indices.rank)];
  const out = Tensor.empty(shape);
  scatterAddProgram.run({
    inputs: [g.binding, indices.binding],
    outputs: [out.binding],
    uniforms: { n: out.size, rowSize, count: indices.size },
    workgroups: runtime().groups1d(Math.ceil(out.size / WG)),
  });
  return out;
}

const oneHotProgram = program('oneHot', () => ({
  name: 'oneHot',
  inputs: [{ name: 'labels', type: 'i32' }],
  outputs: ['ys'],
  uniforms: { n: 'u32', depth: 'u32' },
  workgroupSize: WG,
  body: () => `${flatIndex(WG, 'u.n')}
  ys[i] = select(0.0, 1.0, labels[i / u.depth] == i32(i % u.depth));`,
}));

export function oneHotKernel(labels: Tensor, depth: number): Tensor {
  if (labels.dtype !== 'i32') throw new Error(`oneHot: labels must be i32, got ${labels.dtype}`);
  const rt = runtime();
  if (rt.fusion) {
    // labels[..., None] == [0, 1, ..., depth - 1]: an expression its readers (a concat, a likelihood's sum)
    // compute, not a pass of its own. The class indices are written from the host, a copy rather than a dispatch.
    const column = new Tensor(labels.sharedStorage, [...labels.shape, 1], 'i32', labels.byteOffset);
    const classes = Tensor.empty([depth]);
    rt.write(classes.buffer, Float32Array.from({ length: depth }, (_, k) => k), classes.byteOffset);
    const out = fuseBinary('eq', column, classes, [...labels.shape, depth], 0, 0);
    column.dispose();
    classes.dispose();
    return out;
  }
  const out = Tensor.empty([...labels.shape, depth]);
  oneHotProgram.run({ inputs: [labels.binding], outputs: [out.binding], uniforms: { n: out.size, depth }, workgroups: runtime().groups1d(Math.ceil(out.size / WG)) });
  return out;
}
