import { describe, it, expect, beforeAll } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, randomRef, arbSeed } from './helpers.js';
import { type Classifier } from '../src/attacks/classifier.js';
import { fgs, perturbationNorms } from '../src/attacks/gradient.js';
import { squareAttack, squareFraction, queryStatistics, type SquareOptions } from '../src/attacks/square.js';
import { transferAttack } from '../src/attacks/transfer.js';

useGpu();

/** An affine classifier f(x) = W x + b on [N, 1, H, W] images. */
function affine(w: number[][], b: number[]): Classifier {
  const c = w.length;
  const W = T.keep(T.tensor(w.flat(), [c, w[0].length]));
  const B = T.keep(T.tensor(b, [c]));
  return { name: 'affine', numClasses: c, draws: 1, logits: (x) => T.linear(T.reshape(x, [x.shape[0], -1]), W, B) };
}

const c = 4;
const side = 6;
const d = side * side;
const n = 12;
const weights = (seed: number) => Array.from({ length: c }, (_, k) => Array.from(randomRef([d], seed + k, -1, 1).data));
const xRef = randomRef([n, 1, side, side], 5, 0.2, 0.8);
let clf: Classifier;
let x: T.Tensor;
beforeAll(() => {
  clf = affine(weights(70), new Array(c).fill(0));
  x = T.keep(T.tensor(xRef.data, xRef.shape));
});

const predictions = async (model: Classifier, images: T.Tensor) => Array.from(await T.argmax(model.logits(images, 0)).data());
/** Labels the classifier gets right, so every point starts correctly classified. */
const cleanLabels = async () => T.tensor(await predictions(clf, x), [n], 'i32');

describe('square attack', () => {
  it('L_inf stays within eps and [0, 1]; L2 stays within the eps-ball', async () => {
    const labels = await cleanLabels();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<'linf' | 'l2'>('linf', 'l2'), fc.double({ min: 0.01, max: 1, noNaN: true }), arbSeed, async (norm, scaleEps, seed) => {
        const eps = norm === 'linf' ? 0.3 * scaleEps : 3 * scaleEps;
        const res = await squareAttack(clf, x, labels, { norm, eps, queryBudget: 15, seed });
        const adv = await res.adversarial.data();
        expect(adv.every((v) => v >= 0 && v <= 1)).toBe(true);
        const norms = await perturbationNorms(x, res.adversarial);
        for (let i = 0; i < n; i++) expect(norm === 'linf' ? norms.linf[i] : norms.l2[i]).toBeLessThanOrEqual(eps * (1 + 1e-5) + 1e-6);
      }),
      { numRuns: 6 },
    );
  });

  // Large enough that the attack fools every point, small enough that the initial perturbation alone fools few.
  for (const [norm, eps] of [['linf', 0.1], ['l2', 1]] as const) {
    it(`${norm}: a generous eps and budget fools most points, within the budget`, async () => {
      const labels = await cleanLabels();
      const budget = 150;
      const res = await squareAttack(clf, x, labels, { norm, eps, queryBudget: budget, seed: 3 });
      const pred = await predictions(clf, res.adversarial);
      const truth = await labels.data();
      const fooled = pred.map((p, i) => (p !== truth[i] ? 1 : 0));
      expect(Array.from(res.success)).toEqual(fooled); // the attack's success agrees with the final predictions
      expect(fooled.reduce((a: number, v) => a + v, 0)).toBeGreaterThanOrEqual(0.9 * n);
      expect(res.queries.some((q) => q > 10)).toBe(true); // it needed its iterations
      for (let i = 0; i < n; i++) {
        expect(res.queries[i]).toBeGreaterThanOrEqual(1);
        expect(res.queries[i]).toBeLessThanOrEqual(budget);
        if (!res.success[i]) expect(res.queries[i]).toBe(budget); // only a fooled point stops early
      }
      const stats = queryStatistics(res.queries, res.success);
      const used = Array.from(res.queries).filter((_, i) => res.success[i]);
      expect(stats.mean).toBeCloseTo(used.reduce((a, v) => a + v, 0) / used.length, 10);
      expect(stats.median).toBeGreaterThanOrEqual(Math.min(...used));
      expect(stats.median).toBeLessThanOrEqual(Math.max(...used));
      expect(stats.successRate).toBeCloseTo(used.length / n, 10);
    });
  }

  it('points misclassified at the start use exactly one query', async () => {
    const truth = await predictions(clf, x);
    // Half the labels are wrong by construction; with eps = 0 nothing can change, so the rest use the whole budget.
    const labelsArr = truth.map((p, i) => (i % 2 ? (p + 1) % c : p));
    const labels = T.tensor(labelsArr, [n], 'i32');
    for (const norm of ['linf', 'l2'] as const) {
      const res = await squareAttack(clf, x, labels, { norm, eps: 0, queryBudget: 7, seed: 1 });
      expect(Array.from(res.queries)).toEqual(labelsArr.map((_, i) => (i % 2 ? 1 : 7)));
      expect(Array.from(res.success)).toEqual(labelsArr.map((_, i) => i % 2));
      expect(Array.from(await res.adversarial.data())).toEqual(Array.from(await x.data()));
    }
    // A point wrong by a wide margin stays wrong after the initial perturbation too.
    const biased = affine(weights(70), [5, 0, 0, 0]);
    const res = await squareAttack(biased, x, T.tensor(new Array(n).fill(1), [n], 'i32'), { norm: 'linf', eps: 0.05, queryBudget: 20, seed: 2 });
    expect(Array.from(res.queries)).toEqual(new Array(n).fill(1));
  });

  it('same seed, same result; a different seed differs', async () => {
    const labels = await cleanLabels();
    for (const norm of ['linf', 'l2'] as const) {
      const opts = (seed: number): SquareOptions => ({ norm, eps: norm === 'linf' ? 0.05 : 0.5, queryBudget: 10, seed });
      const [a, b, other] = [await squareAttack(clf, x, labels, opts(1)), await squareAttack(clf, x, labels, opts(1)), await squareAttack(clf, x, labels, opts(2))];
      const [da, db, dOther] = await T.readAll([a.adversarial, b.adversarial, other.adversarial]);
      expect(Array.from(db)).toEqual(Array.from(da));
      expect(Array.from(b.queries)).toEqual(Array.from(a.queries));
      expect(Array.from(dOther)).not.toEqual(Array.from(da));
    }
  });

  it('the window fraction halves on the paper schedule', () => {
    expect(squareFraction(0.05, 0, 1000)).toBe(0.05);
    expect(squareFraction(0.05, 3, 1000)).toBe(0.025); // 30 on the 10,000 scale
    expect(squareFraction(0.05, 999, 1000)).toBe(0.05 / 512);
    const schedule = Array.from({ length: 100 }, (_, i) => squareFraction(0.1, i, 100));
    for (let i = 1; i < schedule.length; i++) expect(schedule[i]).toBeLessThanOrEqual(schedule[i - 1]);
    expect(queryStatistics([5, 1, 9, 3], [1, 1, 0, 1])).toEqual({ mean: 3, median: 3, successRate: 0.75 });
    expect(queryStatistics([2, 8], [1, 1]).median).toBe(5);
    expect(queryStatistics([2], [0]).mean).toBeNaN();
  });

  it('rejects bad options, images and labels, naming the attack and the option', async () => {
    const labels = await cleanLabels();
    const base: SquareOptions = { norm: 'linf', eps: 0.1, queryBudget: 5, seed: 1 };
    await expect(squareAttack(clf, x, labels, { ...base, eps: -0.1 })).rejects.toThrow(/square: eps must be a finite number >= 0, got -0.1/);
    await expect(squareAttack(clf, x, labels, { ...base, eps: NaN })).rejects.toThrow(/square: eps must be a finite number >= 0/);
    await expect(squareAttack(clf, x, labels, { ...base, queryBudget: 0 })).rejects.toThrow(/square: queryBudget must be a positive integer, got 0/);
    await expect(squareAttack(clf, x, labels, { ...base, queryBudget: 2.5 })).rejects.toThrow(/square: queryBudget must be a positive integer/);
    await expect(squareAttack(clf, x, labels, { ...base, pInit: 0 })).rejects.toThrow(/square: pInit must lie in \(0, 1\], got 0/);
    await expect(squareAttack(clf, x, labels, { ...base, norm: 'l1' as 'linf' })).rejects.toThrow(/square: norm must be 'linf' or 'l2', got 'l1'/);
    await expect(squareAttack(clf, x, labels, { ...base, seed: -1 })).rejects.toThrow(/square: seed must be an integer/);
    await expect(squareAttack(clf, T.tensor([1.5], [1, 1, 1, 1]), T.tensor([0], [1], 'i32'), base)).rejects.toThrow(/square: image values must lie in \[0, 1\], got range \[1.5, 1.5\]/);
    await expect(squareAttack(clf, x, T.tensor([0], [1], 'i32'), base)).rejects.toThrow(/square: labels must be i32 \[12\]/);
    await expect(squareAttack(clf, x, T.tensor(new Array(n).fill(c), [n], 'i32'), base)).rejects.toThrow(/square: labels must lie in \[0, 4\), got 4/);
  });
});

