// Carlini & Wagner's L2 attack (Carlini and Wagner 2017, "Towards evaluating the robustness of neural networks"),
// untargeted. The box constraint is removed by attacking in tanh space, x_adv = (tanh(w) + 1) / 2, and
//   minimise ||x_adv - x||_2^2 + c * f(x_adv),   f = max(Z_y - max_{j != y} Z_j, -kappa)
// on the logits Z is run with Adam on w for a fixed number of iterations; a binary search over c per image
// follows (as in Carlini's reference code: on success c is an upper bound, otherwise a lower bound, and c grows
// tenfold until some c succeeds). The smallest successful perturbation over all iterations and all search steps
// is kept per image.
// Everything per iteration (forward, gradient, Adam, best tracking) stays on the GPU for the whole batch, as one
// step function: compiled (traced once per batch shape, replayed every iteration) for classifiers that take
// explicit seeds, eager otherwise. The host reads once per search step (which images succeeded, for the search)
// and, with early abort, the total loss ten times per step.
import { Tensor, tidy, keep, noGrad, readAll, gradients, tensor, full, reshape, slice, add, sub, mul, div, square, sqrt, sum, max, tanh, log, affine, scale, addScalar, maximum, gt, oneHot, type TracedFunction } from '../engine.js';
import { type Classifier, checkImages, checkLabels, materialised } from './classifier.js';

export interface CwOptions {
  /** Adam iterations per binary-search step. */
  iterations?: number;
  /** Adam's learning rate on w. */
  lr?: number;
  /** Confidence: success requires max_{j != y} Z_j - Z_y > kappa. */
  kappa?: number;
  /** Binary-search steps over c; 1 runs the attack once with `initialConst`. */
  binarySearchSteps?: number;
  /** The c of the first search step, for every image. */
  initialConst?: number;
  /** Ends a search step early once the total loss has stopped decreasing (by 0.01% per tenth of the iterations). */
  abortEarly?: boolean;
  /** Called after every iteration with the search step and the iteration within it (both from 0). */
  onIteration?: (step: number, iteration: number) => void;
}

export interface CwResult {
  /** The smallest successful adversarial per image; the clean image where none was found. */
  adversarial: Tensor;
  /** ||x_adv - x||_2 of that adversarial; Infinity where none was found. */
  l2: Float64Array;
  success: Uint8Array;
  /** The c whose search step found the kept adversarial; NaN where none was found. */
  const: Float64Array;
}

// This implementation's defaults, not settings checked against the reproduced paper: a study passes its own.
export const cwDefaults = { iterations: 1000, lr: 0.01, kappa: 0, binarySearchSteps: 1, initialConst: 10, abortEarly: false } as const;

const BETA1 = 0.9;
const BETA2 = 0.999;
const ADAM_EPS = 1e-8;
/** Keeps atanh finite at pixels of 0 and 1, as Carlini's code does. */
const TANH_SHRINK = 1 - 1e-6;
/** "No success yet" for squared distances; finite so that masked selects (0 * it) stay exact. */
const NONE = 1e30;

function positiveInteger(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new Error(`cw: ${name} must be an integer >= 1, got ${v}`);
}

function resolve(opts: CwOptions) {
  const o = { ...cwDefaults, ...opts };
  positiveInteger('iterations', o.iterations);
  positiveInteger('binarySearchSteps', o.binarySearchSteps);
  if (!Number.isFinite(o.lr) || o.lr <= 0) throw new Error(`cw: lr must be a finite number > 0, got ${o.lr}`);
  if (!Number.isFinite(o.kappa) || o.kappa < 0) throw new Error(`cw: kappa must be a finite number >= 0, got ${o.kappa}`);
  if (!Number.isFinite(o.initialConst) || o.initialConst <= 0) throw new Error(`cw: initialConst must be a finite number > 0, got ${o.initialConst}`);
  return o;
}

/** a where mask is 1, b where it is 0 (mask broadcast); exact for either side, unlike b + mask * (a - b). */
function select(mask: Tensor, a: Tensor, b: Tensor): Tensor {
  return add(mul(mask, a), mul(affine(mask, -1, 1), b));
}

