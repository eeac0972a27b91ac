// Detection-aware PGD (the reference's adaptive attack on its detectors): ascend the cross-entropy while keeping the
// chosen detector's statistic on the accepted side of its threshold,
//   maximise  CE(logits(x'), y) - lambda * max(0, how far the statistic is past the threshold),
// with L-inf (or L2) steps projected onto the eps-ball around x and onto [0, 1]. The per-class detectors (logit, KL) use
// the thresholds of the class the iterate is currently predicted as, which is what they will be judged by. The
// iteration is one compiled step (traced once per call, replayed per iteration) for classifiers that take seeds.
import { Tensor, tidy, noGrad, scale, add, sub, mul, div, sign, clamp, relu, logsumexp, logSoftmax, gather, reshape, sum, square, sqrt, addScalar, minimum, tensor, argmax, crossEntropy, gradients, Rng, randomUniform, full, compile, type TracedFunction } from '../engine.js';
import { type Classifier, checkImages, checkLabels, materialised } from './classifier.js';
import type { Detectors, DetectorName } from './detection.js';

export interface AdaptiveOptions {
  detector: DetectorName;
  /** Weight of the detector penalty; 0 is plain PGD on the cross-entropy. */
  lambda: number;
  /**
   * How far inside the accepted side to aim, in standard deviations of the fitted statistic (default 0.5): aiming
   * at the threshold itself leaves the iterates hovering on it, half of them just rejected.
   */
  margin?: number;
  eps: number;
  /** L-inf steps (the sign of the gradient) or L2 steps (its direction); eps bounds the same norm. */
  norm?: 'linf' | 'l2';
  stepSize: number;
  iterations: number;
  randomStart?: boolean;
  seed?: number;
  onIteration?: (iteration: number) => void;
}

/**
 * Per image, how far the detector's statistic is past its threshold (0 where it is accepted): log p(x) and
 * log p(x, c) below theirs, KL(p̄_c || softmax) above, c the predicted class. Differentiable in the logits.
 */
export function detectorExcess(logits: Tensor, detectors: Detectors, detector: DetectorName, predicted: Tensor, margin = 0): Tensor {
  const c = detectors.numClasses;
  // The lower-tail detectors' cut moves up by margin * std, KL's down.
  const lower = (t: { threshold: number; std: number }) => t.threshold + margin * t.std;
  const n = logits.shape[0];
  if (logits.rank !== 2 || logits.shape[1] !== c) throw new Error(`adaptive: logits must be [N, ${c}], got [${logits.shape}]`);
  const perClass = (values: number[]) => reshape(gather(tensor(values, [c, 1]), predicted), [n]);
  switch (detector) {
    case 'marginal':
      return relu(sub(full([n], lower(detectors.marginal)), logsumexp(logits, 1)));
    case 'logit': {
      const own = sum(mul(logits, reshape(gather(tensor(identity(c), [c, c]), predicted), [n, c])), 1);
      return relu(sub(perClass(detectors.logit.map(lower)), own));
    }
    case 'kl': {
      // KL(p̄_c || q) = sum_j p̄_cj log p̄_cj - sum_j p̄_cj log q_j; the first sum is a constant per class.
      const entropyTerm = detectors.meanSoftmax.map((row) => row.reduce((a, p) => (p > 0 ? a + p * Math.log(p) : a), 0));
      const pBar = reshape(gather(tensor(detectors.meanSoftmax.flat(), [c, c]), predicted), [n, c]);
      const kl = sub(perClass(entropyTerm), sum(mul(pBar, logSoftmax(logits, 1)), 1));
      return relu(sub(kl, perClass(detectors.kl.map((t) => t.threshold - margin * t.std))));
    }
    default:
      throw new Error(`adaptive: unknown detector '${detector as string}' (expected marginal, logit or kl)`);
  }
}

function identity(c: number): number[] {
  return Array.from({ length: c * c }, (_, i) => (Math.floor(i / c) === i % c ? 1 : 0));
}

