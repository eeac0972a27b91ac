// 2-D convolution and transposed convolution (NCHW, PyTorch weight layouts) as implicit GEMMs.
//
// On llvmpipe every storage or workgroup load costs a per-lane scalar loop (about 20x an FMA), and shared memory
// is no cheaper than a storage buffer, so these kernels skip shared-memory staging and instead give each
// invocation a register tile (channels x output positions, or channels x weight taps) to maximise FMAs per
// loaded value. The runtime's kernel profile sizes that tile: large on a software renderer; at most 32
// accumulators on a GPU, where a 384-float tile spills registers and leaves too few invocations to fill the
// device (measured on an H200: conv2d 16->16 at 7->4 took 10.5 ms in 67 invocations). The gather kernels also slide each tile row's input window from tap to tap, loading one new value
// per row instead of one per output. Loops over channels and taps are uniform, indices advance incrementally
// (vector integer division is scalarised), and out-of-range reads are masked with `select` instead of branches.
//
// Three shaders serve the six entry points:
//   convGather           y = conv(x, w): conv2dForward, and convTranspose2dBackwardInput (conv of g with the same weight)
//   convTransposeGather  y = conv^T(x, w), split into stride^2 output phases, each a dense correlation with a
//                        sub-kernel, so no tap is wasted on (o + pad - k) % stride != 0:
//                        convTranspose2dForward, and conv2dBackwardInput
//   convFilterGrad       dW = G . im2col(X) with the N*Ho*Wo reduction split over invocations, then `sumPartials`:
//                        conv2dBackwardFilter, and convTranspose2dBackwardFilter (the same sum with x and g swapped)
import { wgsl } from 'wgsl-preprocessor/wgsl-preprocessor.js';
import { Tensor, runtime, fmt, type Shape } from '../backend/tensor.js';
import { program } from '../backend/program.js';
import { readSource, sourcePrelude, heavyPrologue, type Source } from './fusion.js';

import { activationWgsl, gradMaskWgsl, type Activation, type GradMask } from './activation.js';
import { convGemm, convGemmFilter } from './conv-gemm.js';
import { sumFilterPartials } from './conv-partials.js';

export type { Activation, GradMask };

export interface Conv2dParams {
  stride: [number, number];
  /** Zero rows/columns before the input (top, left); the far side's padding is implied by `outputSize`. */
  padding: [number, number];
  /** [Ho, Wo], computed by the caller (symmetric or TF-style 'same' padding). */
  outputSize: [number, number];
  activation?: Activation;
}

export interface ConvTranspose2dParams {
  stride: [number, number];
  /** Symmetric padding as in PyTorch's ConvTranspose2d. */
  padding: [number, number];
  outputPadding: [number, number];
  activation?: Activation;
}

/** Output size of a transposed convolution: (H - 1) * s - 2p + k + outputPadding. */
export function convTranspose2dOutputSize(inSize: [number, number], kernel: [number, number], p: ConvTranspose2dParams): [number, number] {
  return [0, 1].map((d) => (inSize[d] - 1) * p.stride[d] - 2 * p.padding[d] + kernel[d] + p.outputPadding[d]) as [number, number];
}

/**
 * Invocations per workgroup. llvmpipe runs each workgroup on one core, 8 invocations per SIMD step; small problems
 * get 8-wide groups so the cores stay balanced. A GPU schedules 32-wide warps: always 64. Two sizes only, to bound
 * the number of pipelines.
 */
function pickWorkgroup(threads: number): number {
  return runtime().kernelProfile === 'gpu' || threads >= 64 * 16 ? 64 : 8;
}
const range = (n: number) => [...Array(n).keys()];
const each = (n: number, f: (i: number) => string) => range(n).map(f).join('\n');
const grid = (m: number, n: number, f: (i: number, j: number) => string) => range(m).map((i) => each(n, (j) => f(i, j))).join('\n');

/**
 * Register tile for a gather kernel: tm output channels x tr output rows x tc adjacent output columns. Rows run
 * over the flattened (n, row) axis so small images still fill a tile.
 */
interface GatherTile {
  tm: number;
  tr: number;
  tc: number;
}

/** Column counts a tile may have (7 fits the 28/14/7 grids of the models); few, to bound the number of pipelines. */
const TILE_COLUMNS = [2, 4, 7, 8];

function pickGatherTile(channels: number, width: number): GatherTile {
  const gpu = runtime().kernelProfile === 'gpu';
  const tm = channels <= 1 ? 1 : channels <= 2 ? 2 : channels <= 4 || gpu ? 4 : channels <= 8 ? 8 : 16;
  const positions = gpu ? 8 : tm >= 16 ? 24 : tm >= 8 ? 32 : 48;
  // Least padded width, mildly favouring wide tiles (longer sliding windows).
  const cost = (tc: number) => Math.ceil(width / tc) * tc * (1 + 1 / tc);
  const tc = TILE_COLUMNS.reduce((best, c) => (cost(c) <= cost(best) ? c : best));
  const tr = Math.max(1, Math.round(positions / tc));
  return { tm, tr, tc };
}

