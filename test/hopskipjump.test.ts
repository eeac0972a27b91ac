import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, randomRef, arbSeed } from './helpers.js';
import { type Classifier } from '../src/attacks/classifier.js';
import { hopSkipJump, binarySearchSteps, type HopSkipJumpOptions } from '../src/attacks/hopskipjump.js';
import { affine } from './fixtures.js';

useGpu();


/**
 * Counts the rows a classifier is asked for, in total and per image of the attacked batch (row c * m + j of a
 * call with `replicas` copies and rows `indices` belongs to image indices[j]).
 */
function counting(inner: Classifier, n: number): Classifier & { total: number; perImage: Int32Array; calls: number; widest: number } {
  const counter = {
    name: `counting ${inner.name}`,
    numClasses: inner.numClasses,
    draws: inner.draws,
    total: 0,
    calls: 0,
    widest: 0,
    perImage: new Int32Array(n),
    logits(x: T.Tensor, draw: number, replicas = 1, rows?: { indices: number[]; of: number }) {
      const m = x.shape[0];
      counter.total += m;
      counter.calls++;
      counter.widest = Math.max(counter.widest, m);
      if (!rows || rows.of !== n || rows.indices.length * replicas !== m) throw new Error('counting: every call must name the rows it evaluates');
      for (let r = 0; r < m; r++) counter.perImage[rows.indices[r % rows.indices.length]]++;
      return inner.logits(x, draw, replicas, rows);
    },
  };
  return counter;
}

const dot = (a: number[], b: ArrayLike<number>) => a.reduce((s, v, i) => s + v * b[i], 0);
const logitsOf = (clf: { w: number[][]; b: number[] }, x: ArrayLike<number>) => clf.w.map((row, k) => dot(row, x) + clf.b[k]);
const predict = (clf: { w: number[][]; b: number[] }, x: ArrayLike<number>) => {
  const f = logitsOf(clf, x);
  return f.indexOf(Math.max(...f));
};

/** Closed form for an affine classifier: the L2 distance from x to the plane of each face of its label's region. */
function faceDistances(clf: { w: number[][]; b: number[] }, x: ArrayLike<number>): number[] {
  const f = logitsOf(clf, x);
  const l = f.indexOf(Math.max(...f));
  return clf.w.flatMap((row, k) => (k === l ? [] : [Math.abs(f[k] - f[l]) / Math.hypot(...row.map((v, i) => v - clf.w[l][i]))]));
}

/** The nearest face: the distance from x to the closest point of another class. */
const boundaryDistance = (clf: { w: number[][]; b: number[] }, x: ArrayLike<number>) => Math.min(...faceDistances(clf, x));

/**
 * An affine model of c classes on D = 16 and n images in the middle of the box, each with its nearest face close
 * enough that the closest adversarial point lies inside [0, 1] (so the closed form is the attack's optimum).
 */
function problem(seed: number, n: number, c = 3) {
  const d = 16;
  const wAll = randomRef([c, d], seed, -1, 1).data;
  const w = Array.from({ length: c }, (_, k) => Array.from(wAll.subarray(k * d, (k + 1) * d)));
  const model = { w, b: new Array(c).fill(0) };
  const xs: number[] = [];
  const truth: number[] = [];
  const pool = randomRef([20000, d], seed + 100, 0.35, 0.65).data;
  for (let s = 0; xs.length < n * d; s++) {
    if (s === 20000) throw new Error(`problem: too few points near a face for seed ${seed}`);
    const xi = Array.from(pool.subarray(s * d, (s + 1) * d));
    const dist = boundaryDistance(model, xi);
    if (dist > 0.02 && dist < 0.25) {
      xs.push(...xi);
      truth.push(predict(model, xi));
    }
  }
  const clf = affine(w, model.b);
  return { clf, d, xs, truth, x: T.tensor(xs, [n, 1, 1, d]), labels: T.tensor(truth, [n], 'i32') };
}

const run = (clf: Classifier, x: T.Tensor, labels: T.Tensor, opts: Partial<HopSkipJumpOptions>) =>
  hopSkipJump(clf, x, labels, { queryBudget: 1000, seed: 1, ...opts });

