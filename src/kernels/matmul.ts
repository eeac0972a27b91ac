// Batched matrix multiply with compile-time transpose variants and a fused bias + activation epilogue.
//
// Two kernels, both register-blocked (each invocation owns a rows x cols block of the output, held as
// vec4s of 4 adjacent columns):
//  - 'staged': any shape. Each workgroup copies depth-deep slices of both operands into workgroup memory,
//    laid out so the inner loop reads vec4s whatever the transpose flags and alignment, with B zeroed past
//    K so partial slices add nothing.
//  - 'direct': when every axis the loop walks contiguously is a multiple of 4, both operands are read
//    straight from storage as vec4s, with no staging.
// Why: on Mesa's llvmpipe (the CPU adapter this engine must run well on) a storage or workgroup load whose
// address varies across invocations becomes a branchy loop over the SIMD lanes, and one such loop fetches
// all four components of a vec4. Loads, not FMAs, bound throughput there, so both kernels maximise FMAs per
// vec4 load with large register blocks, and the direct kernel skips staging because workgroup memory is
// reached through the same per-lane loops: a copy into it only pays when it turns scalar loads into vec4
// ones. GPUs get the staged kernel with a conventional small per-invocation block.
import { wgsl } from 'wgsl-preprocessor/wgsl-preprocessor.js';
import { Tensor, runtime, fmt } from '../backend/tensor.js';
import { program, type BindingDecl } from '../backend/program.js';
import { readSource, sourcePrelude, heavyPrologue, type Source } from './fusion.js';

import { tunedTiling, sizeBucket, hostTime } from './autotune.js';
import { ACTIVATIONS, activationWgsl, gradMaskWgsl, type Activation, type GradMask } from './activation.js';

export type { Activation, GradMask };

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  /** Length-N vector added to every output row before the activation. */
  bias?: Tensor | null;
  activation?: Activation;
  /** Sums the per-batch products into one [M, N] result (gradients of a batch-broadcast operand). */
  reduceBatch?: boolean;
  /**
   * Multiplies the output by an activation's derivative at `y` (same shape as the output): the product is the
   * gradient of that activation's output, wanted through it (see GradMask).
   */
  gradMask?: GradMask | null;
  /** Forces a kernel and tile geometry (benchmarks and tests). */
  kernel?: 'direct' | 'staged';
  tiling?: Partial<MatmulTiling>;
}

/** A workgroup of wgX x wgY invocations, each computing rows x cols outputs (multiples of 4). */
export interface MatmulTiling {
  wgX: number;
  wgY: number;
  rows: number;
  cols: number;
  /** K depth of each staged slice (staged kernel only). */
  depth: number;
}

// Tuned on llvmpipe (2 cores, AVX2): one 8-lane SIMD row of invocations, 16 x 16 outputs each. Larger
// blocks (32 x 32) run ~30% faster on big products but take ~7 s per variant to compile.
const CPU_DIRECT: MatmulTiling = { wgX: 8, wgY: 1, rows: 16, cols: 16, depth: 0 };
const CPU_STAGED: MatmulTiling = { wgX: 8, wgY: 8, rows: 16, cols: 16, depth: 16 };
const GPU_STAGED: MatmulTiling = { wgX: 16, wgY: 16, rows: 4, cols: 4, depth: 16 };

const isCpuAdapter = (description: string) => /llvmpipe|lavapipe|softpipe|swiftshader/i.test(description);

// Batch strides are in elements; 0 broadcasts an operand over the batch.
const UNIFORMS = { M: 'u32', N: 'u32', K: 'u32', batch: 'u32', aStride: 'u32', bStride: 'u32', outStride: 'u32' } as const;

interface Variant {
  transA: boolean;
  transB: boolean;
  bias: boolean;
  activation: Activation;
  reduceBatch: boolean;
  /** The derivative applied to the output ('none': no mask binding). */
  mask: Activation;
  /** Also writes op(A) · 1 (output `rowsum`). */
  rowSums: boolean;
  /** The operands: buffers, or deferred values read through their expressions (the prologue). */
  a: Source;
  b: Source;
}