/** Steps the flattened row index (n, row) of an [N, rows] grid by one. */
function stepRow(n: string, row: string, rows: string): string {
  return `  ${row} += 1u;
  if (${row} == ${rows}) { ${row} = 0u; ${n} += 1u; }`;
}

/** Masked load of xs at flat index `idx` (i32) when `ok`; out-of-range lanes read element 0 and yield 0. */
const maskedLoad = (idx: string, ok: string) => `select(0.0, load_xs(u32(select(0, ${idx}, ${ok}))), ${ok})`;

const tileKey = (t: GatherTile) => `${t.tm}x${t.tr}x${t.tc}`;

const GEOMETRY = { n: 'u32', cin: 'u32', h: 'u32', w: 'u32', cout: 'u32', ho: 'u32', wo: 'u32', kh: 'u32', kw: 'u32', sh: 'u32', sw: 'u32' } as const;
const GATHER_UNIFORMS = { ...GEOMETRY, padT: 'i32', padL: 'i32', tilesM: 'u32', tilesCols: 'u32', threads: 'u32' } as const;
const TRANSPOSE_UNIFORMS = { ...GEOMETRY, padT: 'u32', padL: 'u32', tilesM: 'u32' } as const;
const FILTER_UNIFORMS = {
  n: 'u32', c: 'u32', h: 'u32', w: 'u32', m: 'u32', ho: 'u32', wo: 'u32', kh: 'u32', kw: 'u32', sh: 'u32', sw: 'u32',
  padT: 'i32', padL: 'i32', tilesM: 'u32', tiles: 'u32', threads: 'u32', chunk: 'u32',
} as const;

/**
 * A gather kernel's storage: input xs (a buffer, or a fused expression read as the prologue), weight ws, optional
 * bias bs, optional ms (the activation output whose derivative masks the result: a GradMask); output ys.
 */
const gatherIo = (hasBias: boolean, mask: Activation, src: Source) => ({
  inputs: [...src.inputs, 'ws', ...(hasBias ? ['bs'] : []), ...(mask !== 'none' ? ['ms'] : [])],
  outputs: ['ys'],
});

/**
 * Writes a gather tile's accumulators acc{channel}_{row * tc + col} to ys with bias and activation; `colInRange`
 * and `colOffset` give column c's bounds check and its offset from yBase{row}.
 */
function storeTile(tile: GatherTile, hasBias: boolean, mask: Activation, colInRange: (c: number) => string, colOffset: (c: number) => string): string {
  const { tm, tr, tc } = tile;
  return each(tm, (i) => `  if (co0 + ${i}u < u.cout) {
    let co = co0 + ${i}u;
    let bias = ${hasBias ? 'bs[co]' : '0.0'};
${grid(tr, tc, (r, c) => {
  const at = `yBase${r} + co * howo + ${colOffset(c)}`;
  const y = `activate(acc${i}_${r * tc + c} + bias)`;
  return `    if (rowValid${r} && ${colInRange(c)}) { ys[${at}] = ${mask === 'none' ? y : `gradMask(${y}, ms[${at}])`}; }`;
})}
  }`);
}

// ---------------------------------------------------------------- convGather

// Output column c of a tile reads input column ix0 + c*sw + kx. Taps kx = rho, rho + sw, ... (one residue rho of
// kx mod sw) slide the tile's input window by exactly one column, so after the first tap each row loads one value
// per tap instead of tc.
const convGatherProgram = (tile: GatherTile, wg: number, hasBias: boolean, act: Activation, mask: Activation, src: Source) =>
  program(`convGather:${tileKey(tile)}:${wg}:${hasBias}:${act}${mask === 'none' ? '' : `:mask=${mask}`}${src.key}`, () => convGatherDecl(tile, wg, hasBias, act, mask, src));

