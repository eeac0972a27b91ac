// Reductions: sum, max and a one-pass (online) logsumexp, in two layouts.
//   row:   x viewed as [rows, cols], reduced along cols by one workgroup per row with a shared-memory tree
//          inside it: for long rows. softmax and log-softmax reuse it; short rows get one invocation each.
//   axis:  x viewed as [outer, len, inner], reduced along len by one invocation per (outer, inner) output,
//          looping over len with stride inner: neighbouring invocations read neighbouring addresses, nothing is
//          permuted first, and no barriers are needed (each costs a workgroup-wide switch on llvmpipe).
// The caller reduces any set of axes as a sequence of these, one contiguous block of axes at a time.
import { wgsl } from 'wgsl-preprocessor/wgsl-preprocessor.js';
import { Tensor, runtime } from '../backend/tensor.js';
import { program, flatIndex } from '../backend/program.js';
import { readSource, sourcePrelude, type Source } from './fusion.js';

const WG = 128;

export type RowReduceOp = 'sum' | 'max' | 'logsumexp';
export type RowNormalizeOp = 'softmax' | 'logSoftmax';

// One workgroup per row. Each invocation folds a strided share of the row; the shares are then combined by a
// workgroup tree, or, with subgroups (runtime().subgroups), by subgroupAdd/subgroupMax within each subgroup and
// once more over the subgroups' results: one barrier instead of log2(WG).
const rowProgram = (op: RowReduceOp | RowNormalizeOp, src: Source, sg: boolean) =>
  program(`row:${op}${sg ? ':sg' : ''}${src.key}`, () => {
    const sumLike = op === 'sum';
    const maxLike = op === 'max';
    const lseLike = op === 'logsumexp' || op === 'softmax' || op === 'logSoftmax';
    const normalize = op === 'softmax' || op === 'logSoftmax';
    return {
      name: `rowReduce.${op}`,
      inputs: src.inputs,
      outputs: ['ys'],
      uniforms: { rows: 'u32', cols: 'u32', scale: 'f32', ...src.uniforms },
      workgroupSize: WG,
      subgroups: sg,
      prelude: () => `${sourcePrelude(src)}
var<workgroup> sm: array<f32, ${WG}>;
var<workgroup> ss: array<f32, ${WG}>;
const NEG_INF = -3.4028e+38f;
// Merges two (max, sum of exp(x - max)) pairs; an empty side (max = -inf) contributes nothing.
fn lseMerge(m1: f32, s1: f32, m2: f32, s2: f32) -> vec2<f32> {
  if (s2 == 0.0) { return vec2<f32>(m1, s1); }
  if (s1 == 0.0) { return vec2<f32>(m2, s2); }
  let m = max(m1, m2);
  return vec2<f32>(m, s1 * exp(m1 - m) + s2 * exp(m2 - m));
}
${sg ? `// The (max, sum) pair of every invocation of the subgroup, on every invocation.
fn lseSubgroup(m: f32, s: f32) -> vec2<f32> {
  let top = subgroupMax(select(NEG_INF, m, s > 0.0));
  return vec2<f32>(top, subgroupAdd(select(0.0, s * exp(m - top), s > 0.0)));
}` : ''}
`,
      body: () => wgsl`
  let row = groupIndex(wid, nwg);
  if (row >= u.rows) { return; }
  let base = row * u.cols;
#if ${sumLike}
  var acc = 0.0;
  for (var j = lid; j < u.cols; j += ${WG}u) { acc += load_xs(base + j); }
#elif ${maxLike}
  var acc = NEG_INF;
  for (var j = lid; j < u.cols; j += ${WG}u) { acc = max(acc, load_xs(base + j)); }
#else
  var m = NEG_INF;
  var s = 0.0;
  for (var j = lid; j < u.cols; j += ${WG}u) {
    let r = lseMerge(m, s, load_xs(base + j), 1.0);
    m = r.x;
    s = r.y;
  }
#endif
#if ${sg}
  // Subgroup k holds local indices [k sgsize, (k + 1) sgsize) (Runtime.probeSubgroups checked it).
  let nsg = ${WG}u / sgsize;
#if ${sumLike}
  let part = subgroupAdd(acc);
  if (sgid == 0u) { sm[lid / sgsize] = part; }
  workgroupBarrier();
  var a = 0.0;
  for (var k = sgid; k < nsg; k += sgsize) { a += sm[k]; }
  let total = subgroupAdd(a);
#elif ${maxLike}
  let part = subgroupMax(acc);
  if (sgid == 0u) { sm[lid / sgsize] = part; }
  workgroupBarrier();
  var a = NEG_INF;
  for (var k = sgid; k < nsg; k += sgsize) { a = max(a, sm[k]); }
  let total = subgroupMax(a);
#else
  let part = lseSubgroup(m, s);
  if (sgid == 0u) {
    sm[lid / sgsize] = part.x;
    ss[lid / sgsize] = part.y;
  }
  workgroupBarrier();
  var amax = NEG_INF;
  var asum = 0.0;
  for (var k = sgid; k < nsg; k += sgsize) {
    let r = lseMerge(amax, asum, sm[k], ss[k]);
    amax = r.x;
    asum = r.y;
  }
  let both = lseSubgroup(amax, asum);
  let lse = both.x + log(both.y);
#endif
#else
#if ${lseLike}
  sm[lid] = m;
  ss[lid] = s;
#else
  sm[lid] = acc;
#endif
  workgroupBarrier();
  for (var w = ${WG / 2}u; w > 0u; w = w / 2u) {
    if (lid < w) {
#if ${sumLike}
      sm[lid] += sm[lid + w];
#elif ${maxLike}
      sm[lid] = max(sm[lid], sm[lid + w]);
#else
      let r = lseMerge(sm[lid], ss[lid], sm[lid + w], ss[lid + w]);
      sm[lid] = r.x;
      ss[lid] = r.y;
#endif
    }
    workgroupBarrier();
  }
#if ${lseLike}
  let lse = sm[0] + log(ss[0]);
#else
  let total = sm[0];
#endif
#endif
#if ${normalize}
  for (var j = lid; j < u.cols; j += ${WG}u) {
#if ${op === 'softmax'}
    ys[base + j] = exp(load_xs(base + j) - lse);
#else
    ys[base + j] = load_xs(base + j) - lse;
#endif
  }
#else
  if (lid == 0u) {
#if ${lseLike}
    ys[row] = lse;
#else
    ys[row] = total * u.scale;
#endif
  }
#endif
`,
    };
  });