export async function adaptivePgd(clf: Classifier, x: Tensor, labels: Tensor, detectors: Detectors, opts: AdaptiveOptions): Promise<Tensor> {
  if (!['marginal', 'logit', 'kl'].includes(opts.detector)) throw new Error(`adaptive: unknown detector '${opts.detector}' (expected marginal, logit or kl)`);
  if (!(opts.lambda >= 0 && Number.isFinite(opts.lambda))) throw new Error(`adaptive: lambda must be a finite number >= 0, got ${opts.lambda}`);
  if (!(opts.eps >= 0 && Number.isFinite(opts.eps))) throw new Error(`adaptive: eps must be a finite number >= 0, got ${opts.eps}`);
  if (!(opts.stepSize >= 0 && Number.isFinite(opts.stepSize))) throw new Error(`adaptive: stepSize must be a finite number >= 0, got ${opts.stepSize}`);
  if (!Number.isInteger(opts.iterations) || opts.iterations < 1) throw new Error(`adaptive: iterations must be a positive integer, got ${opts.iterations}`);
  const norm = opts.norm ?? 'linf';
  const margin = opts.margin ?? 0.5;
  if (!(margin >= 0 && Number.isFinite(margin))) throw new Error(`adaptive: margin must be a finite number >= 0, got ${margin}`);
  if (norm !== 'linf' && norm !== 'l2') throw new Error(`adaptive: norm must be 'linf' or 'l2', got '${norm as string}'`);
  if (detectors.numClasses !== clf.numClasses) throw new Error(`adaptive: the detectors were fitted for ${detectors.numClasses} classes, the classifier has ${clf.numClasses}`);
  await checkImages('adaptive', x);
  checkLabels('adaptive', x, labels);
  const rng = new Rng(opts.seed ?? 0);
  let adv = tidy(() => (opts.randomStart && opts.eps > 0 ? clamp(add(x, randomUniform(x.shape, rng.nextSeed(), -opts.eps, opts.eps)), 0, 1) : scale(x, 1)));
  const { draws, seeded } = clf;
  const logitsOf = (xv: Tensor, seed: number) => (seeded ? seeded.logits(xv, seed) : clf.logits(xv, seed));
  /** One iteration of the whole batch: [x, labels, iterate] in, the next iterate out; draw d's noise from seeds[d]. */
  const fn: TracedFunction = ([x0, y, a], seeds) => {
    const xv = noGrad(() => scale(a, 1)).requireGrad();
    let objective: Tensor | null = null;
    for (let d = 0; d < draws; d++) {
      const logits = logitsOf(xv, seeds[d]);
      const predicted = noGrad(() => argmax(logits));
      // Sums over the batch, so each image's gradient is its own objective's.
      const ce = scale(crossEntropy(logits, y), x0.shape[0]);
      const term = opts.lambda > 0 ? sub(ce, scale(sum(detectorExcess(logits, detectors, opts.detector, predicted, margin)), opts.lambda)) : ce;
      objective = objective ? add(objective, term) : term;
    }
    const g = gradients(objective!, null, [xv]).get(xv)!;
    return noGrad(() => {
      if (norm === 'linf') return clamp(add(x0, clamp(sub(add(a, scale(sign(g), opts.stepSize)), x0), -opts.eps, opts.eps)), 0, 1);
      const l2 = (t: Tensor) => sqrt(addScalar(sum(square(t), [1, 2, 3], true), 1e-24));
      const delta = sub(add(a, scale(div(g, l2(g)), opts.stepSize)), x0);
      return clamp(add(x0, mul(delta, minimum(full([], 1), div(full([], opts.eps), l2(delta))))), 0, 1);
    });
  };
  // Traced once for this call (the detectors' thresholds and the options are constants of the trace) and replayed
  // every iteration, when the classifier takes explicit seeds; eager otherwise, the draws numbered per iteration.
  const step = seeded ? compile(fn, { name: 'adaptive step', maxTraces: 1 }) : null;
  try {
    for (let i = 0; i < opts.iterations; i++) {
      const seeds = Array.from({ length: draws }, (_, d) => (seeded ? seeded.nextSeed() : i * draws + d));
      // Eagerly, the iterate is computed now: carried as a fused expression it would grow every iteration.
      const [next] = step ? step([x, labels, adv], seeds) : [materialised(tidy(() => fn([x, labels, adv], seeds) as Tensor))];
      adv.dispose();
      adv = next;
      opts.onIteration?.(i + 1);
    }
  } catch (e) {
    adv.dispose();
    throw e;
  } finally {
    step?.dispose();
  }
  return adv;
}