function convGatherDecl(tile: GatherTile, wg: number, hasBias: boolean, act: Activation, mask: Activation, src: Source) {
  const { tm, tr, tc } = tile;
  const forRows = (f: (r: number) => string) => each(tr, f);
  const forCells = (f: (r: number, c: number) => string) => grid(tr, tc, f);
  return {
    name: 'convGather',
    ...gatherIo(hasBias, mask, src),
    uniforms: { ...GATHER_UNIFORMS, ...src.uniforms },
    workgroupSize: wg,
    prelude: () => `${sourcePrelude(src)}\n${activationWgsl(act)}\n${gradMaskWgsl(mask)}`,
    body: () => wgsl`  let t = groupIndex(wid, nwg) * ${wg}u + lid;
  if (t >= u.threads) { return; }
  let hw = u.h * u.w;
  let howo = u.ho * u.wo;
  let khkw = u.kh * u.kw;
  let co0 = (t % u.tilesM) * ${tm}u;
  let ox0 = ((t / u.tilesM) % u.tilesCols) * ${tc}u;
  let row0 = (t / (u.tilesM * u.tilesCols)) * ${tr}u;
  let rows = u.n * u.ho;
  let ix0 = i32(ox0 * u.sw) - u.padL;
  var n = row0 / u.ho;
  var oy = row0 % u.ho;
${forRows((r) => `  let xBase${r} = i32(n * u.cin * hw);
  let iy0_${r} = i32(oy * u.sh) - u.padT;
  let yBase${r} = n * u.cout * howo + oy * u.wo + ox0;
  let rowValid${r} = row0 + ${r}u < rows;
${r + 1 < tr ? stepRow('n', 'oy', 'u.ho') : ''}`)}
${each(tm, (i) => `  let wRow${i} = min(co0 + ${i}u, u.cout - 1u) * u.cin * khkw;`)}
${grid(tm, tr * tc, (i, j) => `  var acc${i}_${j} = 0.0;`)}
  for (var ci = 0u; ci < u.cin; ci++) {
    let cOff = i32(ci * hw);
    for (var ky = 0u; ky < u.kh; ky++) {
      let wOff = (ci * u.kh + ky) * u.kw;
${forRows((r) => `      let iy${r} = iy0_${r} + i32(ky);
      let rowOk${r} = u32(iy${r}) < u.h;
      let ptr${r} = xBase${r} + cOff + iy${r} * i32(u.w) + ix0;`)}
      for (var rho = 0u; rho < min(u.sw, u.kw); rho++) {
${each(tc, (c) => `        let colOk${c} = u32(ix0 + i32(${c}u * u.sw + rho)) < u.w;`)}
${forCells((r, c) => `        var b${r}_${c} = ${maskedLoad(`ptr${r} + i32(${c}u * u.sw + rho)`, `rowOk${r} && colOk${c}`)};`)}
        for (var kx = rho; kx < u.kw; kx += u.sw) {
${each(tm, (i) => `          let a${i} = ws[wRow${i} + wOff + kx];`)}
${grid(tm, tr * tc, (i, j) => `          acc${i}_${j} = fma(a${i}, b${Math.floor(j / tc)}_${j % tc}, acc${i}_${j});`)}
          if (kx + u.sw < u.kw) {
            let next = i32(${tc - 1}u * u.sw + kx + u.sw);
            let nextOk = u32(ix0 + next) < u.w;
${forCells((r, c) => (c + 1 < tc ? `            b${r}_${c} = b${r}_${c + 1};` : `            b${r}_${c} = ${maskedLoad(`ptr${r} + next`, `rowOk${r} && nextOk`)};`))}
          }
        }
      }
    }
  }
${storeTile(tile, hasBias, mask, (c) => `ox0 + ${c}u < u.wo`, (c) => `${c}u`)}`,
  };
}

function checkMask(op: string, mask: GradMask | null, out: Tensor): void {
  if (!mask) return;
  if (mask.activation !== 'relu' && mask.activation !== 'sigmoid') throw new Error(`${op}: gradMask activation must be relu or sigmoid, got '${String(mask.activation)}'`);
  if (mask.y.dtype !== 'f32' || mask.y.size !== out.size) throw new Error(`${op}: gradMask y ${fmt(mask.y.shape)} does not match the output ${fmt(out.shape)}`);
}

/** y[n, co, oy, ox] = act(b[co] + sum_{ci,ky,kx} w[co, ci, ky, kx] x[n, ci, oy*s - pT + ky, ox*s - pL + kx]). */
function convGather(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  outSize: readonly [number, number],
  stride: readonly [number, number],
  padding: readonly [number, number],
  act: Activation,
  mask: GradMask | null = null,
): Tensor {
  if (runtime().kernelProfile === 'gpu') return convGemm('conv', x, weight, bias, outSize, stride, padding, act, mask);
  const [n, cin, h, w] = x.shape;
  const [cout, , kh, kw] = weight.shape;
  const [ho, wo] = outSize;
  const y = Tensor.empty([n, cout, ho, wo]);
  const tile = pickGatherTile(cout, wo);
  const tilesM = Math.ceil(cout / tile.tm);
  const tilesCols = Math.ceil(wo / tile.tc);
  const threads = tilesM * tilesCols * Math.ceil((n * ho) / tile.tr);
  const wg = pickWorkgroup(threads);
  checkMask('conv2d', mask, y);
  const src = readSource(x, 'xs', (bias ? 3 : 2) + (mask ? 1 : 0), heavyPrologue());
  convGatherProgram(tile, wg, bias !== null, act, mask?.activation ?? 'none', src).run({
    inputs: [...src.bindings, weight.binding, ...(bias ? [bias.binding] : []), ...(mask ? [mask.y.binding] : [])],
    outputs: [y.binding],
    uniforms: { n, cin, h, w, cout, ho, wo, kh, kw, sh: stride[0], sw: stride[1], padT: padding[0], padL: padding[1], tilesM, tilesCols, threads, ...src.values },
    workgroups: runtime().groups1d(Math.ceil(threads / wg)),
  });
  return y;
}