/** Z_y - max_{j != y} Z_j per row of logits [N, C], given the one-hot labels. */
function logitGap(logits: Tensor, hot: Tensor): Tensor {
  const zy = sum(mul(logits, hot), -1);
  // The true class is pushed far below every logit; other entries are untouched (0 * 1e30 = 0), so the max is exact.
  const other = max(sub(logits, scale(hot, NONE)), -1);
  return sub(zy, other);
}

type CwStep = (inputs: Tensor[], drawIds: number[]) => Tensor[];

/**
 * One Adam iteration of the whole batch: inputs [x, one-hot labels, c [N], scalars [4] (Adam's two bias
 * corrections, lr, -kappa), w, m, v, the step's success flags, best d2, best adversarial, best c]; `drawIds`
 * names the noise of each of the classifier's draws. Returns [w, m, v, loss, success flags, best d2, best
 * adversarial, best c]. Compiled (traced once per shape, replayed per iteration) when the classifier can be called
 * with explicit seeds; run eagerly otherwise, with the draw numbers as the eager attack numbers them.
 */
function cwStep(clf: Classifier): CwStep {
  const { draws, seeded } = clf;
  const fn: TracedFunction = (inputs, drawIds) => {
    const [x, hot, cT, scalars, w, m, v, stepSuccess, bestD2, bestAdv, bestConst] = inputs;
    const at = (k: number) => slice(scalars, [k], [1]);
    const negKappa = at(3);
    const wv = noGrad(() => scale(w, 1)).requireGrad();
    const adv = affine(tanh(wv), 0.5, 0.5);
    const d2 = sum(square(sub(adv, x)), [1, 2, 3]);
    let logitSum: Tensor | null = null;
    let fSum: Tensor | null = null;
    for (let d = 0; d < draws; d++) {
      const z = seeded ? seeded.logits(adv, drawIds[d]) : clf.logits(adv, drawIds[d]);
      const f = maximum(logitGap(z, hot), negKappa);
      logitSum = logitSum ? add(logitSum, z) : z;
      fSum = fSum ? add(fSum, f) : f;
    }
    // Summed over the batch, so each image's gradient is that of its own loss.
    const loss = sum(add(d2, mul(cT, scale(fSum!, 1 / draws))));
    const g = gradients(loss, null, [wv]).get(wv)!;
    return noGrad(() => {
      // Success of this iterate on the logits averaged over the draws it saw.
      const gap = logitGap(scale(logitSum!, 1 / draws), hot);
      const success = gt(negKappa, gap);
      const improved = mul(success, gt(bestD2, d2));
      const m2 = add(scale(m, BETA1), scale(g, 1 - BETA1));
      const v2 = add(scale(v, BETA2), scale(square(g), 1 - BETA2));
      const mHat = mul(m2, at(0));
      const vHat = mul(v2, at(1));
      const w2 = sub(w, mul(div(mHat, addScalar(sqrt(vHat), ADAM_EPS)), at(2)));
      return [w2, m2, v2, loss, maximum(stepSuccess, success), select(improved, d2, bestD2), select(reshape(improved, [x.shape[0], 1, 1, 1]), adv, bestAdv), select(improved, cT, bestConst)].map(materialised);
    });
  };
  if (seeded) return seeded.model.compiled(`cw step ${seeded.key} draws=${draws}`, () => fn);
  return (inputs, drawIds) => tidy(() => fn(inputs, drawIds) as Tensor[]);
}

