// Square Attack (Andriushchenko et al. 2020): a score-based black-box attack that only reads the classifier's
// logits. Each iteration proposes, for every image still correctly classified, a change of the perturbation in one
// random square window, and keeps it when the margin loss (true logit minus the largest other logit) drops; an
// image is fooled once its margin is < 0. The side of the window shrinks on the paper's schedule.
//
// The perturbations live on the host (they are tiny next to a classifier's forward pass, and the L_inf re-draw
// and the L2 window norms need per-window values); every iteration evaluates all active images in one batched
// classifier call (`rowQuery`: compiled per bucket of active images for seeded classifiers). Unlike the reference
// code, window positions and signs are drawn per image, not per batch.
import { Tensor, tensor } from '../engine.js';
import { assertSeed, Rng } from '../autograd/rng.js';
import { type Classifier, hostBatch, rowQuery } from './classifier.js';
import type { Norm } from './gradient.js';

export interface SquareOptions {
  norm: Norm;
  eps: number;
  /** Most classifier queries per image, the initial one included. */
  queryBudget: number;
  /** Initial fraction of the image a window covers (default 0.05 for L_inf, 0.1 for L2, the paper's MNIST values). */
  pInit?: number;
  seed: number;
  /** Called after every iteration with the number of images still being attacked. */
  onIteration?: (iteration: number, active: number) => void;
}

export interface SquareResult {
  adversarial: Tensor;
  /** Queries each image used, the initial one included. */
  queries: Int32Array;
  /** 1 where the final margin is < 0 (misclassified), as seen by the attack. */
  success: Uint8Array;
}

/**
 * The paper's schedule: the window fraction p halves at fixed fractions of the budget (the reference code's
 * breakpoints on a 10,000-iteration scale), so it shrinks the same way whatever the budget.
 */
export function squareFraction(pInit: number, iteration: number, budget: number): number {
  const t = Math.floor((iteration / budget) * 10000);
  const breakpoints = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000];
  return pInit / 2 ** breakpoints.filter((b) => t > b).length;
}

/** Mean and median of the queries of the successful images (NaN when none succeeded), as the paper reports them. */
export function queryStatistics(queries: ArrayLike<number>, success: ArrayLike<number>): { mean: number; median: number; successRate: number } {
  const q = Array.from(queries).filter((_, i) => success[i]).sort((a, b) => a - b);
  const n = q.length;
  const mean = n ? q.reduce((s, v) => s + v, 0) / n : NaN;
  const median = n ? (n % 2 ? q[(n - 1) / 2] : (q[n / 2 - 1] + q[n / 2]) / 2) : NaN;
  return { mean, median, successRate: queries.length ? n / queries.length : NaN };
}

/**
 * The reference code's L2 window pattern: two halves of opposite sign, each a sum of concentric rectangles
 * weighted 1/(k+1)^2 (a peaked, roughly Gaussian bump); unit L2 norm, row-major [s, s].
 */
function l2Pattern(s: number, transposed: boolean): Float64Array {
  const out = new Float64Array(s * s);
  const bump = (rows: number, row0: number, sign: number) => {
    if (rows === 0) return;
    const cr = Math.floor(rows / 2);
    const cc = Math.floor(s / 2);
    const part = new Float64Array(rows * s);
    for (let k = 0; k <= Math.max(cr, cc); k++) {
      for (let r = Math.max(cr - k, 0); r < Math.min(cr - k + 2 * k + 1, rows); r++) {
        for (let c = Math.max(cc - k, 0); c < Math.min(cc - k + 2 * k + 1, s); c++) part[r * s + c] += 1 / (k + 1) ** 2;
      }
    }
    const norm = Math.hypot(...part);
    part.forEach((v, i) => (out[row0 * s + i] = (sign * v) / norm));
  };
  bump(Math.floor(s / 2), 0, 1);
  bump(s - Math.floor(s / 2), Math.floor(s / 2), -1);
  const norm = Math.hypot(...out);
  const unit = out.map((v) => v / norm);
  if (!transposed) return unit;
  return unit.map((_, i) => unit[(i % s) * s + Math.floor(i / s)]);
}