// ---------------------------------------------------------------- convTransposeGather

// Outputs with oy % sh == py (workgroup z = py * sw + px) only see taps ky = ky0 + sh * ty, ky0 = (py + padT) % sh,
// reading input row iy = (oy + padT - ky) / sh = jy + cy - ty (exact integer division), where oy = py + sh * jy; each
// phase is a dense correlation over its (jy, jx) grid. Along a tile row, tap tx + 1 reads the input window of tap tx
// shifted right by one column, so each row loads one new value per tap.
const convTransposeGatherProgram = (tile: GatherTile, wg: number, hasBias: boolean, act: Activation, mask: Activation, src: Source) =>
  program(`convTransposeGather:${tileKey(tile)}:${wg}:${hasBias}:${act}${mask === 'none' ? '' : `:mask=${mask}`}${src.key}`, () => convTransposeGatherDecl(tile, wg, hasBias, act, mask, src));

function convTransposeGatherDecl(tile: GatherTile, wg: number, hasBias: boolean, act: Activation, mask: Activation, src: Source) {
  const { tm, tr, tc } = tile;
  const forRows = (f: (r: number) => string) => each(tr, f);
  const forCells = (f: (r: number, c: number) => string) => grid(tr, tc, f);
  return {
    name: 'convTransposeGather',
    ...gatherIo(hasBias, mask, src),
    uniforms: { ...TRANSPOSE_UNIFORMS, ...src.uniforms },
    workgroupSize: wg,
    prelude: () => `${sourcePrelude(src)}\n${activationWgsl(act)}\n${gradMaskWgsl(mask)}`,
    body: () => wgsl`  let py = wid.z / u.sw;
  let px = wid.z % u.sw;
  let ky0 = (py + u.padT) % u.sh;
  let kx0 = (px + u.padL) % u.sw;
  let cy = i32((py + u.padT - ky0) / u.sh);
  let cx = i32((px + u.padL - kx0) / u.sw);
  let tapsY = select(0u, (u.kh - ky0 + u.sh - 1u) / u.sh, ky0 < u.kh);
  let tapsX = select(0u, (u.kw - kx0 + u.sw - 1u) / u.sw, kx0 < u.kw);
  let hp = select(0u, (u.ho - py + u.sh - 1u) / u.sh, py < u.ho);
  let wp = select(0u, (u.wo - px + u.sw - 1u) / u.sw, px < u.wo);
  let tilesCols = (wp + ${tc - 1}u) / ${tc}u;
  let rows = u.n * hp;
  let t = groupIndex(wid, nwg) * ${wg}u + lid;
  if (t >= u.tilesM * tilesCols * ((rows + ${tr - 1}u) / ${tr}u)) { return; }
  let hw = u.h * u.w;
  let howo = u.ho * u.wo;
  let khkw = u.kh * u.kw;
  let co0 = (t % u.tilesM) * ${tm}u;
  let jx0 = ((t / u.tilesM) % tilesCols) * ${tc}u;
  let row0 = (t / (u.tilesM * tilesCols)) * ${tr}u;
  let ix0 = i32(jx0) + cx;
  var n = row0 / hp;
  var jy = row0 % hp;
${forRows((r) => `  let xBase${r} = i32(n * u.cin * hw);
  let iy0_${r} = i32(jy) + cy;
  let yBase${r} = n * u.cout * howo + (py + jy * u.sh) * u.wo + px + jx0 * u.sw;
  let rowValid${r} = row0 + ${r}u < rows;
${r + 1 < tr ? stepRow('n', 'jy', 'hp') : ''}`)}
${each(tm, (i) => `  let wRow${i} = min(co0 + ${i}u, u.cout - 1u) * khkw;`)}
${grid(tm, tr * tc, (i, j) => `  var acc${i}_${j} = 0.0;`)}
${each(tc, (c) => `  let colOk${c} = u32(ix0 + ${c}) < u.w;`)}
  for (var ci = 0u; ci < u.cin; ci++) {
    let cOff = i32(ci * hw);
    let wOff = ci * u.cout * khkw + kx0;
    for (var ty = 0u; ty < tapsY; ty++) {
      let wRowOff = wOff + (ky0 + ty * u.sh) * u.kw;
${forRows((r) => `      let iy${r} = iy0_${r} - i32(ty);
      let rowOk${r} = u32(iy${r}) < u.h;
      let ptr${r} = xBase${r} + cOff + iy${r} * i32(u.w) + ix0;`)}
${forCells((r, c) => `      var b${r}_${c} = ${maskedLoad(`ptr${r} + ${c}`, `rowOk${r} && colOk${c}`)};`)}
      for (var tx = 0u; tx < tapsX; tx++) {
${each(tm, (i) => `        let a${i} = ws[wRow${i} + wRowOff + tx * u.sw];`)}
${grid(tm, tr * tc, (i, j) => `        acc${i}_${j} = fma(a${i}, b${Math.floor(j / tc)}_${j % tc}, acc${i}_${j});`)}
        if (tx + 1u < tapsX) {
          let next = -1 - i32(tx);
          let nextOk = u32(ix0 + next) < u.w;
${forCells((r, c) => {
  const cc = tc - 1 - c; // shift right: update from the last column down
  return cc > 0 ? `          b${r}_${cc} = b${r}_${cc - 1};` : `          b${r}_0 = ${maskedLoad(`ptr${r} + next`, `rowOk${r} && nextOk`)};`;
})}
        }
      }
    }
  }
${storeTile(tile, hasBias, mask, (c) => `jx0 + ${c}u < wp`, (c) => `${c}u * u.sw`)}`,
  };
}