describe('transfer attack', () => {
  const craft = (eps: number) => (model: Classifier, images: T.Tensor, labels: T.Tensor) => fgs(model, images, labels, { eps });
  const fooledRate = (pred: Int32Array, truth: ArrayLike<number>) => Array.from(pred).filter((p, i) => p !== truth[i]).length / pred.length;

  it('an identical substitute transfers perfectly; an unrelated one transfers less', async () => {
    const labels = await cleanLabels();
    const truth = await labels.data();
    const twinModel = affine(weights(70), new Array(c).fill(0));
    const twin = await transferAttack(twinModel, clf, x, labels, craft(0.3));
    expect(Array.from(twin.targetPredictions)).toEqual(Array.from(twin.substitutePredictions));
    expect(fooledRate(twin.targetPredictions, truth)).toBe(1);
    expect(Array.from(twin.targetPredictions)).toEqual(await predictions(clf, twin.adversarial));

    // At a smaller eps the twin still fools the target as often as itself; an unrelated substitute does not.
    const twinSmall = await transferAttack(twinModel, clf, x, labels, craft(0.1));
    const stranger = await transferAttack(affine(weights(900), new Array(c).fill(0)), clf, x, labels, craft(0.1));
    const twinRate = fooledRate(twinSmall.targetPredictions, truth);
    expect(twinRate).toBe(fooledRate(twinSmall.substitutePredictions, truth));
    expect(fooledRate(stranger.targetPredictions, truth)).toBeLessThan(twinRate);
    expect(fooledRate(stranger.targetPredictions, truth)).toBeLessThan(fooledRate(stranger.substitutePredictions, truth));
  });

  it('rejects a substitute with a different number of classes', async () => {
    const labels = await cleanLabels();
    await expect(transferAttack(affine([[1], [0]], [0, 0]), clf, x, labels, craft(0.1))).rejects.toThrow(/transfer: substitute 'affine' has 2 classes but target 'affine' has 4/);
  });
});