const clip01 = (v: number) => Math.min(1, Math.max(0, v));

export async function squareAttack(clf: Classifier, x: Tensor, labels: Tensor, opts: SquareOptions): Promise<SquareResult> {
  const { norm, eps, queryBudget: budget } = opts;
  if (norm !== 'linf' && norm !== 'l2') throw new Error(`square: norm must be 'linf' or 'l2', got '${norm}'`);
  if (!Number.isFinite(eps) || eps < 0) throw new Error(`square: eps must be a finite number >= 0, got ${eps}`);
  if (!Number.isInteger(budget) || budget < 1) throw new Error(`square: queryBudget must be a positive integer, got ${budget}`);
  const pInit = opts.pInit ?? (norm === 'linf' ? 0.05 : 0.1);
  if (!(pInit > 0 && pInit <= 1)) throw new Error(`square: pInit must lie in (0, 1], got ${pInit}`);
  assertSeed('square', opts.seed);
  const { n, h, w, d, xHost, labelsHost } = await hostBatch('square', clf, x, labels);
  const numClasses = clf.numClasses;
  const rng = new Rng(opts.seed);
  // Under expectation over noise, each query averages the classifier's draws (and still counts as one query).
  const { draws } = clf;

  const query = rowQuery('square', clf, n, xHost, h, w);
  /** Margins of the images in `rows` of `images` ([rows.length * d] values), one batched query. */
  const margins = async (images: Float32Array, rows: number[], iteration: number): Promise<Float64Array> => {
    // Each image keeps the noise it has in the whole batch, however few images are still being queried.
    const z = await query(images, rows, iteration * draws);
    return Float64Array.from(rows, (row, j) => {
      const y = labelsHost[row];
      let other = -Infinity;
      for (let k = 0; k < numClasses; k++) if (k !== y) other = Math.max(other, z[j * numClasses + k]);
      return z[j * numClasses + y] - other;
    });
  };

  // Initialisation (one query): L_inf, vertical stripes of +-eps; L2, a grid of windows carrying the L2
  // pattern with random signs, scaled to norm eps.
  const best = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const delta = new Float64Array(d);
    if (norm === 'linf') {
      for (let c = 0; c < w; c++) {
        const v = rng.nextU32() & 1 ? eps : -eps;
        for (let r = 0; r < h; r++) delta[r * w + c] = v;
      }
    } else {
      const s = Math.max(1, Math.floor(Math.min(h, w) / 5));
      const tilesDown = Math.floor(h / s);
      const tilesAcross = Math.floor(w / s);
      const top = Math.floor((h - tilesDown * s) / 2);
      const left = Math.floor((w - tilesAcross * s) / 2);
      const pattern = l2Pattern(s, false);
      for (let a = 0; a < tilesDown; a++) {
        for (let b = 0; b < tilesAcross; b++) {
          const sign = rng.nextU32() & 1 ? 1 : -1;
          for (let r = 0; r < s; r++) for (let c = 0; c < s; c++) delta[(top + a * s + r) * w + left + b * s + c] += sign * pattern[r * s + c];
        }
      }
      const total = Math.hypot(...delta);
      delta.forEach((v, k) => (delta[k] = (v / total) * eps));
    }
    for (let k = 0; k < d; k++) best[i * d + k] = clip01(xHost[i * d + k] + delta[k]);
  }
  const everyRow = Array.from({ length: n }, (_, i) => i);
  const bestMargin = await margins(best, everyRow, 0);
  const queries = new Int32Array(n).fill(1);
  let active = everyRow.filter((i) => !(bestMargin[i] < 0));

  const patterns = new Map<string, Float64Array>();
  const patternFor = (s: number, transposed: boolean) => {
    const key = `${s}${transposed ? 't' : ''}`;
    if (!patterns.has(key)) patterns.set(key, l2Pattern(s, transposed));
    return patterns.get(key)!;
  };

  /** Writes into `out` image i with the L_inf window at (r0, c0) set to +-eps. */
  const proposeLinf = (i: number, s: number, out: Float32Array) => {
    const x0 = i * d;
    out.set(best.subarray(x0, x0 + d));
    const r0 = rng.int(h - s + 1);
    const c0 = rng.int(w - s + 1);
    let v = rng.nextU32() & 1 ? eps : -eps;
    const changes = (value: number) => {
      for (let r = r0; r < r0 + s; r++) {
        for (let c = c0; c < c0 + s; c++) if (Math.abs(clip01(xHost[x0 + r * w + c] + value) - best[x0 + r * w + c]) >= 1e-7) return true;
      }
      return false;
    };
    // The reference re-draws the sign until the window changes; with one channel that is the other sign.
    if (!changes(v)) v = -v;
    for (let r = r0; r < r0 + s; r++) for (let c = c0; c < c0 + s; c++) out[r * w + c] = clip01(xHost[x0 + r * w + c] + v);
  };

  /**
   * The reference's L2 step: window 2's mass is freed, window 1 becomes its old direction plus a signed pattern,
   * rescaled to the freed mass plus the unused budget, and the whole perturbation is rescaled to norm eps and
   * clipped to [0, 1] (clipping only shrinks it, so it stays in the ball).
   */
  const proposeL2 = (i: number, s: number, out: Float32Array) => {
    const x0 = i * d;
    const delta = Float64Array.from({ length: d }, (_, k) => best[x0 + k] - xHost[x0 + k]);
    const r1 = rng.int(h - s + 1);
    const c1 = rng.int(w - s + 1);
    const r2 = rng.int(h - s + 1);
    const c2 = rng.int(w - s + 1);
    const inside = (r: number, c: number, r0: number, c0: number) => r >= r0 && r < r0 + s && c >= c0 && c < c0 + s;
    let window1 = 0;
    let union = 0;
    let image = 0;
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        const sq = delta[r * w + c] ** 2;
        image += sq;
        if (inside(r, c, r1, c1)) window1 += sq;
        if (inside(r, c, r1, c1) || inside(r, c, r2, c2)) union += sq;
      }
    }
    const pattern = patternFor(s, rng.float() < 0.5);
    const sign = rng.nextU32() & 1 ? 1 : -1;
    const oldScale = 1 / (1e-10 + Math.sqrt(window1));
    const update = Float64Array.from(pattern, (v, q) => sign * v + delta[(r1 + Math.floor(q / s)) * w + c1 + (q % s)] * oldScale);
    const mass = Math.sqrt(Math.max(eps * eps - image, 0) + union) / Math.max(Math.hypot(...update), 1e-30);
    for (let r = r2; r < r2 + s; r++) for (let c = c2; c < c2 + s; c++) delta[r * w + c] = 0;
    update.forEach((v, q) => (delta[(r1 + Math.floor(q / s)) * w + c1 + (q % s)] = v * mass));
    const total = Math.hypot(...delta);
    const rescale = total > 0 ? eps / total : 0;
    for (let k = 0; k < d; k++) out[k] = clip01(xHost[x0 + k] + delta[k] * rescale);
  };

  const side = Math.min(h, w);
  for (let it = 1; it < budget && active.length > 0; it++) {
    const p = squareFraction(pInit, it - 1, budget);
    const s =
      norm === 'linf'
        ? Math.min(Math.max(Math.round(Math.sqrt(p * d)), 1), Math.max(side - 1, 1))
        : Math.min(Math.max(Math.round(Math.sqrt(p * d)), 3) | 1, side);
    const candidates = new Float32Array(active.length * d);
    active.forEach((i, j) => (norm === 'linf' ? proposeLinf : proposeL2)(i, s, candidates.subarray(j * d, (j + 1) * d)));
    const m = await margins(candidates, active, it);
    active.forEach((i, j) => {
      queries[i]++;
      if (m[j] < bestMargin[i]) {
        bestMargin[i] = m[j];
        best.set(candidates.subarray(j * d, (j + 1) * d), i * d);
      }
    });
    active = active.filter((i) => !(bestMargin[i] < 0));
    opts.onIteration?.(it, active.length);
  }
  return {
    adversarial: tensor(best, x.shape),
    queries,
    success: Uint8Array.from(bestMargin, (v) => (v < 0 ? 1 : 0)),
  };
}