/**
 * y[n, co, oy, ox] = act(b[co] + sum over (ci, ky, kx, iy, ix) with oy = iy*s - pT + ky, ox = ix*s - pL + kx of
 * x[n, ci, iy, ix] w[ci, co, ky, kx]), for an explicit output size (which fixes the far side's padding).
 */
function convTransposeGather(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  outSize: readonly [number, number],
  stride: readonly [number, number],
  padding: readonly [number, number],
  act: Activation,
  mask: GradMask | null = null,
): Tensor {
  if (runtime().kernelProfile === 'gpu') return convGemm('convT', x, weight, bias, outSize, stride, padding, act, mask);
  const [n, cin, h, w] = x.shape;
  const [, cout, kh, kw] = weight.shape;
  const [ho, wo] = outSize;
  const [sh, sw] = stride;
  const y = Tensor.empty([n, cout, ho, wo]);
  // Phase (0, 0) has the most rows and columns; other phases mask off the surplus invocations.
  const phaseRows = n * Math.ceil(ho / sh);
  const phaseCols = Math.ceil(wo / sw);
  const tile = pickGatherTile(cout, phaseCols);
  const tilesM = Math.ceil(cout / tile.tm);
  const threads = tilesM * Math.ceil(phaseCols / tile.tc) * Math.ceil(phaseRows / tile.tr);
  const wg = pickWorkgroup(threads * sh * sw);
  const [gx, gy] = runtime().groups1d(Math.ceil(threads / wg));
  checkMask('convTranspose2d', mask, y);
  const src = readSource(x, 'xs', (bias ? 3 : 2) + (mask ? 1 : 0), heavyPrologue());
  convTransposeGatherProgram(tile, wg, bias !== null, act, mask?.activation ?? 'none', src).run({
    inputs: [...src.bindings, weight.binding, ...(bias ? [bias.binding] : []), ...(mask ? [mask.y.binding] : [])],
    outputs: [y.binding],
    uniforms: { n, cin, h, w, cout, ho, wo, kh, kw, sh, sw, padT: padding[0], padL: padding[1], tilesM, ...src.values },
    workgroups: [gx, gy, sh * sw],
  });
  return y;
}

// ---------------------------------------------------------------- convFilterGrad

/** Steps the index (outer, a, b) of a row-major [*, nA, nB] grid by one, carrying with selects. */
function advance(outer: string, a: string, b: string, nA: string, nB: string): string {
  return `  ${b} += 1u;
  { let wrapB = ${b} == ${nB}; ${b} = select(${b}, 0u, wrapB); ${a} = select(${a}, ${a} + 1u, wrapB);
    let wrapA = ${a} == ${nA}; ${a} = select(${a}, 0u, wrapA); ${outer} = select(${outer}, ${outer} + 1u, wrapA); }`;
}

