// Convolutions as implicit GEMMs on a tiled, shared-memory loop, for the `gpu` kernel profile (the `software`
// profile keeps conv.ts's register-tiled gather kernels, which suit llvmpipe, where workgroup memory costs as much
// as storage). One shader, three index maps, out[m, n] = sum_k A[m, k] B[k, n]:
//   conv    conv2d forward (and convTranspose2d's input gradient, a conv of g with the same weight):
//           M = Cout, N = batch*Ho*Wo, K = Cin*kh*kw; A is the weight, B = im2col(x) gathered while staging.
//   convT   convTranspose2d forward (and conv2d's input gradient): the same GEMM with B[(ci, ky, kx), (b, oy, ox)]
//           = x[b, ci, (oy + pT - ky) / s, ...] where that division is exact; taps that miss read zero. Simpler than
//           conv.ts's stride^2 phase split, at the cost of staging zeros for stride > 1.
//   filter  dW = G . im2col(X)^T: M = Cout, N = Cin*kh*kw (+1: a column of ones gives the bias gradient),
//           K = batch*Ho*Wo, split over workgroups (z) into partials summed by a second pass.
// As in matmul's staged kernel, each workgroup of wgX x wgY invocations stages depth-deep slices of A and B into
// workgroup memory and each invocation accumulates a rows x cols register block. An invocation's rows and columns
// are strided by the workgroup's extent, so neighbouring invocations read neighbouring shared words and write
// neighbouring outputs. Loads past M, N or K read zero, so the loop needs no bounds checks.
import { wgsl } from 'wgsl-preprocessor/wgsl-preprocessor.js';
import { Tensor, runtime } from '../backend/tensor.js';
import { program } from '../backend/program.js';
import { readSource, sourcePrelude, heavyPrologue, type Source } from './fusion.js';
import { activationWgsl, gradMaskWgsl, type Activation, type GradMask } from './activation.js';
import { tunedTiling, sizeBucket, hostTime, type Tiling } from './autotune.js';
import { sumFilterPartials } from './conv-partials.js';

export type GemmMode = 'conv' | 'convT' | 'filter';

const range = (n: number) => [...Array(n).keys()];
const each = (n: number, f: (i: number) => string) => range(n).map(f).join('\n');

const UNIFORMS = {
  M: 'u32', N: 'u32', K: 'u32', c: 'u32', h: 'u32', w: 'u32', ho: 'u32', wo: 'u32', kh: 'u32', kw: 'u32', sh: 'u32', sw: 'u32',
  padT: 'i32', padL: 'i32', chunk: 'u32',
} as const;

interface Variant {
  mode: GemmMode;
  bias: boolean;
  act: Activation;
  mask: Activation;
  /** The gathered tensor (x, or g for a transposed problem): load_xs. */
  xs: Source;
  /** filter only: the output gradient, A's operand: load_gs. */
  gs: Source | null;
}

/** Candidate tilings the autotuner times (all within WebGPU's default 256 invocations and 16 KiB workgroup memory). */
export const CONV_GEMM_CANDIDATES: Tiling[] = [
  { wgX: 16, wgY: 16, rows: 4, cols: 4, depth: 16 },
  { wgX: 16, wgY: 8, rows: 4, cols: 4, depth: 16 },
  { wgX: 16, wgY: 4, rows: 4, cols: 4, depth: 16 },
  { wgX: 32, wgY: 4, rows: 2, cols: 2, depth: 16 },
  { wgX: 16, wgY: 16, rows: 2, cols: 2, depth: 32 },
  { wgX: 8, wgY: 8, rows: 4, cols: 4, depth: 32 },
];

/** Deterministic default: a 64-wide tile along N and just enough rows for M, so small channel counts waste little. */
export function defaultConvGemmTiling(M: number): Tiling {
  if (M <= 8) return { wgX: 32, wgY: 4, rows: 2, cols: 2, depth: 16 };
  if (M <= 16) return { wgX: 16, wgY: 4, rows: 4, cols: 4, depth: 16 };
  if (M <= 32) return { wgX: 16, wgY: 8, rows: 4, cols: 4, depth: 16 };
  return { wgX: 16, wgY: 16, rows: 4, cols: 4, depth: 16 };
}

const tilingKey = (t: Tiling) => `${t.wgX}x${t.wgY}:${t.rows}x${t.cols}:${t.depth}`;
const variantKey = (v: Variant) => `${v.mode}:${v.bias}:${v.act}:${v.mask}${v.xs.key}${v.gs?.key ?? ''}`;

/**
 * loadA(m, k): element (m, k) of A, read at `at` (an expression in mc, kc: m and k clamped into A, so the read
 * stays in bounds), zero outside A and from kEnd on.
 */
