// Detecting adversarial inputs from a generative classifier's logits (Li, Bradshaw & Sharma 2019, after DeepBayes'
// test_attacks/detect_attacks_logp.py). The logits are importance-sampled estimates of log p(x, y = c), so
//   marginal detector: log p(x) = logsumexp_c logit_c, rejects when log p(x) < delta          (one threshold),
//   logit detector:    log p(x, c) = logit_c for c = argmax, rejects when logit_c < delta_c    (per class),
//   KL detector:       KL(p̄_c || softmax(logits)) for c = argmax, rejects when KL > delta_c    (per class),
// where p̄_c is the mean softmax over the well-classified training images of class c.
//
// Thresholds are written as in the reference, delta = mean + alpha * std of the detector's statistic on the clean
// training samples it was fitted on, but with one sign convention for all three detectors: alpha is simply
// (delta - mean) / std, so it is negative for the marginal and logit detectors (which reject a lower tail) and
// usually positive for KL (upper tail). The reference writes mean - alpha * std for the lower tails, so its alpha
// is our -alpha there.
//
// Departures from the reference, on purpose:
// - delta is placed exactly at the requested false-positive quantile of the fitted samples (halfway between the
//   two order statistics that bracket it) instead of bisecting alpha to within 0.01%: on the fitted samples exactly
//   floor(rate * n) are rejected, fewer only where scores tie at the cut, never more. alpha is reported from delta.
// - All three detectors are fitted on the well-classified training samples (true label c and predicted c), as the
//   paper describes; the reference script groups by true label only and fits the marginal on every training image.
// - Detection and false-positive rates are pooled over samples, not averaged over per-class rates.
//
// All arithmetic is float64 on the host; the same code computes the statistics when fitting and when scoring, so
// a training sample is rejected by scoreDetectors exactly when it was counted as rejected while fitting.

/** A detector's statistic on the clean training samples it was fitted on, and its threshold. */
export interface ThresholdStats {
  /** Number of samples fitted on. */
  count: number;
  /** Mean and (population) standard deviation of the statistic: log p(x), log p(x, c) or KL. */
  mean: number;
  std: number;
  /** delta: the marginal and logit detectors reject below it, the KL detector above it. */
  threshold: number;
  /** (threshold - mean) / std; 0 where std is 0. */
  alpha: number;
  /** Fraction of the fitted samples the threshold rejects. */
  fittedFalsePositiveRate: number;
}

/** Fitted detectors; plain data, safe to JSON.stringify and read back. */
export interface Detectors {
  numClasses: number;
  /** The false-positive rate requested when fitting. */
  falsePositiveRate: number;
  /** On log p(x); rejects log p(x) < threshold. */
  marginal: ThresholdStats;
  /** Per predicted class c, on log p(x, c); rejects logit_c < threshold. */
  logit: ThresholdStats[];
  /** Per predicted class c, on KL(p̄_c || softmax(logits)); rejects KL > threshold. */
  kl: ThresholdStats[];
  /** p̄_c, the mean softmax over the well-classified training images of class c: [numClasses][numClasses]. */
  meanSoftmax: number[][];
  /** Classes fitted on other samples because none of their training images was classified correctly, and why. */
  fallbacks: Record<number, string>;
}

export interface DetectorScores {
  /** Suspicion scores, larger = more suspicious: -log p(x), -log p(x, c) and KL, c the predicted class. */
  marginal: Float64Array;
  logit: Float64Array;
  kl: Float64Array;
  /**
   * The same scores standardised by the fitted statistics of the predicted class, oriented the same way:
   * (mean - log p(x)) / std, (mean_c - logit_c) / std_c, (KL - mean_c) / std_c (a std of 0 counts as 1). This is
   * -alpha (alpha for KL) at which the sample would just be rejected, so sweeping one cut over it sweeps a common
   * alpha over all classes, as the reference does; ROC curves of the per-class detectors use it.
   */
  standardized: { marginal: Float64Array; logit: Float64Array; kl: Float64Array };
  /** argmax of the logits (the first on ties). */
  predicted: Int32Array;
  /** 1 where the detector rejects the sample under the fitted threshold of its predicted class. */
  rejected: { marginal: Uint8Array; logit: Uint8Array; kl: Uint8Array };
}

export type DetectorName = 'marginal' | 'logit' | 'kl';
export const detectorNames: readonly DetectorName[] = ['marginal', 'logit', 'kl'];