/** Reduces each row of x viewed as [rows, cols]; `scale` multiplies sum/max results. */
export function rowReduceKernel(op: RowReduceOp, x: Tensor, rows: number, cols: number, scale = 1): Tensor {
  const src = readSource(x);
  const y = Tensor.empty([rows]);
  rowProgram(op, src, runtime().subgroups).run({ inputs: src.bindings, outputs: [y.binding], uniforms: { rows, cols, scale, ...src.values }, workgroups: runtime().groups1d(rows) });
  return y;
}

const AXIS_WG = 64;

const axisProgram = (op: RowReduceOp, src: Source) =>
  program(`axis:${op}${src.key}`, () => ({
    name: `axisReduce.${op}`,
    inputs: src.inputs,
    outputs: ['ys'],
    uniforms: { outer: 'u32', len: 'u32', inner: 'u32', scale: 'f32', ...src.uniforms },
    workgroupSize: AXIS_WG,
    prelude: () => sourcePrelude(src),
    body: () => wgsl`${flatIndex(AXIS_WG, 'u.outer * u.inner', 'e')}
  let o = e / u.inner;
  var p = o * u.len * u.inner + e % u.inner;
#if ${op === 'sum'}
  var acc = 0.0;
  for (var j = 0u; j < u.len; j++) { acc += load_xs(p); p += u.inner; }
  ys[e] = acc * u.scale;
#elif ${op === 'max'}
  var acc = -3.4028e+38f;
  for (var j = 0u; j < u.len; j++) { acc = max(acc, load_xs(p)); p += u.inner; }
  ys[e] = acc * u.scale;
#else
  // Online logsumexp: rescale the running sum whenever the maximum grows.
  var m = -3.4028e+38f;
  var s = 0.0;
  for (var j = 0u; j < u.len; j++) {
    let v = load_xs(p);
    if (v > m) { s = s * exp(m - v) + 1.0; m = v; } else { s += exp(v - m); }
    p += u.inner;
  }
  ys[e] = m + log(s);
#endif`,
  }));