const loadA = (at: string) => `fn loadA(m: u32, k: u32, kEnd: u32) -> f32 {
  let khkw = u.kh * u.kw;
  let howo = u.ho * u.wo;
  let mc = min(m, u.M - 1u);
  let kc = min(k, u.K - 1u);
  return select(0.0, ${at}, m < u.M && k < kEnd);
}`;

/** loadB(k, n): element (k, n) of B, from `body`, which has the window size khkw and the output grid's size howo. */
const loadB = (body: string) => `fn loadB(k: u32, n: u32, kEnd: u32) -> f32 {
  let khkw = u.kh * u.kw;
  let howo = u.ho * u.wo;
${body}
}`;

/** The input position (iy, ix) that tap t of output position p's window reads (forward conv and filter gradient). */
const windowTap = `  let iy = i32((p / u.wo) * u.sh + t / u.kw) - u.padT;
  let ix = i32((p % u.wo) * u.sw + t % u.kw) - u.padL;`;

/** A[m, k] and B[k, n] of each mode (zero outside [0, M) x [kBegin, kEnd) and [kBegin, kEnd) x [0, N)). */
function indexMaps(mode: GemmMode): string {
  // The gathered input element x[b, ci, iy, ix] or zero; iy, ix are i32 and may fall outside the image.
  const gather = `fn gatherX(ok: bool, b: u32, ci: u32, iy: i32, ix: i32) -> f32 {
  let inside = ok && u32(iy) < u.h && u32(ix) < u.w;
  let at = ((b * u.c + ci) * u.h + u32(select(0, iy, inside))) * u.w + u32(select(0, ix, inside));
  return select(0.0, load_xs(at), inside);
}`;
  if (mode === 'conv')
    return `${gather}
${loadA('ws[mc * u.K + kc]')}
${loadB(`  let p = n % howo;
  let t = k % khkw;
${windowTap}
  return gatherX(k < kEnd && n < u.N, n / howo, k / khkw, iy, ix);`)}`;
  if (mode === 'convT')
    return `${gather}
${loadA('ws[((kc / khkw) * u.M + mc) * khkw + kc % khkw]')}
${loadB(`  let p = n % howo;
  let t = k % khkw;
  let ty = i32(p / u.wo) + u.padT - i32(t / u.kw);
  let tx = i32(p % u.wo) + u.padL - i32(t % u.kw);
  let hit = ty >= 0 && tx >= 0 && ty % i32(u.sh) == 0 && tx % i32(u.sw) == 0;
  return gatherX(k < kEnd && n < u.N && hit, n / howo, k / khkw, ty / i32(u.sh), tx / i32(u.sw));`)}`;
  // filter: A = g as [M, batch*Ho*Wo], B = im2col(x)^T, whose column c*kh*kw (the bias column) is all ones.
  return `${gather}
${loadA('load_gs(((kc / howo) * u.M + mc) * howo + kc % howo)')}
${loadB(`  let p = k % howo;
  let t = n % khkw;
${windowTap}
  let ones = n == u.c * khkw;
  return select(gatherX(k < kEnd && n < u.N, k / howo, min(n / khkw, u.c - 1u), iy, ix), select(0.0, 1.0, k < kEnd), ones);`)}`;
}

const gemmProgram = (v: Variant, t: Tiling) => program(`convGemm:${variantKey(v)}:${tilingKey(t)}`, () => gemmDecl(v, t));