const range = (n: number) => [...Array(n).keys()];
const lines = (n: number, f: (i: number) => string) => range(n).map(f).join('\n');
const COMP = ['x', 'y', 'z', 'w'];

/**
 * a, b (or their expressions' inputs) and bias read, out written. The kernels read the operands through
 * `load_a`/`load_b` (scalars, staged) or `load4_a`/`load4_b` (vec4 at a vec4 index, direct); `elem` is the
 * element type of plain buffers.
 */
function operands(v: Variant, elem: string): { inputs: BindingDecl[]; outputs: BindingDecl[]; prelude: string } {
  const typed = (name: string) => ({ name, type: elem });
  const sources = [v.a, v.b];
  const names = ['a', 'b'] as const;
  const inputs = sources.flatMap((src, i) => (src.fused ? src.inputs : [typed(names[i])]));
  // Staged reads scalars: each source's own `load_*`. Direct reads vec4s: a plain buffer directly, a fused one as
  // four scalars of its expression.
  const load4 = (src: Source, n: string) =>
    src.fused
      ? `fn load4_${n}(p: u32) -> vec4<f32> { let i = 4u * p; return vec4<f32>(${[0, 1, 2, 3].map((k) => `load_${n}(i + ${k}u)`).join(', ')}); }`
      : `fn load4_${n}(p: u32) -> vec4<f32> { return ${n}[p]; }`;
  const prelude = elem === 'f32' ? sourcePrelude(...sources) : `${sourcePrelude(...sources.filter((src) => src.fused))}\n${sources.map((src, i) => load4(src, names[i])).join('\n')}`;
  return {
    inputs: [...inputs, ...(v.bias ? [typed('bias')] : []), ...(v.mask !== 'none' ? [typed('mask')] : [])],
    outputs: [typed('out'), ...(v.rowSums ? [{ name: 'rowsum', type: 'f32' }] : [])],
    prelude,
  };
}

/** Batch loop header: the z workgroup's own batch, or every batch summed into one output. */
function batchLoop(v: Variant, z: string): string {
  return v.reduceBatch ? 'for (var bi = 0u; bi < u.batch; bi++) {' : `for (var bi = ${z}; bi < ${z} + 1u; bi++) {`;
}

const accumulators = (R: number, C4: number) => lines(R, (r) => lines(C4, (c) => `  var acc${r}_${c} = vec4<f32>(0.0);`));

const directProgram = (v: Variant, t: MatmulTiling) => program(`matmul:direct:${variantKey(v)}:${tilingKey(t)}`, () => directDecl(v, t));