describe('hopskipjump on an affine classifier', () => {
  /** Runs the attack on p at each budget; the L2 distance of each result over the nearest face's, per budget. */
  async function ratiosOver(p: ReturnType<typeof problem>, budgets: number[]): Promise<number[][]> {
    const n = p.truth.length;
    const want = Array.from({ length: n }, (_, i) => boundaryDistance(p.clf, p.xs.slice(i * p.d, (i + 1) * p.d)));
    const ratios: number[][] = [];
    for (const budget of budgets) {
      const res = await run(p.clf, p.x, p.labels, { queryBudget: budget, seed: 5 });
      const adv = await res.adversarial.data();
      const r: number[] = [];
      for (let i = 0; i < n; i++) {
        const a = adv.slice(i * p.d, (i + 1) * p.d);
        expect(res.success[i]).toBe(1);
        expect(predict(p.clf, a)).not.toBe(p.truth[i]); // adversarial, as reported
        expect(res.l2[i]).toBeCloseTo(Math.hypot(...Array.from(a, (v, k) => v - p.xs[i * p.d + k])), 5);
        expect(res.queries[i]).toBeLessThanOrEqual(budget);
        // No adversarial point is closer than the nearest face.
        expect(res.l2[i]).toBeGreaterThanOrEqual(want[i] * (1 - 1e-4));
        r.push(res.l2[i] / want[i]);
      }
      ratios.push(r);
    }
    return ratios;
  }
  const mean = (v: number[]) => v.reduce((s, e) => s + e, 0) / v.length;

  it('two classes: converges toward the closed-form boundary distance, closer with a larger budget', async () => {
    const [few, many] = await ratiosOver(problem(11, 6, 2), [300, 4000]);
    expect(mean(many)).toBeLessThan(mean(few));
    expect(mean(few)).toBeGreaterThan(1.02); // 300 queries are not enough, so the budget is what brings it close
    for (const r of many) expect(r).toBeLessThan(1.05);
  });

  it('three classes: converges to a face, which may be a farther one (a local minimum of the distance)', async () => {
    const p = problem(13, 6);
    const [few, many] = await ratiosOver(p, [300, 4000]);
    expect(mean(many)).toBeLessThan(mean(few));
    many.forEach((r, i) => {
      const faces = faceDistances(p.clf, p.xs.slice(i * p.d, (i + 1) * p.d));
      const nearest = Math.min(...faces);
      expect(Math.min(...faces.map((f) => Math.abs(r * nearest - f) / f))).toBeLessThan(0.03);
    });
  });

  it('stays in [0, 1]: where the box blocks the nearest face, it converges to the box-constrained optimum', async () => {
    // Class 1 where the pixels sum past 5.5. From x (sum 5.2, half its pixels at 1), the unconstrained nearest point
    // raises all 8 pixels by 0.0375 (L2 0.106); inside the box only the 4 free ones can rise, by 0.075 (L2 0.15).
    const d = 8;
    const clf = affine([new Array(d).fill(0), new Array(d).fill(1)], [0, -5.5]);
    const xs = [1, 1, 1, 1, 0.3, 0.3, 0.3, 0.3];
    const x = T.tensor([...xs, ...xs], [2, 1, 1, d]);
    const res = await run(clf, x, T.tensor([0, 0], [2], 'i32'), { queryBudget: 3000, seed: 8 });
    const adv = await res.adversarial.data();
    expect(adv.every((v) => v >= 0 && v <= 1)).toBe(true);
    for (let i = 0; i < 2; i++) {
      expect(res.success[i]).toBe(1);
      expect(predict(clf, adv.slice(i * d, (i + 1) * d))).toBe(1);
      expect(res.l2[i]).toBeGreaterThanOrEqual(0.15 * (1 - 1e-4));
      expect(res.l2[i]).toBeLessThan(0.15 * 1.05);
    }
  });

  it('counts every row it asks the classifier for, per image, and never exceeds the budget', async () => {
    const n = 5;
    const p = problem(23, n);
    // Image 4 carries a wrong label: misclassified from the start.
    const truth = [...p.truth.slice(0, 4), (p.truth[4] + 1) % 3];
    const labels = T.tensor(truth, [n], 'i32');
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 700 }), fc.integer({ min: 5, max: 60 }), fc.integer({ min: 7, max: 40 }), arbSeed, async (budget, initNumEvals, chunkRows, seed) => {
        const clf = counting(p.clf, n);
        const opts = { queryBudget: budget, initNumEvals, maxNumEvals: 90, chunkRows, seed };
        const res = await hopSkipJump(clf, p.x, labels, opts);
        expect(Array.from(res.queries)).toEqual(Array.from(clf.perImage));
        expect(res.queries.reduce((s, q) => s + q, 0)).toBe(clf.total);
        expect(clf.widest).toBeLessThanOrEqual(chunkRows);
        const adv = await res.adversarial.data();
        expect(adv.every((v) => v >= 0 && v <= 1)).toBe(true);
        const reserve = 1 + binarySearchSteps(1 / p.d ** 1.5);
        for (let i = 0; i < n; i++) {
          expect(res.queries[i]).toBeGreaterThanOrEqual(1);
          expect(res.queries[i]).toBeLessThanOrEqual(budget);
          const a = adv.slice(i * p.d, (i + 1) * p.d);
          if (i === 4) {
            expect(res.queries[i]).toBe(1);
            expect(res.success[i]).toBe(1);
            expect(res.l2[i]).toBe(0);
            expect(Array.from(a)).toEqual(p.xs.slice(i * p.d, (i + 1) * p.d).map(Math.fround));
          } else if (res.success[i]) {
            expect(predict(p.clf, a)).not.toBe(truth[i]);
            // An image stops only once what is left cannot pay for another iteration.
            expect(res.queries[i]).toBeGreaterThanOrEqual(budget - reserve);
          } else {
            // No starting point: the whole budget went on the search for one.
            expect(res.queries[i]).toBe(budget);
            expect(res.l2[i]).toBe(Infinity);
          }
        }
      }),
      { numRuns: 12 },
    );
  });

  it('under expectation over noise, a query averages every draw and counts once', async () => {
    const n = 3;
    const p = problem(29, n);
    const draws: number[] = [];
    const twoDraws: Classifier = {
      ...p.clf,
      draws: 2,
      logits: (x, draw, replicas, rows) => {
        draws.push(draw);
        return p.clf.logits(x, draw, replicas, rows);
      },
    };
    const clf = counting(twoDraws, n);
    const res = await hopSkipJump(clf, p.x, p.labels, { queryBudget: 250, seed: 4 });
    expect(Array.from(clf.perImage)).toEqual(Array.from(res.queries, (q) => 2 * q));
    expect(res.queries.every((q) => q > 200 && q <= 250)).toBe(true);
    // Draws 2c and 2c + 1 in call c: fresh ones every call.
    expect(draws).toEqual(Array.from({ length: draws.length }, (_, k) => k));
  });

  it('an image with no misclassified noise image is returned clean, after maxInitTrials tries', async () => {
    const d = 6;
    const clf = counting(affine([new Array(d).fill(0), new Array(d).fill(0)], [1, 0]), 2); // always class 0
    const xs = Array.from(randomRef([2 * d], 3, 0.2, 0.8).data);
    const x = T.tensor(xs, [2, 1, 1, d]);
    const labels = T.tensor([0, 1], [2], 'i32');
    for (const [budget, want] of [[1000, 1 + 40], [20, 20]]) {
      const res = await hopSkipJump(clf, x, labels, { queryBudget: budget, maxInitTrials: 40, seed: 2 });
      expect(Array.from(res.success)).toEqual([0, 1]);
      expect(Array.from(res.queries)).toEqual([want, 1]);
      expect(res.l2[0]).toBe(Infinity);
      expect(res.l2[1]).toBe(0);
      expect(Array.from(await res.adversarial.data())).toEqual(xs.map(Math.fround));
    }
  });

  it('the same seed gives the same result; another seed another', async () => {
    const p = problem(31, 3);
    const opts = { queryBudget: 600, seed: 9 };
    const a = await run(p.clf, p.x, p.labels, opts);
    const b = await run(p.clf, p.x, p.labels, opts);
    const c = await run(p.clf, p.x, p.labels, { ...opts, seed: 10 });
    expect(Array.from(await b.adversarial.data())).toEqual(Array.from(await a.adversarial.data()));
    expect(Array.from(b.queries)).toEqual(Array.from(a.queries));
    expect(Array.from(b.l2)).toEqual(Array.from(a.l2));
    expect(Array.from(await c.adversarial.data())).not.toEqual(Array.from(await a.adversarial.data()));
  });

  it('reports progress after every iteration and stops at maxIterations', async () => {
    const p = problem(41, 4);
    const seen: [number, number][] = [];
    const res = await run(p.clf, p.x, p.labels, { queryBudget: 100000, maxIterations: 3, onIteration: (t, active) => seen.push([t, active]) });
    expect(seen.map(([t]) => t)).toEqual([1, 2, 3]);
    expect(seen.every(([, active]) => active === 4)).toBe(true);
    // 100 * sqrt(t) samples per iteration: the budget is far from spent.
    for (const q of res.queries) expect(q).toBeLessThan(1000);
    const few: number[] = [];
    await run(p.clf, p.x, p.labels, { queryBudget: 400, onIteration: (_, active) => few.push(active) });
    expect(few[few.length - 1]).toBe(0); // every image ran out of budget
    expect(few.every((v, k) => k === 0 || v <= few[k - 1])).toBe(true);
  });

  it('rejects bad options and inputs, naming them', async () => {
    const p = problem(51, 2);
    const bad: [Partial<HopSkipJumpOptions>, RegExp][] = [
      [{ queryBudget: 0 }, /hopskipjump: queryBudget must be a positive integer/],
      [{ queryBudget: 2.5 }, /hopskipjump: queryBudget/],
      [{ gamma: -1 }, /hopskipjump: gamma must be a finite number > 0/],
      [{ gamma: 0 }, /hopskipjump: gamma/],
      [{ initNumEvals: 0 }, /hopskipjump: initNumEvals/],
      [{ maxNumEvals: 1.5 }, /hopskipjump: maxNumEvals/],
      [{ maxIterations: 0 }, /hopskipjump: maxIterations/],
      [{ chunkRows: 0 }, /hopskipjump: chunkRows/],
      [{ seed: -1 }, /hopskipjump: seed/],
    ];
    for (const [opts, msg] of bad) await expect(run(p.clf, p.x, p.labels, opts)).rejects.toThrow(msg);
    await expect(run(p.clf, p.x, T.tensor([0, 3], [2], 'i32'), {})).rejects.toThrow(/hopskipjump: labels must lie in \[0, 3\)/);
    await expect(run(p.clf, T.affine(p.x, 1, 1), p.labels, {})).rejects.toThrow(/hopskipjump: image values must lie in \[0, 1\]/);
  });
});