export async function cw(clf: Classifier, x: Tensor, labels: Tensor, opts: CwOptions = {}): Promise<CwResult> {
  const o = resolve(opts);
  await checkImages('cw', x);
  checkLabels('cw', x, labels);
  const n = x.shape[0];
  const classes = clf.numClasses;
  const labelHost = (await labels.data()) as Int32Array;
  labelHost.forEach((y, i) => {
    if (!(y >= 0 && y < classes)) throw new Error(`cw: label ${i} is ${y}, outside [0, ${classes})`);
  });
  const { draws } = clf;

  const state = noGrad(() =>
    tidy(() => {
      const y = scale(addScalar(scale(x, 2), -1), TANH_SHRINK);
      // atanh(y) = log((1 + y) / (1 - y)) / 2
      const w0 = scale(log(div(addScalar(y, 1), affine(y, -1, 1))), 0.5);
      return { w0: keep(w0), hot: keep(oneHot(labels, classes)), bestD2: keep(full([n], NONE)), bestAdv: keep(scale(x, 1)), bestConst: keep(full([n], 0)) };
    }),
  );
  const { w0, hot } = state;
  let { bestD2, bestAdv, bestConst } = state;
  const replace = (old: Tensor, next: Tensor) => {
    old.dispose();
    return keep(next);
  };

  const c = new Float64Array(n).fill(o.initialConst);
  const lower = new Float64Array(n).fill(0);
  const upper = new Float64Array(n).fill(Infinity);
  const checkEvery = Math.max(1, Math.floor(o.iterations / 10));
  const step = cwStep(clf);

  for (let searchStep = 0; searchStep < o.binarySearchSteps; searchStep++) {
    // Every step restarts from the clean image with fresh Adam state, as in Carlini's code.
    let w = keep(noGrad(() => scale(w0, 1)));
    let m = keep(noGrad(() => full(w0.shape, 0)));
    let v = keep(noGrad(() => full(w0.shape, 0)));
    let stepSuccess = keep(noGrad(() => full([n], 0)));
    const cT = keep(tensor(c, [n]));
    let prevLoss = Infinity;
    for (let it = 0; it < o.iterations; it++) {
      const t = it + 1;
      // Adam's bias corrections, the learning rate and -kappa: host numbers the step takes as a tensor, so one
      // trace serves every iteration (and every call with this classifier).
      const scalars = tensor([1 / (1 - BETA1 ** t), 1 / (1 - BETA2 ** t), o.lr, -o.kappa], [4]);
      const drawIds = Array.from({ length: draws }, (_, d) => (clf.seeded ? clf.seeded.nextSeed() : (searchStep * o.iterations + it) * draws + d));
      const [w2, m2, v2, loss, success2, d2Best, advBest, constBest] = step([x, hot, cT, scalars, w, m, v, stepSuccess, bestD2, bestAdv, bestConst], drawIds);
      scalars.dispose();
      w = replace(w, w2);
      m = replace(m, m2);
      v = replace(v, v2);
      stepSuccess = replace(stepSuccess, success2);
      bestD2 = replace(bestD2, d2Best);
      bestAdv = replace(bestAdv, advBest);
      bestConst = replace(bestConst, constBest);
      let stop = false;
      if (o.abortEarly && it % checkEvery === 0) {
        const [l] = await readAll([loss]);
        stop = l[0] > prevLoss * 0.9999;
        prevLoss = l[0];
      }
      loss.dispose();
      o.onIteration?.(searchStep, it);
      if (stop) break;
    }
    const [succeeded] = await readAll([stepSuccess]);
    for (let i = 0; i < n; i++) {
      if (succeeded[i] > 0) {
        upper[i] = Math.min(upper[i], c[i]);
        c[i] = (lower[i] + upper[i]) / 2;
      } else {
        lower[i] = Math.max(lower[i], c[i]);
        c[i] = upper[i] < Infinity ? (lower[i] + upper[i]) / 2 : c[i] * 10;
      }
    }
    [w, m, v, stepSuccess, cT].forEach((t) => t.dispose());
  }

  const [d2Host, constHost] = await readAll([bestD2, bestConst]);
  [w0, hot, bestD2, bestConst].forEach((t) => t.dispose());
  const success = new Uint8Array(n);
  const l2 = new Float64Array(n);
  const constOut = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    success[i] = d2Host[i] < NONE ? 1 : 0;
    l2[i] = success[i] ? Math.sqrt(d2Host[i]) : Infinity;
    constOut[i] = success[i] ? constHost[i] : NaN;
  }
  return { adversarial: bestAdv, l2, success, const: constOut };
}