function directDecl(v: Variant, t: MatmulTiling) {
  const { rows: R, cols: C } = t;
  const R4 = R / 4;
  const C4 = C / 4;
  // Loads for one step of 4 along K, in vec4 units. aAt(r, kk) is the scalar op(A)[row r, k + kk];
  // bAt(kk, c) the vec4 op(B)[k + kk, columns 4c .. 4c + 3].
  let loads = '';
  let aAt: (r: number, kk: number) => string;
  let bAt: (kk: number, c: number) => string;
  if (v.transA) {
    // A stored [K, M]: a vec4 holds 4 adjacent rows at one k.
    for (let kk = 0; kk < 4; kk++) for (let g = 0; g < R4; g++) loads += `      let a${kk}_${g} = load4_a(aK + ${kk}u * M4 + rowQ${g});\n`;
    aAt = (r, kk) => `a${kk}_${Math.floor(r / 4)}.${COMP[r % 4]}`;
  } else {
    // A stored [M, K]: a vec4 holds 4 consecutive k of one row.
    for (let r = 0; r < R; r++) loads += `      let a${r} = load4_a(aRow${r} + k4);\n`;
    aAt = (r, kk) => `a${r}.${COMP[kk]}`;
  }
  if (v.transB) {
    // B stored [N, K]: a vec4 holds 4 consecutive k of one column.
    for (let j = 0; j < C; j++) loads += `      let b${j} = load4_b(bCol${j} + k4);\n`;
    bAt = (kk, c) => `vec4<f32>(${range(4).map((i) => `b${4 * c + i}.${COMP[kk]}`).join(', ')})`;
  } else {
    // B stored [K, N]: a vec4 holds 4 adjacent columns at one k.
    for (let kk = 0; kk < 4; kk++) for (let c = 0; c < C4; c++) loads += `      let b${kk}_${c} = load4_b(bK + ${kk}u * N4 + colQ${c});\n`;
    bAt = (kk, c) => `b${kk}_${c}`;
  }
  // Row sums of op(A) from the loads already made: 4 k steps of R rows per iteration.
  let sums = '';
  if (v.rowSums) {
    if (v.transA) for (let g = 0; g < R4; g++) sums += `      rs${g} += ${range(4).map((kk) => `a${kk}_${g}`).join(' + ')};\n`;
    else for (let r = 0; r < R; r++) sums += `      rs${r} += dot(a${r}, vec4<f32>(1.0));\n`;
  }
  // Each accumulator takes its four k steps back to back: with far more accumulators than registers, a
  // spilled one is reloaded once per step of 4 instead of once per k (measured 2x faster on llvmpipe).
  let fmas = '';
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C4; c++) {
      for (let kk = 0; kk < 4; kk++) fmas += `      acc${r}_${c} = fma(vec4<f32>(${aAt(r, kk)}), ${bAt(kk, c)}, acc${r}_${c});\n`;
    }
  }
  // Rows and columns past the edge are clamped onto valid ones (their results are never stored), so the
  // loop needs no bounds checks. Grouped (vec4) indices clamp whole groups: M, N are multiples of 4 there.
  const io = operands(v, 'vec4<f32>');
  const prelude = wgsl`
${io.prelude}
${activationWgsl(v.activation, 'vec4<f32>')}
${gradMaskWgsl(v.mask, 'vec4<f32>')}
`;
  const masked = (y: string, at: string) => (v.mask === 'none' ? y : `gradMask(${y}, mask[${at}])`);
  const rowSumDecl = !v.rowSums ? '' : v.transA ? lines(R4, (g) => `  var rs${g} = vec4<f32>(0.0);`) : lines(R, (r) => `  var rs${r} = 0.0;`);
  // The invocations of the first column block own the row sums (each row's sum is the same in every block).
  const rowSumStore = !v.rowSums
    ? ''
    : `  if (gid.x == 0u) {\n${lines(R, (r) => `    if (rowBase + ${r}u < u.M) { rowsum[rowBase + ${r}u] = ${v.transA ? `rs${Math.floor(r / 4)}.${COMP[r % 4]}` : `rs${r}`}; }`)}\n  }`;
  const main = wgsl`  let M4 = u.M / 4u;
  let N4 = u.N / 4u;
  let K4 = u.K / 4u;
  let rowBase = gid.y * ${R}u;
  let colBase = gid.x * ${C}u;
#if ${v.transA}
${lines(R4, (g) => `  let rowQ${g} = min(rowBase / 4u + ${g}u, M4 - 1u);`)}
#else
${lines(R, (r) => `  let row${r} = min(rowBase + ${r}u, u.M - 1u);`)}
#endif
${lines(C4, (c) => `  let colQ${c} = min(colBase / 4u + ${c}u, N4 - 1u);`)}
#if ${v.transB}
${lines(C, (j) => `  let col${j} = min(colBase + ${j}u, u.N - 1u);`)}
#endif
${accumulators(R, C4)}
${rowSumDecl}
  ${batchLoop(v, 'gid.z')}
    let aOff = bi * (u.aStride / 4u);
    let bOff = bi * (u.bStride / 4u);
#if ${!v.transA}
${lines(R, (r) => `    let aRow${r} = aOff + row${r} * K4;`)}
#endif
#if ${v.transB}
${lines(C, (j) => `    let bCol${j} = bOff + col${j} * K4;`)}
#endif
    for (var k4 = 0u; k4 < K4; k4++) {
      let aK = aOff + k4 * 4u * M4;
      let bK = bOff + k4 * 4u * N4;
${loads}${sums}${fmas}    }
  }
  let outOff = gid.z * (u.outStride / 4u);
${lines(C4, (c) => `  let bias${c} = ${v.bias ? `bias[colQ${c}]` : 'vec4<f32>(0.0)'};`)}
${lines(R, (r) =>
  lines(C4, (c) => {
    const at = `outOff + (rowBase + ${r}u) * N4 + colQ${c}`;
    return `  if (rowBase + ${r}u < u.M && colBase + ${4 * c}u < u.N) { out[${at}] = ${masked(`activate(acc${r}_${c} + bias${c})`, at)}; }`;
  }),
)}
${rowSumStore}`;
  return { name: 'matmul.direct', inputs: io.inputs, outputs: io.outputs, uniforms: { ...UNIFORMS, ...v.a.uniforms, ...v.b.uniforms }, workgroupSize: [t.wgX, t.wgY] as const, prelude: () => prelude, body: () => main };
}

