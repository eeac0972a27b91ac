import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { fitDetectors, scoreDetectors, roc, detectionReport, detectorNames, type Detectors } from '../src/attacks/detection.js';

/** Seeded uniform [0, 1) (mulberry32) and standard normal (Box-Muller) draws. */
function rng(seed: number): { uniform: () => number; normal: () => number } {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  return { uniform, normal };
}

/**
 * Logits shaped like a generative classifier's log p(x, y): a per-sample log p(x) level around -300, the label's
 * logit `margin` above the rest on average, so that most but not all samples are well classified.
 */
function synthetic(seed: number, n: number, numClasses = 10, margin = 3, noise = 1): { logits: Float32Array; labels: Int32Array } {
  const r = rng(seed);
  const logits = new Float32Array(n * numClasses);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % numClasses;
    const level = -300 + 10 * r.normal();
    for (let j = 0; j < numClasses; j++) logits[i * numClasses + j] = level + noise * r.normal() + (j === labels[i] ? margin : 0);
  }
  return { logits, labels };
}

/** Indices of the well-classified samples of each class. */
function wellClassifiedByClass(logits: Float32Array, labels: Int32Array, numClasses: number): number[][] {
  const out: number[][] = Array.from({ length: numClasses }, () => []);
  labels.forEach((y, i) => {
    const row = Array.from(logits.subarray(i * numClasses, (i + 1) * numClasses));
    if (row.indexOf(Math.max(...row)) === y) out[y].push(i);
  });
  return out;
}

const mannWhitney = (neg: number[], pos: number[]): number => {
  let s = 0;
  for (const p of pos) for (const q of neg) s += p > q ? 1 : p === q ? 0.5 : 0;
  return s / (neg.length * pos.length);
};

const trapezoid = (fpr: number[], tpr: number[]): number => {
  let a = 0;
  for (let i = 1; i < fpr.length; i++) a += ((fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1])) / 2;
  return a;
};

function expectMonotoneCurve(r: { fpr: number[]; tpr: number[] }): void {
  expect(r.fpr.length).toBe(r.tpr.length);
  expect([r.fpr[0], r.tpr[0]]).toEqual([0, 0]);
  expect([r.fpr.at(-1), r.tpr.at(-1)]).toEqual([1, 1]);
  for (let i = 1; i < r.fpr.length; i++) {
    expect(r.fpr[i]).toBeGreaterThanOrEqual(r.fpr[i - 1]);
    expect(r.tpr[i]).toBeGreaterThanOrEqual(r.tpr[i - 1]);
  }
}