/** Reduces x viewed as [outer, len, inner] along len: [outer * inner] values; `scale` multiplies sum/max results. */
export function axisReduceKernel(op: RowReduceOp, x: Tensor, outer: number, len: number, inner: number, scale = 1): Tensor {
  const src = readSource(x);
  const y = Tensor.empty([outer * inner]);
  axisProgram(op, src).run({ inputs: src.bindings, outputs: [y.binding], uniforms: { outer, len, inner, scale, ...src.values }, workgroups: runtime().groups1d(Math.ceil((outer * inner) / AXIS_WG)) });
  return y;
}

// softmax / log-softmax of short rows (class logits): one invocation per row, no workgroup tree.
const shortRowProgram = (op: RowNormalizeOp, src: Source) =>
  program(`shortRow:${op}${src.key}`, () => ({
    name: `shortRowNormalize.${op}`,
    inputs: src.inputs,
    outputs: ['ys'],
    uniforms: { rows: 'u32', cols: 'u32', ...src.uniforms },
    workgroupSize: AXIS_WG,
    prelude: () => sourcePrelude(src),
    body: () => wgsl`${flatIndex(AXIS_WG, 'u.rows', 'row')}
  let base = row * u.cols;
  var m = -3.4028e+38f;
  for (var j = 0u; j < u.cols; j++) { m = max(m, load_xs(base + j)); }
  var s = 0.0;
  for (var j = 0u; j < u.cols; j++) { s += exp(load_xs(base + j) - m); }
  let lse = m + log(s);
  for (var j = 0u; j < u.cols; j++) {
#if ${op === 'softmax'}
    ys[base + j] = exp(load_xs(base + j) - lse);
#else
    ys[base + j] = load_xs(base + j) - lse;
#endif
  }`,
  }));

/** Rows shorter than this are normalised by one invocation each rather than a workgroup tree. */
const SHORT_ROW = 64;

/** softmax or log-softmax of each row of x viewed as [rows, cols]; output has x's shape. */
export function rowNormalizeKernel(op: RowNormalizeOp, x: Tensor, rows: number, cols: number): Tensor {
  const src = readSource(x);
  const y = Tensor.empty(x.shape);
  const rt = runtime();
  if (cols < SHORT_ROW) shortRowProgram(op, src).run({ inputs: src.bindings, outputs: [y.binding], uniforms: { rows, cols, ...src.values }, workgroups: rt.groups1d(Math.ceil(rows / AXIS_WG)) });
  else rowProgram(op, src, runtime().subgroups).run({ inputs: src.bindings, outputs: [y.binding], uniforms: { rows, cols, scale: 1, ...src.values }, workgroups: rt.groups1d(rows) });
  return y;
}