const stagedProgram = (v: Variant, t: MatmulTiling) => program(`matmul:staged:${variantKey(v)}:${tilingKey(t)}`, () => stagedDecl(v, t));

function stagedDecl(v: Variant, t: MatmulTiling) {
  const { wgX, wgY, rows: R, cols: C, depth: TK } = t;
  const R4 = R / 4;
  const C4 = C / 4;
  const TM = wgY * R;
  const TN = wgX * C;
  const threads = wgX * wgY;
  // Workgroup memory holds vec4 slots of 4 adjacent rows (A) or columns (B) at one k: [k][m / 4].
  const slotsA = (TK * TM) / 4;
  const slotsB = (TK * TN) / 4;
  if (slotsA % threads || slotsB % threads) throw new Error(`matmul: tiling ${tilingKey(t)} does not split the staging evenly`);
  const stage = (name: 'A' | 'B', slots: number, width: number) =>
    lines(slots / threads, (i) => {
      const off = name === 'A' ? 'aOff' : 'bOff';
      const edge = name === 'A' ? 'tileRow' : 'tileCol';
      const elems = range(4).map((j) => `load${name}(${off}, m + ${j}u, k)`).join(', ');
      return `      { let s = ${i * threads}u + lid; let k = k0 + s / ${width / 4}u; let m = ${edge} + 4u * (s % ${width / 4}u); sh${name}[s] = vec4<f32>(${elems}); }`;
    });
  let inner = '';
  for (let g = 0; g < R4; g++) inner += `        let a${g} = shA[kk * ${TM / 4}u + ly * ${R4}u + ${g}u];\n`;
  for (let c = 0; c < C4; c++) inner += `        let b${c} = shB[kk * ${TN / 4}u + lx * ${C4}u + ${c}u];\n`;
  for (let r = 0; r < R; r++) {
    for (let c = 0; c < C4; c++) inner += `        acc${r}_${c} = fma(vec4<f32>(a${Math.floor(r / 4)}.${COMP[r % 4]}), b${c}, acc${r}_${c});\n`;
  }
  // Row sums of op(A) from the staged slots this invocation reads anyway (A is zeroed past K for them).
  if (v.rowSums) for (let g = 0; g < R4; g++) inner += `        rs${g} += a${g};\n`;
  // op(A)[m, k] and op(B)[k, n] at clamped (in-bounds) indices. Only B is zeroed past K, which is enough to
  // keep padding out of the sums; rows and columns past M and N only reach outputs that are never stored.
  const aIndex = v.transA ? 'min(k, u.K - 1u) * u.M + min(m, u.M - 1u)' : 'min(m, u.M - 1u) * u.K + min(k, u.K - 1u)';
  const bIndex = v.transB ? 'min(n, u.N - 1u) * u.K + min(k, u.K - 1u)' : 'min(k, u.K - 1u) * u.N + min(n, u.N - 1u)';
  const io = operands(v, 'f32');
  const prelude = wgsl`
${io.prelude}
${activationWgsl(v.activation, 'vec4<f32>')}
var<workgroup> shA: array<vec4<f32>, ${slotsA}>;
var<workgroup> shB: array<vec4<f32>, ${slotsB}>;
fn loadA(off: u32, m: u32, k: u32) -> f32 { return ${v.rowSums ? `select(0.0, load_a(off + ${aIndex}), k < u.K)` : `load_a(off + ${aIndex})`}; }
${gradMaskWgsl(v.mask, 'f32')}
fn loadB(off: u32, n: u32, k: u32) -> f32 { return select(0.0, load_b(off + ${bIndex}), k < u.K); }
`;
  const main = wgsl`  let lx = lid3.x;
  let ly = lid3.y;
  let tileRow = wid.y * ${TM}u;
  let tileCol = wid.x * ${TN}u;
${accumulators(R, C4)}
${v.rowSums ? lines(R4, (g) => `  var rs${g} = vec4<f32>(0.0);`) : ''}
  ${batchLoop(v, 'wid.z')}
    let aOff = bi * u.aStride;
    let bOff = bi * u.bStride;
    for (var k0 = 0u; k0 < u.K; k0 += ${TK}u) {
${stage('A', slotsA, TM)}
${stage('B', slotsB, TN)}
      workgroupBarrier();
      for (var kk = 0u; kk < ${TK}u; kk++) {
${inner}      }
      workgroupBarrier();
    }
  }
  let rowBase = tileRow + ly * ${R}u;
  let colBase = tileCol + lx * ${C}u;
  let outOff = wid.z * u.outStride;
${lines(C4, (c) =>
  v.bias
    ? `  let bias${c} = vec4<f32>(${range(4).map((i) => `bias[min(colBase + ${4 * c + i}u, u.N - 1u)]`).join(', ')});`
    : `  let bias${c} = vec4<f32>(0.0);`,
)}
${lines(R, (r) =>
  lines(C4, (c) =>
    [
      `  if (rowBase + ${r}u < u.M) {`,
      `    let y = activate(acc${r}_${c} + bias${c});`,
      ...range(4).map((i) => {
        const at = `outOff + (rowBase + ${r}u) * u.N + colBase + ${4 * c + i}u`;
        return `    if (colBase + ${4 * c + i}u < u.N) { out[${at}] = ${v.mask === 'none' ? `y.${COMP[i]}` : `gradMask(y.${COMP[i]}, mask[${at}])`}; }`;
      }),
      '  }',
    ].join('\n'),
  ),
)}
${v.rowSums ? `  if (wid.x == 0u && lx == 0u) {\n${lines(R, (r) => `    if (rowBase + ${r}u < u.M) { rowsum[rowBase + ${r}u] = rs${Math.floor(r / 4)}.${COMP[r % 4]}; }`)}\n  }` : ''}`;
  return { name: 'matmul.staged', inputs: io.inputs, outputs: io.outputs, uniforms: { ...UNIFORMS, ...v.a.uniforms, ...v.b.uniforms }, workgroupSize: [t.wgX, t.wgY] as const, prelude: () => prelude, body: () => main };
}

const variantKey = (v: Variant) =>
  `${v.transA ? 'T' : 'N'}${v.transB ? 'T' : 'N'}:${v.bias ? 'bias' : 'nobias'}:${v.activation}:${v.reduceBatch ? 'sum' : 'batch'}${v.mask === 'none' ? '' : `:mask=${v.mask}`}${v.rowSums ? ':rowsum' : ''}${v.a.key}${v.b.key}`;
const tilingKey = (t: MatmulTiling) => `${t.wgX}x${t.wgY}:${t.rows}x${t.cols}:${t.depth}`;

/** Rows, columns and batch of one operand as stored. */
function operandDims(op: string, name: string, t: Tensor) {
  if (t.rank !== 2 && t.rank !== 3) throw new Error(`${op}: ${name} must be rank 2 or 3, got ${name} ${fmt(t.shape)}`);
  return { batch: t.rank === 3 ? t.shape[0] : 1, rows: t.shape[t.rank - 2], cols: t.shape[t.rank - 1] };
}

export interface MatmulShape {
  M: number;
  N: number;
  K: number;
  batch: number;
  batchA: number;
  batchB: number;
  /** [M, N], or [batch, M, N] when either operand is rank 3. */
  shape: number[];
}

/** Problem sizes of op(a) · op(b), validating ranks, inner dimensions and batch broadcasting. */
export function matmulShape(op: string, a: Tensor, b: Tensor, transA = false, transB = false): MatmulShape {
  const da = operandDims(op, 'a', a);
  const db = operandDims(op, 'b', b);
  const M = transA ? da.cols : da.rows;
  const K = transA ? da.rows : da.cols;
  const Kb = transB ? db.cols : db.rows;
  const N = transB ? db.rows : db.cols;
  const flags = [transA ? 'transA' : '', transB ? 'transB' : ''].filter(Boolean).join(', ');
  if (K !== Kb) {
    throw new Error(`${op}: inner dimensions differ: a ${fmt(a.shape)} has K = ${K} but b ${fmt(b.shape)} has K = ${Kb}${flags ? ` (${flags})` : ''}`);
  }
  if (da.batch !== db.batch && da.batch !== 1 && db.batch !== 1) {
    throw new Error(`${op}: batch sizes of a ${fmt(a.shape)} and b ${fmt(b.shape)} do not broadcast`);
  }
  const batch = Math.max(da.batch, db.batch);
  return { M, N, K, batch, batchA: da.batch, batchB: db.batch, shape: a.rank === 3 || b.rank === 3 ? [batch, M, N] : [M, N] };
}

/**
 * op(a) · op(b) + bias, then the activation; op transposes the last two axes when its flag is set.
 * a: [M, K] (or [K, M] with transA), b: [K, N] (or [N, K] with transB), either optionally with a leading
 * batch axis; a batch of 1 or a rank-2 operand broadcasts over the other's batch.
 */
export function matmulKernel(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  return matmulRun(a, b, opts, false).out;
}

/**
 * op(a) · op(b) and the row sums of op(a) (op(a) · 1) in one pass: with a the gradient of a dense layer's output,
 * transposed, that is the weight gradient and the bias gradient together. The sums come from the operand loads
 * the product makes anyway. Rank-2 operands, or a batch summed by `reduceBatch` (whose sums run over it too).
 */
export function matmulRowSums(a: Tensor, b: Tensor, opts: MatmulOptions = {}): { out: Tensor; rowSums: Tensor } {
  const r = matmulRun(a, b, opts, true);
  return { out: r.out, rowSums: r.rowSums! };
}

function matmulRun(a: Tensor, b: Tensor, opts: MatmulOptions, rowSums: boolean): { out: Tensor; rowSums: Tensor | null } {
  const op = 'matmul';
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  const activation = opts.activation ?? 'none';
  const reduceBatch = opts.reduceBatch ?? false;
  const bias = opts.bias ?? null;
  if (a.dtype !== 'f32' || b.dtype !== 'f32') throw new Error(`${op}: expected f32 tensors, got a ${a.dtype} ${fmt(a.shape)} and b ${b.dtype} ${fmt(b.shape)}`);
  const { M, N, K, batch, batchA, batchB, shape } = matmulShape(op, a, b, transA, transB);
  if (bias && (bias.dtype !== 'f32' || bias.rank !== 1 || bias.size !== N)) {
    throw new Error(`${op}: bias must be an f32 vector of length N = ${N}, got ${bias.dtype} ${fmt(bias.shape)}`);
  }
  if (!ACTIVATIONS.includes(activation)) throw new Error(`${op}: unknown activation '${activation}'`);
  const gradMask = opts.gradMask ?? null;
  if (gradMask) {
    const want = reduceBatch ? [M, N] : shape;
    if (gradMask.activation !== 'relu' && gradMask.activation !== 'sigmoid') throw new Error(`${op}: gradMask activation must be relu or sigmoid, got '${String(gradMask.activation)}'`);
    if (gradMask.y.dtype !== 'f32' || gradMask.y.size !== want.reduce((p, d) => p * d, 1)) {
      throw new Error(`${op}: gradMask y must be f32 with the output's ${fmt(want)} elements, got ${gradMask.y.dtype} ${fmt(gradMask.y.shape)}`);
    }
  }
  if (rowSums && batch > 1 && !reduceBatch) throw new Error(`${op}: row sums need rank-2 operands or reduceBatch, got batch ${batch}`);
  const rt = runtime();
  const aligned = K % 4 === 0 && N % 4 === 0 && (!transA || M % 4 === 0);
  const cpu = isCpuAdapter(rt.description);
  const kernel = opts.kernel ?? (aligned && cpu ? 'direct' : 'staged');
  if (kernel === 'direct' && !aligned) throw new Error(`${op}: the direct kernel needs K, N (and M with transA) to be multiples of 4, got M=${M} N=${N} K=${K}`);
  const tiling = { ...(kernel === 'direct' ? CPU_DIRECT : cpu ? CPU_STAGED : gpuStagedTiling(M, N, K, transA, transB)), ...opts.tiling };
  const { wgX, wgY, rows, cols, depth } = tiling;
  const positive = (n: number) => Number.isInteger(n) && n > 0;
  if (![wgX, wgY, rows / 4, cols / 4].every(positive) || (kernel === 'staged' && !positive(depth))) {
    throw new Error(`${op}: invalid tiling ${tilingKey(tiling)}: rows and cols must be positive multiples of 4`);
  }
  // Deferred operands are read through their expressions, saving their own dispatch; the output, the bias and the
  // other operand's bindings count against the storage-buffer limit.
  const extra = (bias ? 1 : 0) + (gradMask ? 1 : 0) + (rowSums ? 1 : 0);
  const as = readSource(a, 'a', 2 + extra, heavyPrologue());
  const bs = readSource(b, 'b', 1 + as.inputs.length + extra, heavyPrologue());
  const variant: Variant = { transA, transB, bias: bias !== null, activation, reduceBatch, mask: gradMask?.activation ?? 'none', rowSums, a: as, b: bs };
  const prog = kernel === 'direct' ? directProgram(variant, tiling) : stagedProgram(variant, tiling);

  const out = Tensor.empty(reduceBatch ? [M, N] : shape);
  const sums = rowSums ? Tensor.empty([M]) : null;
  prog.run({
    inputs: [...as.bindings, ...bs.bindings, ...(bias ? [bias.binding] : []), ...(gradMask ? [gradMask.y.binding] : [])],
    outputs: [out.binding, ...(sums ? [sums.binding] : [])],
    uniforms: { M, N, K, batch, aStride: batchA === 1 ? 0 : M * K, bStride: batchB === 1 ? 0 : K * N, outStride: reduceBatch ? 0 : M * N, ...as.values, ...bs.values } as never,
    workgroups: [Math.ceil(N / (tiling.wgX * tiling.cols)), Math.ceil(M / (tiling.wgY * tiling.rows)), reduceBatch ? 1 : batch],
  });
  return { out, rowSums: sums };
}

/** Staged tilings the autotuner times on GPUs: each splits its staging evenly and fits 16 KiB of workgroup memory. */
export const MATMUL_CANDIDATES: MatmulTiling[] = [
  GPU_STAGED,
  { wgX: 16, wgY: 8, rows: 4, cols: 4, depth: 16 },
  { wgX: 8, wgY: 8, rows: 4, cols: 4, depth: 16 },
  { wgX: 8, wgY: 8, rows: 8, cols: 8, depth: 16 },
  { wgX: 16, wgY: 16, rows: 4, cols: 4, depth: 32 },
];

/** GPU_STAGED, or the autotuner's cached choice for this adapter and size class (src/kernels/autotune.ts). */
function gpuStagedTiling(M: number, N: number, K: number, transA: boolean, transB: boolean): MatmulTiling {
  const rt = runtime();
  const family = `matmul.staged.${transA ? 'T' : 'N'}${transB ? 'T' : 'N'}`;
  return tunedTiling(rt.description, family, `M${sizeBucket(M)}:N${sizeBucket(N)}:K${sizeBucket(K)}`, GPU_STAGED, () => ({
    candidates: MATMUL_CANDIDATES,
    time: (t) =>
      hostTime(
        () => rt.sync(),
        () => {
          const a = Tensor.empty(transA ? [K, M] : [M, K]);
          const b = Tensor.empty(transB ? [N, K] : [K, N]);
          matmulKernel(a, b, { transA, transB, kernel: 'staged', tiling: t }).dispose();
          a.dispose();
          b.dispose();
        },
      ),
  }));
}
