// Detection-aware PGD: on a model where crossing the boundary lowers log p(x) (so plain PGD is caught by the
// marginal detector) but a direction the cross-entropy ignores raises every logit, the adaptive attack finds it.
import { describe, it, expect } from 'vitest';
import * as T from './lib.js';
import { useGpu } from './helpers.js';
import type { Classifier } from '../src/attacks/classifier.js';
import { adaptivePgd, detectorExcess } from '../src/attacks/adaptive.js';
import { iterativeAttack } from '../src/attacks/gradient.js';
import { fitDetectors, detectionReport } from '../src/attacks/detection.js';

useGpu();

// Images [N, 1, 1, 3]: x1 decides the class (z1 - z0 = 16 x1 - 8), and crossing lowers log p(x); x2 raises both
// logits alike, which the cross-entropy ignores and the detector rewards; x0 does nothing.
const W = [[0, -8, 8], [0, 8, 8]];
const B = [4, -4];
const clf: Classifier = {
  name: 'linear',
  numClasses: 2,
  draws: 1,
  logits: (x) => T.linear(T.reshape(x, [x.shape[0], 3]), T.tensor(W.flat(), [2, 3]), T.tensor(B, [2])),
};
const logitsOf = (p: number[]) => W.map((w, k) => w.reduce((a, v, i) => a + v * p[i], B[k]));

/** Class-0 images (x1 near 0.2) and class-1 images (x1 near 0.8), x2 near 0.5. */
function images(n: number, seed: number): { x: number[][]; labels: number[] } {
  let s = seed;
  const u = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 0.04 - 0.02;
  const x = Array.from({ length: n }, (_, i) => [0.5, i % 2 ? 0.8 + u() : 0.2 + u(), 0.5 + u()]);
  return { x, labels: x.map((_, i) => i % 2) };
}

describe('adaptive attack on the detectors', () => {
  it('keeps log p(x) above the marginal threshold where plain PGD is caught', async () => {
    const train = images(200, 7);
    const detectors = fitDetectors({ logits: Float32Array.from(train.x.flatMap(logitsOf)), labels: Int32Array.from(train.labels), numClasses: 2 }, { falsePositiveRate: 0.05 });
    const test = images(20, 11);
    const classZero = test.x.filter((_, i) => test.labels[i] === 0);
    const x = T.tensor(classZero.flat(), [classZero.length, 1, 1, 3]);
    const y = T.tensor(new Array(classZero.length).fill(0), [classZero.length], 'i32');
    // Just enough budget to cross: plain PGD lands where log p(x) is low; the adaptive one also raises x2.
    const opts = { eps: 0.45, stepSize: 0.03, iterations: 60 };
    const plain = await iterativeAttack(clf, x, y, { ...opts, norm: 'l2', randomStart: false, seed: 1 });
    const adaptive = await adaptivePgd(clf, x, y, detectors, { ...opts, detector: 'marginal', lambda: 1, norm: 'l2' });
    const report = async (adv: T.Tensor) => {
      const [clean, attacked] = await T.readAll([clf.logits(x, 0), clf.logits(adv, 0)]);
      return detectionReport(detectors, {
        cleanLogits: clean as Float32Array,
        cleanLabels: Int32Array.from(new Array(classZero.length).fill(0)),
        adversarialLogits: attacked as Float32Array,
        adversarialLabels: Int32Array.from(new Array(classZero.length).fill(0)),
        sourceCorrect: new Array(classZero.length).fill(true),
      });
    };
    const [before, after] = [await report(plain), await report(adaptive)];
    // Both attacks fool the classifier on every image; only the plain one is caught.
    expect(before.successful).toBe(classZero.length);
    expect(after.successful).toBe(classZero.length);
    expect(before.detectors.marginal.detectionRate).toBe(1);
    expect(after.detectors.marginal.detectionRate).toBe(0);
    // The adaptive attack stays within the budget and the box.
    const [a, x0] = await T.readAll([adaptive, x]);
    for (let k = 0; k < classZero.length; k++) expect(Math.hypot(...[0, 1, 2].map((j) => a[3 * k + j] - x0[3 * k + j]))).toBeLessThanOrEqual(0.45 + 1e-5);
    a.forEach((v) => expect(v >= 0 && v <= 1).toBe(true));
  });

  it('the penalty is each detector statistic past its threshold, zero on the accepted side', async () => {
    const train = images(200, 3);
    const detectors = fitDetectors({ logits: Float32Array.from(train.x.flatMap(logitsOf)), labels: Int32Array.from(train.labels), numClasses: 2 }, { falsePositiveRate: 0.1 });
    const points = [[0.5, 0.2, 0.5], [0.5, 0.55, 0.1], [0.5, 0.9, 0.0], [0.5, 0.45, 1.0]];
    const logits = points.map(logitsOf);
    const predicted = logits.map((l) => (l[1] > l[0] ? 1 : 0));
    const lt = T.tensor(logits.flat(), [points.length, 2]);
    const pt = T.tensor(predicted, [points.length], 'i32');
    const [marginal, logit, kl] = await T.readAll((['marginal', 'logit', 'kl'] as const).map((d) => detectorExcess(lt, detectors, d, pt)));
    logits.forEach((l, i) => {
      const m = Math.max(...l);
      const lse = m + Math.log(l.reduce((a, v) => a + Math.exp(v - m), 0));
      const c = predicted[i];
      const logq = l.map((v) => v - lse);
      const pBar = detectors.meanSoftmax[c];
      const klValue = pBar.reduce((a, p, j) => (p > 0 ? a + p * (Math.log(p) - logq[j]) : a), 0);
      expect(marginal[i]).toBeCloseTo(Math.max(0, detectors.marginal.threshold - lse), 4);
      expect(logit[i]).toBeCloseTo(Math.max(0, detectors.logit[c].threshold - l[c]), 4);
      expect(kl[i]).toBeCloseTo(Math.max(0, klValue - detectors.kl[c].threshold), 4);
    });
    expect(Math.max(...marginal, ...logit)).toBeGreaterThan(0);
  });

  it('bad options are named', async () => {
    const train = images(40, 5);
    const detectors = fitDetectors({ logits: Float32Array.from(train.x.flatMap(logitsOf)), labels: Int32Array.from(train.labels), numClasses: 2 }, { falsePositiveRate: 0.1 });
    const x = T.tensor([0.5, 0.2, 0.5], [1, 1, 1, 3]);
    const y = T.tensor([0], [1], 'i32');
    const base = { eps: 0.1, stepSize: 0.01, iterations: 2, detector: 'marginal' as const, lambda: 1 };
    await expect(adaptivePgd(clf, x, y, detectors, { ...base, detector: 'entropy' as never })).rejects.toThrow(/adaptive: unknown detector 'entropy' \(expected marginal, logit or kl\)/);
    await expect(adaptivePgd(clf, x, y, detectors, { ...base, lambda: -1 })).rejects.toThrow(/lambda must be a finite number >= 0, got -1/);
    await expect(adaptivePgd(clf, x, y, detectors, { ...base, iterations: 0 })).rejects.toThrow(/iterations must be a positive integer, got 0/);
  });
});