describe('fitDetectors thresholds', () => {
  /** Checks every detector rejects the requested fraction (never more, less by under one sample) of what it was fitted on. */
  function expectExactRates(d: Detectors, train: { logits: Float32Array; labels: Int32Array }, rate: number): void {
    const C = d.numClasses;
    const s = scoreDetectors(d, train.logits, train.labels.length);
    const members = wellClassifiedByClass(train.logits, train.labels, C);
    const all = members.flat();
    const within = (rejected: number, n: number) => {
      expect(rejected / n).toBeLessThanOrEqual(rate + 1e-12);
      expect(rejected / n).toBeGreaterThan(rate - 1 / n);
    };
    within(all.filter((i) => s.rejected.marginal[i]).length, all.length);
    expect(d.marginal.count).toBe(all.length);
    members.forEach((m, c) => {
      expect(d.logit[c].count).toBe(m.length);
      within(m.filter((i) => s.rejected.logit[i]).length, m.length);
      within(m.filter((i) => s.rejected.kl[i]).length, m.length);
      expect(d.logit[c].fittedFalsePositiveRate).toBe(m.filter((i) => s.rejected.logit[i]).length / m.length);
      expect(d.kl[c].fittedFalsePositiveRate).toBe(m.filter((i) => s.rejected.kl[i]).length / m.length);
    });
  }

  it.each([0.01, 0.05, 0.1, 0.25, 0.5, 0.9])('rejects exactly %f of the fitted training samples', (rate) => {
    const train = synthetic(1, 4000);
    const d = fitDetectors({ ...train, numClasses: 10 }, { falsePositiveRate: rate });
    expect(d.falsePositiveRate).toBe(rate);
    expectExactRates(d, train, rate);
  });

  it('holds for random sizes, rates and class counts', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.integer({ min: 2, max: 6 }),
        fc.integer({ min: 4, max: 80 }),
        fc.double({ min: 0.001, max: 0.999, noNaN: true }),
        (seed, C, perClass, rate) => {
          const train = synthetic(seed, C * perClass, C, 6);
          if (wellClassifiedByClass(train.logits, train.labels, C).some((m) => m.length === 0)) return;
          expectExactRates(fitDetectors({ ...train, numClasses: C }, { falsePositiveRate: rate }), train, rate);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('defaults to 5%, reports alpha as (threshold - mean) / std with lower tails negative, and survives JSON', () => {
    const train = synthetic(2, 3000);
    const d = fitDetectors({ ...train, numClasses: 10 });
    expect(d.falsePositiveRate).toBe(0.05);
    for (const t of [d.marginal, ...d.logit, ...d.kl]) expect(t.alpha).toBeCloseTo((t.threshold - t.mean) / t.std, 12);
    expect(d.marginal.alpha).toBeLessThan(0);
    for (const t of d.logit) expect(t.alpha).toBeLessThan(0);
    for (const t of d.kl) expect(t.alpha).toBeGreaterThan(0);
    const copy: Detectors = JSON.parse(JSON.stringify(d));
    expect(copy).toEqual(d);
    const test = synthetic(3, 500);
    expect(scoreDetectors(copy, test.logits, 500)).toEqual(scoreDetectors(d, test.logits, 500));
  });

  it('ignores misclassified training samples', () => {
    const train = synthetic(4, 2000, 10, 1);
    const members = wellClassifiedByClass(train.logits, train.labels, 10);
    expect(members.flat().length).toBeLessThan(2000);
    const d = fitDetectors({ ...train, numClasses: 10 });
    members.forEach((m, c) => {
      const values = m.map((i) => train.logits[i * 10 + c]);
      expect(d.logit[c].mean).toBeCloseTo(values.reduce((a, b) => a + b, 0) / m.length, 8);
    });
  });
});

describe('scoreDetectors', () => {
  const train = synthetic(5, 3000);
  const d = fitDetectors({ ...train, numClasses: 10 });

  it('scores -log p(x), -log p(x, c) and KL to the predicted class, larger = more suspicious', () => {
    const test = synthetic(6, 50);
    const s = scoreDetectors(d, test.logits, 50);
    for (let i = 0; i < 50; i++) {
      const row = Array.from(test.logits.subarray(i * 10, i * 10 + 10));
      const c = row.indexOf(Math.max(...row));
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
      const kl = d.meanSoftmax[c].reduce((a, p, j) => a + p * (Math.log(p) - (row[j] - lse)), 0);
      expect(s.predicted[i]).toBe(c);
      expect(s.marginal[i]).toBeCloseTo(-lse, 9);
      expect(s.logit[i]).toBe(-row[c]);
      expect(s.kl[i]).toBeCloseTo(kl, 9);
      expect(s.rejected.marginal[i]).toBe(lse < d.marginal.threshold ? 1 : 0);
      expect(s.rejected.logit[i]).toBe(row[c] < d.logit[c].threshold ? 1 : 0);
      expect(s.rejected.kl[i]).toBe(s.kl[i] > d.kl[c].threshold ? 1 : 0);
      expect(s.standardized.logit[i]).toBeCloseTo((d.logit[c].mean - row[c]) / d.logit[c].std, 9);
    }
  });

  it('gives KL 0 when the softmax equals p̄ of the predicted class', () => {
    const rows = 10;
    const logits = new Float32Array(rows * 10);
    for (let c = 0; c < rows; c++) d.meanSoftmax[c].forEach((p, j) => (logits[c * 10 + j] = Math.log(p) - 250 + c));
    const s = scoreDetectors(d, logits, rows);
    for (let c = 0; c < rows; c++) {
      expect(s.predicted[c]).toBe(c);
      expect(Math.abs(s.kl[c])).toBeLessThan(1e-9);
    }
  });

  it('handles softmax probabilities that underflow to zero', () => {
    const logits = new Float32Array([0, -2000, -2000, -2000, 0, -2000, -2000, -2000, 0, -1000, 0, -2000]);
    const labels = new Int32Array([0, 1, 2, 1]);
    const dd = fitDetectors({ logits, labels, numClasses: 3 });
    expect(dd.meanSoftmax[1]).toEqual([0, 1, 0]);
    const s = scoreDetectors(dd, new Float32Array([-5, 0, -3000]), 1);
    expect(Number.isFinite(s.kl[0])).toBe(true);
    expect(s.kl[0]).toBeCloseTo(Math.log1p(Math.exp(-5)), 12);
  });
});

describe('roc', () => {
  it('gives AUC 1 for perfectly separated scores and 0 for reversed ones', () => {
    const clean = [0.1, 0.5, 0.2, 0.3];
    const adv = [0.9, 0.6, 2];
    expect(roc(clean, adv).auc).toBe(1);
    expect(roc(adv, clean).auc).toBe(0);
    expectMonotoneCurve(roc(clean, adv));
  });

  it('gives AUC 0.5 for identical distributions', () => {
    const r = rng(7);
    const n = 20_000;
    const clean = Array.from({ length: n }, r.normal);
    const adv = Array.from({ length: n }, r.normal);
    // The AUC's standard error here is sqrt((2n + 1) / (12 n^2)) ~ 0.003.
    expect(Math.abs(roc(clean, adv).auc - 0.5)).toBeLessThan(0.015);
    expect(roc(clean, clean).auc).toBe(0.5);
  });

  it('equals the Mann-Whitney statistic and the area under its own curve, ties counted half', () => {
    const scores = fc.array(fc.integer({ min: -3, max: 3 }), { minLength: 1, maxLength: 25 });
    fc.assert(
      fc.property(scores, scores, (neg, pos) => {
        const r = roc(neg, pos);
        expect(r.auc).toBeCloseTo(mannWhitney(neg, pos), 12);
        expect(trapezoid(r.fpr, r.tpr)).toBeCloseTo(r.auc, 12);
        expectMonotoneCurve(r);
      }),
      { numRuns: 300 },
    );
  });

  it('downsamples long curves to at most maxPoints, keeping endpoints, shape and the exact AUC', () => {
    const r = rng(8);
    const clean = Array.from({ length: 5000 }, r.normal);
    const adv = Array.from({ length: 3000 }, () => r.normal() + 1);
    const full = roc(clean, adv, 1e9);
    const small = roc(clean, adv);
    expect(full.fpr.length).toBe(8001);
    expect(small.fpr.length).toBeLessThanOrEqual(200);
    expect(small.fpr.length).toBeGreaterThan(150);
    expectMonotoneCurve(small);
    expect(small.auc).toBe(full.auc);
    expect(small.auc).toBeCloseTo(mannWhitney(clean, adv), 10);
    expect(Math.abs(trapezoid(small.fpr, small.tpr) - full.auc)).toBeLessThan(0.005);
    expectMonotoneCurve(roc(clean, adv, 2));
    expect(roc(clean, adv, 2).fpr).toEqual([0, 1]);
  });

  it('rejects empty or NaN scores', () => {
    expect(() => roc([], [1])).toThrow(/at least one clean/);
    expect(() => roc([1], [])).toThrow(/0 adversarial/);
    expect(() => roc([1, NaN], [1])).toThrow(/clean score 1 is NaN/);
    expect(() => roc([1], [1], 1)).toThrow(/maxPoints/);
  });
});

describe('detection on synthetic Gaussian logits', () => {
  const C = 10;
  const train = synthetic(9, 5000, C, 5);
  const d = fitDetectors({ ...train, numClasses: C });
  const clean = synthetic(10, 4000, C, 5);
  const inputs = (adv: { logits: Float32Array; labels: Int32Array; successful?: ArrayLike<number> }) => ({
    cleanLogits: clean.logits,
    cleanLabels: clean.labels,
    adversarialLogits: adv.logits,
    adversarialLabels: adv.labels,
    successful: adv.successful,
  });

  /** Adversarial logits: the label's logit pushed below a wrong class, with everything shifted down by `shift`. */
  function attacked(seed: number, shift: number, gap: number): { logits: Float32Array; labels: Int32Array; successful: Uint8Array } {
    const src = synthetic(seed, 2000, C, 5);
    const logits = Float32Array.from(src.logits, (v) => v - shift);
    const successful = new Uint8Array(2000);
    for (let i = 0; i < 2000; i++) {
      const y = src.labels[i];
      const wrong = (y + 1) % C;
      logits[i * C + wrong] = logits[i * C + y] + gap;
      successful[i] = i % 4 === 0 ? 0 : 1;
      if (!successful[i]) logits[i * C + wrong] = logits[i * C + y] - 10;
    }
    return { logits, labels: src.labels, successful };
  }

  it('catches inputs whose log-likelihood is several sigma low', () => {
    const adv = attacked(11, 6 * d.marginal.std, 0.5);
    const report = detectionReport(d, inputs(adv));
    expect([report.clean, report.adversarial, report.successful]).toEqual([4000, 2000, 1500]);
    for (const name of ['marginal', 'logit'] as const) {
      const r = report.detectors[name];
      expect(r.detectionRate).toBeGreaterThan(0.95);
      expect(Math.abs(r.falsePositiveRate - 0.05)).toBeLessThan(0.02);
      expect(r.roc!.auc).toBeGreaterThan(0.98);
      expectMonotoneCurve(r.roc!);
    }
    // A near-tie between two classes is far from the peaked p̄ of either, which is what the KL detector sees.
    expect(report.detectors.kl.detectionRate).toBeGreaterThan(0.95);
    expect(report.detectors.kl.roc!.auc).toBeGreaterThan(0.98);
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
  });

  it('counts an adversarial input as correct when classified correctly or rejected', () => {
    const adv = attacked(12, 1.5 * d.marginal.std, 0.5);
    const report = detectionReport(d, inputs(adv));
    const s = scoreDetectors(d, adv.logits, 2000);
    expect(report.adversarialAccuracy).toBe(Array.from(s.predicted).filter((c, i) => c === adv.labels[i]).length / 2000);
    expect(report.adversarialAccuracy).toBeCloseTo(0.25, 2);
    for (const name of detectorNames) {
      let correct = 0;
      let detected = 0;
      for (let i = 0; i < 2000; i++) {
        if (s.predicted[i] === adv.labels[i] || s.rejected[name][i]) correct++;
        if (adv.successful[i] && s.rejected[name][i]) detected++;
      }
      expect(report.detectors[name].accuracyWithDetection).toBe(correct / 2000);
      expect(report.detectors[name].detectionRate).toBe(detected / 1500);
      expect(report.detectors[name].accuracyWithDetection).toBeGreaterThanOrEqual(report.adversarialAccuracy);
    }
  });

  it('only counts attacks on correctly classified sources as successful', () => {
    const adv = attacked(13, 0, 0.5);
    const sourceCorrect = new Uint8Array(2000).map((_, i) => (i % 2 === 0 ? 1 : 0));
    const report = detectionReport(d, { ...inputs(adv), sourceCorrect });
    expect(report.successful).toBe(Array.from(adv.successful).filter((v, i) => v && sourceCorrect[i]).length);
    const none = detectionReport(d, inputs({ ...adv, successful: new Uint8Array(2000) }));
    for (const name of detectorNames) {
      expect(none.detectors[name].detectionRate).toBeNull();
      expect(none.detectors[name].roc).toBeNull();
    }
  });

  it('takes misclassified adversarial inputs as the successful ones by default', () => {
    const adv = attacked(15, 0, 0.5);
    const report = detectionReport(d, { ...inputs(adv), successful: undefined });
    const s = scoreDetectors(d, adv.logits, 2000);
    expect(report.successful).toBe(Array.from(s.predicted).filter((c, i) => c !== adv.labels[i]).length);
    expect(report.successful).toBe(2000 - Math.round(report.adversarialAccuracy * 2000));
  });
});

describe('bad input', () => {
  const train = synthetic(14, 200, 4, 6);
  const fit = (over: Partial<{ logits: Float32Array; labels: Int32Array; numClasses: number }>, rate?: number) => () =>
    fitDetectors({ ...train, numClasses: 4, ...over }, { falsePositiveRate: rate });

  it('fits a class with no well-classified sample on what is predicted as it, and says so', () => {
    const relabelled = fitDetectors({ ...train, labels: train.labels.map((y) => (y === 3 ? 2 : y)), numClasses: 4 });
    expect(relabelled.fallbacks[3]).toMatch(/no well-classified sample among 0 with label 3: fitted on the \d+ predicted as 3/);
    expect(relabelled.logit[3].count).toBeGreaterThan(0);
    expect(Object.keys(fitDetectors({ ...train, numClasses: 4 }).fallbacks)).toEqual([]);
  });

  it('names the problem', () => {
    for (const rate of [0, 1, -0.1, 1.5, NaN]) expect(fit({}, rate)).toThrow(/falsePositiveRate must lie strictly between 0 and 1/);
    expect(fit({ labels: train.labels.subarray(1) })).toThrow(/logits has 800 values, expected 199 samples x 4 classes/);
    expect(fit({ numClasses: 1 })).toThrow(/numClasses must be an integer >= 2/);
    const nan = train.logits.slice();
    nan[4 * 7 + 2] = NaN;
    expect(fit({ logits: nan })).toThrow(/sample 7 class 2 is NaN/);
    const inf = train.logits.slice();
    inf[3] = Infinity;
    expect(fit({ logits: inf })).toThrow(/sample 0 class 3 is Infinity/);
    expect(fit({ logits: train.logits.map((v, i) => (i % 4 === 0 ? 1e3 : 0)), labels: train.labels.map(() => 1) })).toThrow(/none of the 200 training samples is classified correctly/);
    const badLabel = train.labels.slice();
    badLabel[5] = 4;
    expect(fit({ labels: badLabel })).toThrow(/label 5 is 4, outside \[0, 4\)/);

    const d = fitDetectors({ ...train, numClasses: 4 });
    expect(() => scoreDetectors(d, train.logits, 199)).toThrow(/logits has 800 values, expected 199 samples/);
    const input = { cleanLogits: train.logits, cleanLabels: train.labels, adversarialLogits: train.logits, adversarialLabels: train.labels };
    expect(() => detectionReport(d, { ...input, successful: new Uint8Array(3) })).toThrow(/successful has 3 entries, expected 200/);
    expect(() => detectionReport(d, { ...input, sourceCorrect: [1] })).toThrow(/sourceCorrect has 1 entries/);
    expect(() => detectionReport(d, { ...input, cleanLogits: new Float32Array(0), cleanLabels: new Int32Array(0) })).toThrow(/0 clean/);
    expect(() => detectionReport(d, { ...input, adversarialLogits: nan })).toThrow(/\(adversarial\).*sample 7 class 2 is NaN/);
  });
});