function gemmDecl(v: Variant, t: Tiling) {
  const { wgX, wgY, rows: R, cols: C, depth: TK } = t;
  const TM = wgY * R;
  const TN = wgX * C;
  const threads = wgX * wgY;
  // A is staged k-fastest (the weight and g are contiguous along k), B n-fastest (output positions are contiguous
  // in x); both land in [k][m or n] order.
  const stage = (name: 'A' | 'B', extent: number) =>
    each(Math.ceil((TK * extent) / threads), (i) => {
      const s = `${i * threads}u + lid`;
      const body =
        name === 'A'
          ? `let kk = s % ${TK}u; let mm = s / ${TK}u; shA[kk * ${TM}u + mm] = loadA(tileRow + mm, k0 + kk, kEnd);`
          : `let kk = s / ${TN}u; let nn = s % ${TN}u; shB[s] = loadB(k0 + kk, tileCol + nn, kEnd);`;
      return `      { let s = ${s}; if (s < ${TK * extent}u) { ${body} } }`;
    });
  const inner = [
    ...range(R).map((r) => `        let a${r} = shA[kk * ${TM}u + ly + ${r * wgY}u];`),
    ...range(C).map((c) => `        let b${c} = shB[kk * ${TN}u + lx + ${c * wgX}u];`),
    ...range(R).flatMap((r) => range(C).map((c) => `        acc${r}_${c} = fma(a${r}, b${c}, acc${r}_${c});`)),
  ].join('\n');
  const conv = v.mode !== 'filter';
  const store = (r: number, c: number) => {
    const guard = `  if (m${r} < u.M && n${c} < u.N) {`;
    if (!conv) return `${guard} partials[outOff + m${r} * u.N + n${c}] = acc${r}_${c}; }`;
    const at = `(n${c} / howo * u.M + m${r}) * howo + n${c} % howo`;
    const y = `activate(acc${r}_${c} + ${v.bias ? `bs[m${r}]` : '0.0'})`;
    return `${guard} let at = ${at}; ys[at] = ${v.mask === 'none' ? y : `gradMask(${y}, ms[at])`}; }`;
  };
  const inputs = conv ? [...v.xs.inputs, 'ws', ...(v.bias ? ['bs'] : []), ...(v.mask !== 'none' ? ['ms'] : [])] : [...v.xs.inputs, ...v.gs!.inputs];
  return {
    name: `convGemm.${v.mode}`,
    inputs,
    outputs: [conv ? 'ys' : 'partials'],
    uniforms: { ...UNIFORMS, ...v.xs.uniforms, ...(v.gs?.uniforms ?? {}) },
    workgroupSize: [wgX, wgY] as const,
    prelude: () => `${sourcePrelude(...[v.xs, ...(v.gs ? [v.gs] : [])])}
${activationWgsl(v.act)}
${gradMaskWgsl(v.mask)}
var<workgroup> shA: array<f32, ${TK * TM}>;
var<workgroup> shB: array<f32, ${TK * TN}>;
${indexMaps(v.mode)}`,
    body: () => wgsl`  let lx = lid3.x;
  let ly = lid3.y;
  let tileRow = wid.y * ${TM}u;
  let tileCol = wid.x * ${TN}u;
  let kBegin = wid.z * u.chunk;
  let kEnd = min(u.K, kBegin + u.chunk);
  let howo = u.ho * u.wo;
${each(R, (r) => range(C).map((c) => `  var acc${r}_${c} = 0.0;`).join(' '))}
  for (var k0 = kBegin; k0 < kEnd; k0 += ${TK}u) {
${stage('A', TM)}
${stage('B', TN)}
    workgroupBarrier();
    for (var kk = 0u; kk < ${TK}u; kk++) {
${inner}
    }
    workgroupBarrier();
  }
${each(R, (r) => `  let m${r} = tileRow + ly + ${r * wgY}u;`)}
${each(C, (c) => `  let n${c} = tileCol + lx + ${c * wgX}u;`)}
  let outOff = wid.z * u.M * u.N;
${range(R).flatMap((r) => range(C).map((c) => store(r, c))).join('\n')}`,
  };
}

export interface GemmGeometry {
  /** The gathered tensor's channels and size (x for conv/filter, the transposed problem's input for convT). */
  c: number;
  h: number;
  w: number;
  /** The output positions' grid (conv/convT: the result's; filter: g's). */
  ho: number;
  wo: number;
  kh: number;
  kw: number;
  stride: readonly [number, number];
  padding: readonly [number, number];
}

const sizeClass = (M: number, N: number, K: number) => `M${sizeBucket(M)}:N${sizeBucket(N)}:K${sizeBucket(K)}`;

function pickTiling(family: string, M: number, N: number, K: number, timeWith: (t: Tiling) => void, tiling?: Tiling): Tiling {
  if (tiling) return tiling;
  const rt = runtime();
  return tunedTiling(rt.description, family, sizeClass(M, N, K), defaultConvGemmTiling(M), () => ({
    candidates: CONV_GEMM_CANDIDATES,
    time: (t) => hostTime(() => rt.sync(), () => timeWith(t)),
  }));
}

/**
 * y [batch, M, ho, wo] = act(bias + conv(x, weight)) (mode 'conv', weight [M, c, kh, kw]) or the transposed
 * convolution (mode 'convT', weight [c, M, kh, kw]), optionally times `mask`'s derivative.
 */