function checkLogits(op: string, logits: Float32Array, n: number, numClasses: number): void {
  if (!Number.isInteger(numClasses) || numClasses < 2) throw new Error(`${op}: numClasses must be an integer >= 2, got ${numClasses}`);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${op}: the number of samples must be a non-negative integer, got ${n}`);
  if (logits.length !== n * numClasses) {
    throw new Error(`${op}: logits has ${logits.length} values, expected ${n} samples x ${numClasses} classes = ${n * numClasses}`);
  }
  for (let i = 0; i < logits.length; i++) {
    if (!Number.isFinite(logits[i])) {
      throw new Error(`${op}: logits must be finite, but sample ${Math.floor(i / numClasses)} class ${i % numClasses} is ${logits[i]}`);
    }
  }
}

function checkLabels(op: string, labels: Int32Array, n: number, numClasses: number): void {
  if (labels.length !== n) throw new Error(`${op}: labels has ${labels.length} entries but there are ${n} samples of logits`);
  for (let i = 0; i < n; i++) {
    if (!(labels[i] >= 0 && labels[i] < numClasses)) throw new Error(`${op}: label ${i} is ${labels[i]}, outside [0, ${numClasses})`);
  }
}

/** Per-sample argmax and logsumexp of the logits [n, C]. */
function rowStatistics(logits: Float32Array, n: number, numClasses: number): { predicted: Int32Array; logMarginal: Float64Array } {
  const predicted = new Int32Array(n);
  const logMarginal = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const row = i * numClasses;
    let best = 0;
    for (let j = 1; j < numClasses; j++) if (logits[row + j] > logits[row + best]) best = j;
    const max = logits[row + best];
    let sum = 0;
    for (let j = 0; j < numClasses; j++) sum += Math.exp(logits[row + j] - max);
    predicted[i] = best;
    logMarginal[i] = max + Math.log(sum);
  }
  return { predicted, logMarginal };
}

/** KL(p̄ || softmax(row)) with log softmax = logit - logsumexp; terms with p̄_j = 0 contribute 0. */
function klFromMean(meanSoftmax: ArrayLike<number>, logMeanSoftmax: ArrayLike<number>, logits: Float32Array, row: number, logMarginal: number): number {
  let kl = 0;
  for (let j = 0; j < meanSoftmax.length; j++) {
    if (meanSoftmax[j] > 0) kl += meanSoftmax[j] * (logMeanSoftmax[j] - (logits[row + j] - logMarginal));
  }
  return kl;
}

const logsOf = (p: number[]): number[] => p.map((v) => (v > 0 ? Math.log(v) : -Infinity));

/**
 * The cut t with exactly floor(rate * n) of the values strictly below it (fewer only where values tie at the cut):
 * halfway between the two order statistics that bracket the rate, so held-out samples are not decided by one
 * training sample's exact value.
 */
function lowerTailThreshold(values: Float64Array, rate: number): number {
  const sorted = Float64Array.from(values).sort();
  // The small slack keeps rate * n products like 0.29 * 100 = 28.999999999999996 from losing a sample.
  const k = Math.floor(rate * sorted.length + 1e-9);
  if (k === 0) return sorted[0];
  const below = sorted[k - 1];
  const at = sorted[k];
  const mid = below + (at - below) / 2;
  return mid > below ? mid : at;
}

function thresholdStats(values: Float64Array, rate: number, tail: 'lower' | 'upper'): ThresholdStats {
  const count = values.length;
  let mean = 0;
  for (const v of values) mean += v;
  mean /= count;
  let variance = 0;
  for (const v of values) variance += (v - mean) ** 2;
  const std = Math.sqrt(variance / count);
  const threshold = tail === 'lower' ? lowerTailThreshold(values, rate) : -lowerTailThreshold(values.map((v) => -v), rate);
  let rejected = 0;
  for (const v of values) if (tail === 'lower' ? v < threshold : v > threshold) rejected++;
  return { count, mean, std, threshold, alpha: std > 0 ? (threshold - mean) / std : 0, fittedFalsePositiveRate: rejected / count };
}

/**
 * Fits the three detectors on clean training logits [n, C]. Only well-classified samples (predicted = label) are
 * used; each threshold rejects `falsePositiveRate` (default 0.05) of the samples it was fitted on, per class for
 * the logit and KL detectors.
 */
export function fitDetectors(
  train: { logits: Float32Array; labels: Int32Array; numClasses: number },
  opts: { falsePositiveRate?: number } = {},
): Detectors {
  const op = 'fitDetectors';
  const { logits, labels, numClasses } = train;
  const rate = opts.falsePositiveRate ?? 0.05;
  if (!(rate > 0 && rate < 1)) throw new Error(`${op}: falsePositiveRate must lie strictly between 0 and 1, got ${rate}`);
  const n = labels.length;
  checkLogits(op, logits, n, numClasses);
  checkLabels(op, labels, n, numClasses);
  const { predicted, logMarginal } = rowStatistics(logits, n, numClasses);

  const members: number[][] = Array.from({ length: numClasses }, () => []);
  const labelCounts = new Array<number>(numClasses).fill(0);
  for (let i = 0; i < n; i++) {
    labelCounts[labels[i]]++;
    if (predicted[i] === labels[i]) members[labels[i]].push(i);
  }
  const wellClassified = members.flat();
  if (wellClassified.length === 0) throw new Error(`${op}: none of the ${n} training samples is classified correctly; is the model trained?`);
  // A class none of whose images is classified correctly (a weak model, a tiny fitting set) is fitted on the
  // samples predicted as it, else on every well-classified sample, and the report says so.
  const fallbacks: Record<number, string> = {};
  members.forEach((m, c) => {
    if (m.length > 0) return;
    const predictedAsC = [...Array(n).keys()].filter((i) => predicted[i] === c);
    if (predictedAsC.length > 0) {
      members[c] = predictedAsC;
      fallbacks[c] = `no well-classified sample among ${labelCounts[c]} with label ${c}: fitted on the ${predictedAsC.length} predicted as ${c}`;
    } else {
      members[c] = wellClassified;
      fallbacks[c] = `no well-classified sample among ${labelCounts[c]} with label ${c}, none predicted as ${c}: fitted on all well-classified samples`;
    }
  });

  const meanSoftmax = members.map((m) => {
    const mean = new Array<number>(numClasses).fill(0);
    for (const i of m) for (let j = 0; j < numClasses; j++) mean[j] += Math.exp(logits[i * numClasses + j] - logMarginal[i]);
    return mean.map((v) => v / m.length);
  });

  return {
    numClasses,
    falsePositiveRate: rate,
    marginal: thresholdStats(Float64Array.from(wellClassified, (i) => logMarginal[i]), rate, 'lower'),
    logit: members.map((m, c) => thresholdStats(Float64Array.from(m, (i) => logits[i * numClasses + c]), rate, 'lower')),
    kl: members.map((m, c) => {
      const logMean = logsOf(meanSoftmax[c]);
      return thresholdStats(Float64Array.from(m, (i) => klFromMean(meanSoftmax[c], logMean, logits, i * numClasses, logMarginal[i])), rate, 'upper');
    }),
    meanSoftmax,
    fallbacks,
  };
}

/** Scores logits [n, C] under fitted detectors; each sample is judged by the thresholds of its predicted class. */
export function scoreDetectors(d: Detectors, logits: Float32Array, n: number): DetectorScores {
  const C = d.numClasses;
  checkLogits('scoreDetectors', logits, n, C);
  const { predicted, logMarginal } = rowStatistics(logits, n, C);
  const logMeanSoftmax = d.meanSoftmax.map(logsOf);
  const unit = (std: number) => (std > 0 ? std : 1);
  const s: DetectorScores = {
    marginal: new Float64Array(n),
    logit: new Float64Array(n),
    kl: new Float64Array(n),
    standardized: { marginal: new Float64Array(n), logit: new Float64Array(n), kl: new Float64Array(n) },
    predicted,
    rejected: { marginal: new Uint8Array(n), logit: new Uint8Array(n), kl: new Uint8Array(n) },
  };
  for (let i = 0; i < n; i++) {
    const c = predicted[i];
    const logJoint = logits[i * C + c];
    const kl = klFromMean(d.meanSoftmax[c], logMeanSoftmax[c], logits, i * C, logMarginal[i]);
    const marginal = d.marginal;
    const logitStats = d.logit[c];
    const klStats = d.kl[c];
    s.marginal[i] = -logMarginal[i];
    s.logit[i] = -logJoint;
    s.kl[i] = kl;
    s.standardized.marginal[i] = (marginal.mean - logMarginal[i]) / unit(marginal.std);
    s.standardized.logit[i] = (logitStats.mean - logJoint) / unit(logitStats.std);
    s.standardized.kl[i] = (kl - klStats.mean) / unit(klStats.std);
    s.rejected.marginal[i] = logMarginal[i] < marginal.threshold ? 1 : 0;
    s.rejected.logit[i] = logJoint < logitStats.threshold ? 1 : 0;
    s.rejected.kl[i] = kl > klStats.threshold ? 1 : 0;
  }
  return s;
}

export interface Roc {
  /** Monotone non-decreasing, from (0, 0) to (1, 1); at most maxPoints points. */
  fpr: number[];
  tpr: number[];
  /** Exact: P(adversarial score > clean score) + P(tie) / 2 over all pairs (Mann-Whitney U / (n_clean n_adv)). */
  auc: number;
}

/**
 * ROC of the rule "flag as adversarial when score >= cut", larger score = more likely adversarial, swept over
 * every cut. Tied scores form one step, a diagonal segment, which is what makes the trapezoidal area of the full
 * curve equal the Mann-Whitney AUC. The returned curve keeps at most `maxPoints` of its points, spread evenly along
 * fpr + tpr, always with both endpoints; `auc` is computed from all of them.
 */
export function roc(scoresClean: ArrayLike<number>, scoresAdv: ArrayLike<number>, maxPoints = 200): Roc {
  const nNeg = scoresClean.length;
  const nPos = scoresAdv.length;
  if (nNeg === 0 || nPos === 0) throw new Error(`roc: needs at least one clean and one adversarial score, got ${nNeg} clean and ${nPos} adversarial`);
  if (!Number.isInteger(maxPoints) || maxPoints < 2) throw new Error(`roc: maxPoints must be an integer >= 2, got ${maxPoints}`);
  const descending = (xs: ArrayLike<number>, what: string): Float64Array => {
    const out = Float64Array.from(xs);
    const bad = out.findIndex(Number.isNaN);
    if (bad >= 0) throw new Error(`roc: ${what} score ${bad} is NaN`);
    return out.sort().reverse();
  };
  const neg = descending(scoresClean, 'clean');
  const pos = descending(scoresAdv, 'adversarial');

  // Counts of pairs, integers and halves, exact in float64 far beyond any test-set size.
  let pairs = 0;
  let tp = 0;
  let fp = 0;
  const fprAll = [0];
  const tprAll = [0];
  while (tp < nPos || fp < nNeg) {
    const cut = Math.max(tp < nPos ? pos[tp] : -Infinity, fp < nNeg ? neg[fp] : -Infinity);
    let p = 0;
    let q = 0;
    while (tp + p < nPos && pos[tp + p] === cut) p++;
    while (fp + q < nNeg && neg[fp + q] === cut) q++;
    pairs += q * tp + (p * q) / 2;
    tp += p;
    fp += q;
    fprAll.push(fp / nNeg);
    tprAll.push(tp / nPos);
  }
  const auc = pairs / (nNeg * nPos);
  if (fprAll.length <= maxPoints) return { fpr: fprAll, tpr: tprAll, auc };

  const keep = [0];
  let i = 0;
  for (let k = 1; k < maxPoints - 1; k++) {
    const target = (2 * k) / (maxPoints - 1);
    while (i < fprAll.length - 1 && fprAll[i] + tprAll[i] < target) i++;
    if (i > keep[keep.length - 1] && i < fprAll.length - 1) keep.push(i);
  }
  keep.push(fprAll.length - 1);
  return { fpr: keep.map((j) => fprAll[j]), tpr: keep.map((j) => tprAll[j]), auc };
}

export interface DetectorReport {
  /** Fraction of successful adversarial examples rejected; null where there were none. */
  detectionRate: number | null;
  /** Fraction of all clean test inputs rejected. */
  falsePositiveRate: number;
  /**
   * Clean test vs successful adversarial on the standardised score (one alpha swept over all classes), so the
   * per-class detectors' fitted operating point, with its per-class alphas, lies near but not exactly on it. Null
   * where there were no successful attacks.
   */
  roc: Roc | null;
  /** Fraction of adversarial inputs classified correctly or rejected. */
  accuracyWithDetection: number;
}

export interface DetectionReport {
  /** The false-positive rate the thresholds were fitted to on training data. */
  fittedFalsePositiveRate: number;
  /** Numbers of clean test inputs, adversarial inputs, and successful adversarial examples among the latter. */
  clean: number;
  adversarial: number;
  successful: number;
  /** Plain accuracy, no rejection, on clean test and on adversarial inputs. */
  cleanAccuracy: number;
  adversarialAccuracy: number;
  detectors: Record<DetectorName, DetectorReport>;
}

export interface DetectionReportInput {
  cleanLogits: Float32Array;
  cleanLabels: Int32Array;
  adversarialLogits: Float32Array;
  /** True labels of the images the adversarial examples were made from. */
  adversarialLabels: Int32Array;
  /**
   * Nonzero where the attack succeeded. Defaults to "the adversarial input is misclassified", as in the reference;
   * pass it where success was judged otherwise (say under a different noise draw).
   */
  successful?: ArrayLike<number | boolean>;
  /**
   * Nonzero where the clean source image was classified correctly before the attack. Only successful attacks on
   * such images count as successful (turning an already wrong answer into another is no attack); all count when
   * omitted.
   */
  sourceCorrect?: ArrayLike<number | boolean>;
  maxRocPoints?: number;
}

/**
 * Evaluates fitted detectors on clean test inputs and adversarial inputs: detection rate on successful attacks,
 * false-positive rate on clean test inputs, ROC/AUC between the two, and accuracy on adversarial inputs when a
 * rejected input counts as caught. Clean and adversarial inputs need not correspond one to one.
 */
export function detectionReport(d: Detectors, input: DetectionReportInput): DetectionReport {
  const op = 'detectionReport';
  const C = d.numClasses;
  const { cleanLogits, cleanLabels, adversarialLogits, adversarialLabels, sourceCorrect } = input;
  const nClean = cleanLabels.length;
  const nAdv = adversarialLabels.length;
  if (nClean === 0 || nAdv === 0) throw new Error(`${op}: needs clean and adversarial inputs, got ${nClean} clean and ${nAdv} adversarial`);
  checkLogits(`${op} (clean)`, cleanLogits, nClean, C);
  checkLabels(`${op} (clean)`, cleanLabels, nClean, C);
  checkLogits(`${op} (adversarial)`, adversarialLogits, nAdv, C);
  checkLabels(`${op} (adversarial)`, adversarialLabels, nAdv, C);
  if (input.successful && input.successful.length !== nAdv) throw new Error(`${op}: successful has ${input.successful.length} entries, expected ${nAdv}`);
  if (sourceCorrect && sourceCorrect.length !== nAdv) throw new Error(`${op}: sourceCorrect has ${sourceCorrect.length} entries, expected ${nAdv}`);

  const cleanScores = scoreDetectors(d, cleanLogits, nClean);
  const advScores = scoreDetectors(d, adversarialLogits, nAdv);
  const advCorrect = (i: number) => advScores.predicted[i] === adversarialLabels[i];
  const succeeded = input.successful ? (i: number) => Boolean(input.successful![i]) : (i: number) => !advCorrect(i);
  const successful: number[] = [];
  for (let i = 0; i < nAdv; i++) if (succeeded(i) && (!sourceCorrect || sourceCorrect[i])) successful.push(i);
  const count = (n: number, pred: (i: number) => boolean) => {
    let k = 0;
    for (let i = 0; i < n; i++) if (pred(i)) k++;
    return k;
  };

  const detectors = {} as Record<DetectorName, DetectorReport>;
  for (const name of detectorNames) {
    const rejectedAdv = advScores.rejected[name];
    const advStandardized = advScores.standardized[name];
    detectors[name] = {
      detectionRate: successful.length > 0 ? successful.filter((i) => rejectedAdv[i] === 1).length / successful.length : null,
      falsePositiveRate: count(nClean, (i) => cleanScores.rejected[name][i] === 1) / nClean,
      roc: successful.length > 0 ? roc(cleanScores.standardized[name], successful.map((i) => advStandardized[i]), input.maxRocPoints) : null,
      accuracyWithDetection: count(nAdv, (i) => advCorrect(i) || rejectedAdv[i] === 1) / nAdv,
    };
  }
  return {
    fittedFalsePositiveRate: d.falsePositiveRate,
    clean: nClean,
    adversarial: nAdv,
    successful: successful.length,
    cleanAccuracy: count(nClean, (i) => cleanScores.predicted[i] === cleanLabels[i]) / nClean,
    adversarialAccuracy: count(nAdv, advCorrect) / nAdv,
    detectors,
  };
}