// The vector-Jacobian products of short-row softmax and log-softmax, one invocation per row: the row sum and the
// elementwise update in one pass, where the composite form costs a reduction and a map.
//   log-softmax: dx = g - exp(y) * sum(g);   softmax: dx = y * (g - sum(g * y)).
const shortRowGradProgram = (op: RowNormalizeOp, src: Source) =>
  program(`shortRowGrad:${op}${src.key}`, () => ({
    name: `shortRowNormalizeGrad.${op}`,
    inputs: [...src.inputs, 'ys'],
    outputs: ['dx'],
    uniforms: { rows: 'u32', cols: 'u32', ...src.uniforms },
    workgroupSize: AXIS_WG,
    prelude: () => sourcePrelude(src),
    body: () => wgsl`${flatIndex(AXIS_WG, 'u.rows', 'row')}
  let base = row * u.cols;
  var s = 0.0;
#if ${op === 'softmax'}
  for (var j = 0u; j < u.cols; j++) { s += load_gs(base + j) * ys[base + j]; }
  for (var j = 0u; j < u.cols; j++) { dx[base + j] = ys[base + j] * (load_gs(base + j) - s); }
#else
  for (var j = 0u; j < u.cols; j++) { s += load_gs(base + j); }
  for (var j = 0u; j < u.cols; j++) { dx[base + j] = load_gs(base + j) - exp(ys[base + j]) * s; }
#endif`,
  }));

/**
 * The gradient of softmax or log-softmax's input from its output's gradient g and its output y (both viewed as
 * [rows, cols]), in one kernel for short rows; null for long rows, where the caller composes it.
 */
export function rowNormalizeGradKernel(op: RowNormalizeOp, g: Tensor, y: Tensor, rows: number, cols: number): Tensor | null {
  if (cols >= SHORT_ROW) return null;
  const src = readSource(g, 'gs', 2);
  const dx = Tensor.empty(y.shape);
  shortRowGradProgram(op, src).run({ inputs: [...src.bindings, y.binding], outputs: [dx.binding], uniforms: { rows, cols, ...src.values }, workgroups: runtime().groups1d(Math.ceil(rows / AXIS_WG)) });
  return dx;
}

const argmaxProgram = (src: Source) => program(`row:argmax${src.key}`, () => ({
  name: 'rowReduce.argmax',
  inputs: src.inputs,
  outputs: [{ name: 'ys', type: 'i32' }],
  uniforms: { rows: 'u32', cols: 'u32', ...src.uniforms },
  workgroupSize: WG,
  prelude: () => `${sourcePrelude(src)}
var<workgroup> bestValue: array<f32, ${WG}>;
var<workgroup> bestIndex: array<u32, ${WG}>;
// Ties go to the lowest index, so results do not depend on the reduction order.
fn better(v: f32, i: u32, w: f32, j: u32) -> bool { return w > v || (w == v && j < i); }
`,
  body: () => `
  let row = groupIndex(wid, nwg);
  if (row >= u.rows) { return; }
  var v = -3.4028e+38f;
  var i = 0xffffffffu;
  for (var j = lid; j < u.cols; j += ${WG}u) {
    let w = load_xs(row * u.cols + j);
    if (better(v, i, w, j)) { v = w; i = j; }
  }
  bestValue[lid] = v;
  bestIndex[lid] = i;
  workgroupBarrier();
  for (var w = ${WG / 2}u; w > 0u; w = w / 2u) {
    if (lid < w && better(bestValue[lid], bestIndex[lid], bestValue[lid + w], bestIndex[lid + w])) {
      bestValue[lid] = bestValue[lid + w];
      bestIndex[lid] = bestIndex[lid + w];
    }
    workgroupBarrier();
  }
  if (lid == 0u) { ys[row] = i32(bestIndex[0]); }`,
}));

/** Index of the largest element of each row of x viewed as [rows, cols], as i32. */
export function rowArgmaxKernel(x: Tensor, rows: number, cols: number): Tensor {
  const src = readSource(x);
  const y = Tensor.empty([rows], 'i32');
  argmaxProgram(src).run({ inputs: src.bindings, outputs: [y.binding], uniforms: { rows, cols, ...src.values }, workgroups: runtime().groups1d(rows) });
  return y;
}