/** Register tile for dW [M, C*kh*kw]: rows are output channels, columns (c, ky, kx) taps; 24 columns unless that wastes >10%. */
function pickFilterTile(m: number, kSize: number): { tm: number; tn: number } {
  if (runtime().kernelProfile === 'gpu') return { tm: m <= 1 ? 1 : m <= 2 ? 2 : 4, tn: 8 };
  const tm = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : m <= 8 ? 8 : 16;
  const padded = (tn: number) => Math.ceil(kSize / tn) * tn;
  const tn = padded(24) <= 1.1 * kSize ? 24 : padded(32) < padded(16) ? 32 : 16;
  return { tm, tn: tm >= 16 ? tn : 32 };
}

const convFilterGradProgram = (tm: number, tn: number, wg: number, bias: boolean, direct: boolean, xs: Source, gs: Source) =>
  program(`convFilterGrad:${tm}x${tn}:${wg}:${bias}${direct ? ':direct' : ''}${xs.key}${gs.key}`, () => convFilterGradDecl(tm, tn, wg, bias, direct, xs, gs));

// partials[split, m, (c, ky, kx)] = sum over this split's slice of (n, oy, ox) of
//   g[n, m, oy, ox] * x[n, c, oy*sh - padT + ky, ox*sw - padL + kx].
// With `bias`, one more column reads 1 instead of x: partials[split, m, kSize] sums g itself, the bias gradient.
// `direct` (a single split) writes that column to db and the rest to dw, so no partials pass follows.
function convFilterGradDecl(tm: number, tn: number, wg: number, bias: boolean, direct: boolean, xs: Source, gs: Source) {
  const store = (row: string, col: string, v: string) =>
    !direct ? `partials[out + ${row} * kTotal + ${col}] = ${v};` : bias ? `if (${col} == kSize) { db[${row}] = ${v}; } else { dw[${row} * kSize + ${col}] = ${v}; }` : `dw[${row} * kSize + ${col}] = ${v};`;
  return {
    name: 'convFilterGrad',
    inputs: [...xs.inputs, ...gs.inputs],
    outputs: !direct ? ['partials'] : bias ? ['dw', 'db'] : ['dw'],
    uniforms: { ...FILTER_UNIFORMS, ...xs.uniforms, ...gs.uniforms },
    workgroupSize: wg,
    prelude: () => sourcePrelude(xs, gs),
    body: () => wgsl`  let t = groupIndex(wid, nwg) * ${wg}u + lid;
  if (t >= u.threads) { return; }
  let hw = u.h * u.w;
  let howo = u.ho * u.wo;
  let khkw = u.kh * u.kw;
  let kSize = u.c * khkw;
  let kTotal = kSize + ${bias ? 1 : 0}u;
  let tile = t % u.tiles;
  let split = t / u.tiles;
  let m0 = (tile % u.tilesM) * ${tm}u;
  let k0 = (tile / u.tilesM) * ${tn}u;
  // Column taps (c, ky, kx) are consecutive: split the first, then step with carries.
  var ci = k0 / khkw;
  var ky = (k0 % khkw) / u.kw;
  var kx = k0 % u.kw;
${each(tn, (j) => `  let colOff${j} = i32(min(ci, u.c - 1u) * hw + ky * u.w + kx);
  let ky${j} = i32(ky);
  let kx${j} = i32(kx);
${j + 1 < tn ? advance('ci', 'ky', 'kx', 'u.kh', 'u.kw') : ''}`)}
${each(tm, (i) => `  let gRow${i} = min(m0 + ${i}u, u.m - 1u) * howo;`)}
${grid(tm, tn, (i, j) => `  var acc${i}_${j} = 0.0;`)}
  let total = u.n * howo;
  let r0 = split * u.chunk;
  let r1 = min(total, r0 + u.chunk);
  let n = r0 / howo;
  var oy = (r0 % howo) / u.wo;
  var ox = r0 % u.wo;
  var xBase = i32(n * u.c * hw);
  var gBase = n * u.m * howo;
  for (var r = r0; r < r1; r++) {
    let iyS = i32(oy * u.sh) - u.padT;
    let ixS = i32(ox * u.sw) - u.padL;
    let rowBase = xBase + iyS * i32(u.w) + ixS;
    let q = gBase + oy * u.wo + ox;
${each(tn, (j) => `    let ok${j} = u32(iyS + ky${j}) < u.h && u32(ixS + kx${j}) < u.w;
    let b${j} = ${bias ? `select(` : ''}select(0.0, load_xs(u32(select(0, rowBase + colOff${j}, ok${j}))), ok${j})${bias ? `, 1.0, k0 + ${j}u == kSize)` : ''};`)}
${each(tm, (i) => `    let a${i} = load_gs(gRow${i} + q);`)}
${grid(tm, tn, (i, j) => `    acc${i}_${j} = fma(a${i}, b${j}, acc${i}_${j});`)}
    ox += 1u;
    if (ox == u.wo) {
      ox = 0u;
      oy += 1u;
      if (oy == u.ho) {
        oy = 0u;
        xBase += i32(u.c * hw);
        gBase += u.m * howo;
      }
    }
  }
  let out = split * u.m * kTotal;
${grid(tm, tn, (i, j) => `  if (m0 + ${i}u < u.m && k0 + ${j}u < kTotal) { ${store(`(m0 + ${i}u)`, `(k0 + ${j}u)`, `acc${i}_${j}`)} }`)}`,
  };
}