export function convGemm(
  mode: 'conv' | 'convT',
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  outSize: readonly [number, number],
  stride: readonly [number, number],
  padding: readonly [number, number],
  act: Activation,
  mask: GradMask | null = null,
  tiling?: Tiling,
): Tensor {
  const [batch, c, h, w] = x.shape;
  const M = mode === 'conv' ? weight.shape[0] : weight.shape[1];
  const [kh, kw] = [weight.shape[2], weight.shape[3]];
  const [ho, wo] = outSize;
  const N = batch * ho * wo;
  const K = c * kh * kw;
  const run = (t: Tiling, xin: Tensor, y: Tensor) => {
    const xs = readSource(xin, 'xs', 2 + (bias ? 1 : 0) + (mask ? 1 : 0), heavyPrologue());
    const v: Variant = { mode, bias: bias !== null, act, mask: mask?.activation ?? 'none', xs, gs: null };
    gemmProgram(v, t).run({
      inputs: [...xs.bindings, weight.binding, ...(bias ? [bias.binding] : []), ...(mask ? [mask.y.binding] : [])],
      outputs: [y.binding],
      uniforms: { M, N, K, c, h, w, ho, wo, kh, kw, sh: stride[0], sw: stride[1], padT: padding[0], padL: padding[1], chunk: K, ...xs.values } as never,
      workgroups: [Math.ceil(N / (t.wgX * t.cols)), Math.ceil(M / (t.wgY * t.rows)), 1],
    });
  };
  const timeWith = (t: Tiling) => {
    const xin = Tensor.empty([batch, c, h, w]);
    const y = Tensor.empty([batch, M, ho, wo]);
    run(t, xin, y);
    xin.dispose();
    y.dispose();
  };
  const y = Tensor.empty([batch, M, ho, wo]);
  run(pickTiling(`convGemm.${mode}`, M, N, K, timeWith, tiling), x, y);
  return y;
}

/** Splits of the batch*Ho*Wo reduction: enough workgroups to fill a GPU, each at least 4 slices deep. */
const TARGET_WORKGROUPS = 512;

/**
 * dW [M, c, kh, kw] = G . im2col(X)^T for x [batch, c, h, w] and g [batch, M, ho, wo], and with `withBias` the
 * bias gradient (g summed over batch, ho, wo) as one more column of the same GEMM.
 */
export function convGemmFilter(x: Tensor, g: Tensor, kernel: readonly [number, number], stride: readonly [number, number], padding: readonly [number, number], withBias = false, tiling?: Tiling): { dw: Tensor; db: Tensor | null } {
  const [batch, c, h, w] = x.shape;
  const [, M, ho, wo] = g.shape;
  const [kh, kw] = kernel;
  const kSize = c * kh * kw;
  const N = kSize + (withBias ? 1 : 0);
  const K = batch * ho * wo;
  const run = (t: Tiling, xin: Tensor, gin: Tensor, dw: Tensor, db: Tensor | null) => {
    const tiles = Math.ceil(M / (t.wgY * t.rows)) * Math.ceil(N / (t.wgX * t.cols));
    const wantSplits = Math.min(Math.ceil(TARGET_WORKGROUPS / tiles), Math.ceil(K / (4 * t.depth)));
    const chunk = Math.ceil(K / Math.max(1, wantSplits) / t.depth) * t.depth;
    const splits = Math.ceil(K / chunk);
    const partials = splits === 1 && !db ? dw : Tensor.empty([splits, M, N]);
    const gs = readSource(gin, 'gs', 2, heavyPrologue());
    const xs = readSource(xin, 'xs', 1 + gs.inputs.length, heavyPrologue());
    const v: Variant = { mode: 'filter', bias: false, act: 'none', mask: 'none', xs, gs };
    gemmProgram(v, t).run({
      inputs: [...xs.bindings, ...gs.bindings],
      outputs: [partials.binding],
      uniforms: { M, N, K, c, h, w, ho, wo, kh, kw, sh: stride[0], sw: stride[1], padT: padding[0], padL: padding[1], chunk, ...xs.values, ...gs.values } as never,
      workgroups: [Math.ceil(N / (t.wgX * t.cols)), Math.ceil(M / (t.wgY * t.rows)), splits],
    });
    if (partials !== dw) {
      sumFilterPartials(partials, dw, db);
      partials.dispose();
    }
  };
  const timeWith = (t: Tiling) => {
    const ts = [Tensor.empty([batch, c, h, w]), Tensor.empty([batch, M, ho, wo]), Tensor.empty([M, c, kh, kw])];
    const db = withBias ? Tensor.empty([M]) : null;
    run(t, ts[0], ts[1], ts[2], db);
    for (const u of [...ts, ...(db ? [db] : [])]) u.dispose();
  };
  const dw = Tensor.empty([M, c, kh, kw]);
  const db = withBias ? Tensor.empty([M]) : null;
  run(pickTiling('convGemm.filter', M, N, K, timeWith, tiling), x, g, dw, db);
  return { dw, db };
}