/** Rows of the N*Ho*Wo reduction an invocation sums at least, and the invocations the split aims for, per profile. */
const MIN_CHUNK = 32;
const TARGET_THREADS = { software: 1024, gpu: 65536 };

/**
 * dW[m, c, ky, kx] = sum_{n, oy, ox} g[n, m, oy, ox] x[n, c, oy*s - pT + ky, ox*s - pL + kx], where x is
 * [N, C, H, W] and g is [N, M, Ho, Wo]: implicit GEMM G[M, N*Ho*Wo] . im2col(X), parallel over dW tiles and
 * over slices of the N*Ho*Wo reduction.
 */
function convFilterGrad(
  x: Tensor,
  g: Tensor,
  kernel: readonly [number, number],
  stride: readonly [number, number],
  padding: readonly [number, number],
  withBias = false,
): { dw: Tensor; db: Tensor | null } {
  if (runtime().kernelProfile === 'gpu') return convGemmFilter(x, g, kernel, stride, padding, withBias);
  const [n, c, h, w] = x.shape;
  const [, m, ho, wo] = g.shape;
  const [kh, kw] = kernel;
  const kSize = c * kh * kw;
  const kTotal = kSize + (withBias ? 1 : 0);
  const { tm, tn } = pickFilterTile(m, kTotal);
  const tilesM = Math.ceil(m / tm);
  const tiles = tilesM * Math.ceil(kTotal / tn);
  const total = n * ho * wo;
  const wantSplits = Math.max(1, Math.ceil(TARGET_THREADS[runtime().kernelProfile] / tiles));
  const chunk = Math.max(MIN_CHUNK, Math.ceil(total / wantSplits));
  const splits = Math.ceil(total / chunk);
  const threads = tiles * splits;
  const rt = runtime();
  const dw = Tensor.empty([m, c, kh, kw]);
  const db = withBias ? Tensor.empty([m]) : null;
  const direct = splits === 1;
  const partials = direct ? null : Tensor.empty([splits, m, kTotal]);
  const wg = pickWorkgroup(threads);
  // The output and the other source's bindings count against the storage-buffer limit.
  const gs = readSource(g, 'gs', 2, heavyPrologue());
  const xs = readSource(x, 'xs', 1 + gs.inputs.length, heavyPrologue());
  convFilterGradProgram(tm, tn, wg, withBias, direct, xs, gs).run({
    inputs: [...xs.bindings, ...gs.bindings],
    outputs: partials ? [partials.binding] : db ? [dw.binding, db.binding] : [dw.binding],
    uniforms: { n, c, h, w, m, ho, wo, kh, kw, sh: stride[0], sw: stride[1], padT: padding[0], padL: padding[1], tilesM, tiles, threads, chunk, ...xs.values, ...gs.values },
    workgroups: rt.groups1d(Math.ceil(threads / wg)),
  });
  if (partials) {
    sumFilterPartials(partials, dw, db);
    partials.dispose();
  }
  return { dw, db };
}

// ---------------------------------------------------------------- entry points

function expectShape(op: string, what: string, t: Tensor, want: Shape): void {
  if (t.shape.length !== want.length || t.shape.some((d, k) => d !== want[k])) {
    throw new Error(`${op}: ${what} has shape ${fmt(t.shape)}, expected ${fmt(want)}`);
  }
}

function expectRank4(op: string, what: string, t: Tensor): void {
  if (t.rank !== 4) throw new Error(`${op}: ${what} must be rank 4, got ${fmt(t.shape)}`);
}

/** x [N, Cin, H, W], weight [Cout, Cin, kh, kw], bias [Cout] | null -> [N, Cout, Ho, Wo], with fused bias and activation. */
export function conv2dForward(x: Tensor, weight: Tensor, bias: Tensor | null, p: Conv2dParams): Tensor {
  expectRank4('conv2dForward', 'x', x);
  expectRank4('conv2dForward', 'weight', weight);
  if (weight.shape[1] !== x.shape[1]) throw new Error(`conv2dForward: weight ${fmt(weight.shape)} does not match x ${fmt(x.shape)} channels`);
  if (bias) expectShape('conv2dForward', 'bias', bias, [weight.shape[0]]);
  return convGather(x, weight, bias, p.outputSize, p.stride, p.padding, p.activation ?? 'none');
}

/** dL/dx of conv2d: g [N, Cout, Ho, Wo], weight [Cout, Cin, kh, kw] -> [N, Cin, H, W] (= xShape), times `mask`'s derivative. */
export function conv2dBackwardInput(g: Tensor, weight: Tensor, xShape: Shape, p: Conv2dParams, mask: GradMask | null = null): Tensor {
  const [n, , h, w] = xShape;
  expectShape('conv2dBackwardInput', 'g', g, [n, weight.shape[0], ...p.outputSize]);
  return convTransposeGather(g, weight, null, [h, w], p.stride, p.padding, 'none', mask);
}

/** dL/dweight of conv2d: x [N, Cin, H, W], g [N, Cout, Ho, Wo] -> wShape [Cout, Cin, kh, kw]. */
export function conv2dBackwardFilter(x: Tensor, g: Tensor, wShape: Shape, p: Conv2dParams): Tensor {
  expectShape('conv2dBackwardFilter', 'g', g, [x.shape[0], wShape[0], ...p.outputSize]);
  return convFilterGrad(x, g, [wShape[2], wShape[3]], p.stride, p.padding).dw;
}

/**
 * dL/dweight and dL/dbias of conv2d in one pass: the bias gradient (g summed over N, Ho, Wo) is one more column
 * of the filter gradient's reduction, which walks exactly those positions.
 */
export function conv2dBackwardFilterBias(x: Tensor, g: Tensor, wShape: Shape, p: Conv2dParams): { dw: Tensor; db: Tensor } {
  expectShape('conv2dBackwardFilterBias', 'g', g, [x.shape[0], wShape[0], ...p.outputSize]);
  const { dw, db } = convFilterGrad(x, g, [wShape[2], wShape[3]], p.stride, p.padding, true);
  return { dw, db: db! };
}

/** x [N, Cin, H, W], weight [Cin, Cout, kh, kw] (ConvTranspose2d layout), bias [Cout] | null -> [N, Cout, Ho, Wo]. */
export function convTranspose2dForward(x: Tensor, weight: Tensor, bias: Tensor | null, p: ConvTranspose2dParams): Tensor {
  expectRank4('convTranspose2dForward', 'x', x);
  expectRank4('convTranspose2dForward', 'weight', weight);
  if (weight.shape[0] !== x.shape[1]) throw new Error(`convTranspose2dForward: weight ${fmt(weight.shape)} does not match x ${fmt(x.shape)} channels`);
  if (bias) expectShape('convTranspose2dForward', 'bias', bias, [weight.shape[1]]);
  const out = convTranspose2dOutputSize([x.shape[2], x.shape[3]], [weight.shape[2], weight.shape[3]], p);
  return convTransposeGather(x, weight, bias, out, p.stride, p.padding, p.activation ?? 'none');
}

/** dL/dx of convTranspose2d: a plain convolution of g with the same weight, times `mask`'s derivative. g [N, Cout, Ho, Wo] -> xShape [N, Cin, H, W]. */
export function convTranspose2dBackwardInput(g: Tensor, weight: Tensor, xShape: Shape, p: ConvTranspose2dParams, mask: GradMask | null = null): Tensor {
  const [n, cin, h, w] = xShape;
  expectShape('convTranspose2dBackwardInput', 'g', g, [n, weight.shape[1], ...convTranspose2dOutputSize([h, w], [weight.shape[2], weight.shape[3]], p)]);
  if (weight.shape[0] !== cin) throw new Error(`convTranspose2dBackwardInput: weight ${fmt(weight.shape)} does not match x ${fmt(xShape)} channels`);
  return convGather(g, weight, null, [h, w], p.stride, p.padding, 'none', mask);
}

/** dL/dweight of convTranspose2d: x [N, Cin, H, W], g [N, Cout, Ho, Wo] -> wShape [Cin, Cout, kh, kw]. */
export function convTranspose2dBackwardFilter(x: Tensor, g: Tensor, wShape: Shape, p: ConvTranspose2dParams): Tensor {
  expectShape('convTranspose2dBackwardFilter', 'g', g, [x.shape[0], wShape[1], ...convTranspose2dOutputSize([x.shape[2], x.shape[3]], [wShape[2], wShape[3]], p)]);
  // The same sum as conv2d's filter gradient with the roles of x and g swapped: g is the (larger) "input".
  return convFilterGrad(g, x, [wShape[2], wShape[3]], p.stride, p.padding).dw;
}
