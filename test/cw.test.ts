// Carlini-Wagner L2 against affine classifiers, where the minimal L2 adversarial is known in closed form.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, randomRef, arbSeed } from './helpers.js';
import { cw } from '../src/attacks/cw.js';
import { affine } from './fixtures.js';

useGpu();


const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => s + v * b[i], 0);
const norm = (a: ArrayLike<number>) => Math.sqrt(dot(a, a));
const row = (data: ArrayLike<number>, i: number, d: number) => Array.from(data).slice(i * d, (i + 1) * d);

/** Logits in float64 on the host, and max_{j != y} Z_j - Z_y (> 0: misclassified). */
function margin(clf: { w: number[][]; b: number[] }, x: number[], y: number): number {
  const z = clf.w.map((r, k) => dot(r, x) + clf.b[k]);
  return Math.max(...z.filter((_, k) => k !== y)) - z[y];
}

/**
 * Two classes with logits [0, w.x + b], the boundary through the centre of the box, and n images at chosen
 * distances from it on alternating sides, each labelled with its clean class. x* is the nearest boundary point.
 * Every c above c* = 2 dist / ||w|| has its minimum on the boundary; below it the minimum stops short of it.
 */
function twoClassProblem(seed: number, d: number, dists: number[], wNorm?: number) {
  const raw = Array.from(randomRef([d], seed, -5, 5).data);
  const w = wNorm === undefined ? raw : raw.map((v) => (v * wNorm) / norm(raw));
  const nw = norm(w);
  const b = -dot(w, w.map(() => 0.5));
  const clf = affine([w.map(() => 0), w], [0, b]);
  const xs: number[][] = [];
  const nearest: number[][] = [];
  const labels: number[] = [];
  dists.forEach((dist, i) => {
    const u = Array.from(randomRef([d], seed + 100 + i, 0.4, 0.6).data);
    const g = dot(w, u) + b;
    const p = u.map((v, k) => v - (g / nw ** 2) * w[k]);
    const side = i % 2 ? 1 : -1;
    xs.push(p.map((v, k) => v + (side * dist * w[k]) / nw));
    nearest.push(p);
    labels.push(side > 0 ? 1 : 0);
  });
  const inside = (v: number[][], lo: number) => v.every((r) => r.every((e) => e >= lo && e <= 1 - lo));
  return { clf, w, nw, xs, nearest, labels, inBox: inside(xs, 0.02) && inside(nearest, 0.02) };
}

const batch = (xs: number[][]) => T.tensor(xs.flat(), [xs.length, 1, 1, xs[0].length]);
const labelTensor = (labels: number[]) => T.tensor(labels, [labels.length], 'i32');

describe('cw', () => {
  it('on a linear two-class model, finds the closed-form minimal L2 distance |w.x + b| / ||w|| (5% + 1e-3)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 4, max: 9 }), arbSeed, async (d, seed) => {
        const dists = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3];
        const p = twoClassProblem(seed, d, dists);
        fc.pre(p.inBox);
        // The closed form, recomputed from the images: the problem is what the test claims it is.
        p.xs.forEach((x, i) => expect(Math.abs(dot(p.w, x) + p.clf.b[1]) / p.nw).toBeCloseTo(dists[i], 5));
        const calls: string[] = [];
        const res = await cw(p.clf, batch(p.xs), labelTensor(p.labels), {
          iterations: 200,
          lr: 0.01,
          binarySearchSteps: 4,
          initialConst: 1,
          onIteration: (s, it) => calls.push(`${s}:${it}`),
        });
        expect(calls.length).toBe(4 * 200);
        expect(calls[0]).toBe('0:0');
        expect(calls[calls.length - 1]).toBe('3:199');
        const adv = await res.adversarial.data();
        p.xs.forEach((x, i) => {
          const a = row(adv, i, d);
          const l2 = norm(a.map((v, k) => v - x[k]));
          expect(res.success[i]).toBe(1);
          expect(margin(p.clf, a, p.labels[i])).toBeGreaterThan(0);
          expect(res.l2[i]).toBeCloseTo(l2, 4);
          expect(Math.abs(l2 - dists[i])).toBeLessThanOrEqual(0.05 * dists[i] + 1e-3);
          // Beyond the boundary and within 5% of its distance, the point lies near the foot of the perpendicular
          // (Pythagoras: the sideways part is at most sqrt(1.05^2 - 1) = 0.32 of the distance).
          expect(norm(a.map((v, k) => v - p.nearest[i][k]))).toBeLessThanOrEqual(0.33 * dists[i] + 2e-3);
          expect(res.const[i]).toBeGreaterThan(0);
        });
        res.adversarial.dispose();
      }),
      { numRuns: 2 },
    );
  }, 120_000);

  it('success only grows with c (one search step per c); failures return the clean image', async () => {
    const dists = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3];
    const p = twoClassProblem(7, 6, dists);
    expect(p.inBox).toBe(true);
    const cs = [1e-4, 1e-3, 1e-2, 1e-1, 1];
    const sets: Uint8Array[] = [];
    for (const c of cs) {
      const res = await cw(p.clf, batch(p.xs), labelTensor(p.labels), { iterations: 150, lr: 0.01, binarySearchSteps: 1, initialConst: c });
      const adv = await res.adversarial.data();
      p.xs.forEach((x, i) => {
        const a = row(adv, i, 6);
        expect(margin(p.clf, a, p.labels[i]) > 0 ? 1 : 0).toBe(res.success[i]);
        if (res.success[i]) {
          expect(res.const[i]).toBeCloseTo(c, 6);
        } else {
          expect(a).toEqual(Array.from(Float32Array.from(x)));
          expect(res.l2[i]).toBe(Infinity);
          expect(res.const[i]).toBeNaN();
        }
      });
      res.adversarial.dispose();
      sets.push(res.success);
    }
    // Both ends are reached, so the growth in between is what is tested: no image succeeds at the smallest c (c* for
    // these is 2 dist / ||w|| >= 0.008), every image succeeds at the largest.
    expect(Array.from(sets[0])).toEqual(dists.map(() => 0));
    expect(Array.from(sets[sets.length - 1])).toEqual(dists.map(() => 1));
    for (let k = 1; k < sets.length; k++) {
      sets[k - 1].forEach((s, i) => {
        if (s) expect(sets[k][i], `image ${i}: succeeds at c = ${cs[k - 1]} but not at ${cs[k]}`).toBe(1);
      });
    }
  }, 120_000);

  it('the binary search grows c tenfold until it succeeds, then bisects', async () => {
    // ||w|| = 10 puts c* at 0.03 and 0.003: a factor of about 3 from the nearest c the search tries.
    const dists = [0.15, 0.015];
    const p = twoClassProblem(5, 6, dists, 10);
    expect(p.inBox).toBe(true);
    const res = await cw(p.clf, batch(p.xs), labelTensor(p.labels), { iterations: 150, lr: 0.01, binarySearchSteps: 4, initialConst: 1e-4 });
    // Image 0 tries 1e-4, 1e-3, 1e-2 (all short of the boundary) and 0.1; image 1 succeeds first at 1e-2, then
    // tries (1e-3 + 1e-2) / 2.
    expect(Array.from(res.success)).toEqual([1, 1]);
    expect(res.const[0]).toBeCloseTo(0.1, 6);
    expect([0.01, 0.0055].some((c) => Math.abs(res.const[1] - c) < 1e-7), `const ${res.const[1]}`).toBe(true);
    expect(Math.abs(res.l2[0] - dists[0])).toBeLessThanOrEqual(0.05 * dists[0] + 1e-3);
    res.adversarial.dispose();
  }, 60_000);

  it('keeps every output in [0, 1], also where pixels start at 0 and 1 and the gradient pushes them out', async () => {
    // Decreasing the label's margin wants pixels 0, 2 lower (they are at 0) and pixels 1, 3 higher (at 1).
    const w = [-3, 3, -3, 3, 1, 1];
    const clf = affine([w.map(() => 0), w], [0, -dot(w, [0, 1, 0, 1, 0.5, 0.5]) - 0.5]);
    const xs = [
      [0, 1, 0, 1, 0.5, 0.5],
      [0, 1, 0, 1, 0.6, 0.4],
    ];
    const labels = xs.map((x) => (dot(w, x) + clf.b[1] > 0 ? 1 : 0));
    expect(labels).toEqual([0, 0]);
    const res = await cw(clf, batch(xs), labelTensor(labels), { iterations: 60, lr: 1, binarySearchSteps: 2, initialConst: 100 });
    const adv = Array.from(await res.adversarial.data());
    for (const v of adv) {
      expect(Number.isFinite(v)).toBe(true);
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThanOrEqual(1);
    }
    xs.forEach((x, i) => {
      const a = row(adv, i, 6);
      expect(res.success[i]).toBe(1);
      expect(margin(clf, a, labels[i])).toBeGreaterThan(0);
      // The pixels at a bound can only stay there; the attack moves the free ones.
      for (const k of [0, 1, 2, 3]) expect(Math.abs(a[k] - x[k])).toBeLessThan(1e-4);
    });
    res.adversarial.dispose();
  }, 60_000);

  it('kappa > 0 leaves a margin of at least kappa, and on the two-class model costs (|w.x + b| + kappa) / ||w||', async () => {
    const kappa = 0.5;
    const dists = [0.05, 0.1, 0.15, 0.2];
    const p = twoClassProblem(11, 5, dists);
    expect(p.inBox).toBe(true);
    const res = await cw(p.clf, batch(p.xs), labelTensor(p.labels), { iterations: 200, lr: 0.01, binarySearchSteps: 3, initialConst: 1, kappa });
    const adv = await res.adversarial.data();
    p.xs.forEach((x, i) => {
      const a = row(adv, i, 5);
      expect(res.success[i]).toBe(1);
      expect(margin(p.clf, a, p.labels[i])).toBeGreaterThanOrEqual(kappa - 1e-4);
      const want = dists[i] + kappa / p.nw;
      expect(Math.abs(res.l2[i] - want)).toBeLessThanOrEqual(0.05 * want + 1e-3);
    });
    res.adversarial.dispose();

    // Three classes with random weights, all logits equal at the centre of the box and the images near it: the
    // margin holds against the runner-up class, whichever it is.
    const d = 4;
    const w3 = [0, 1, 2].map((k) => Array.from(randomRef([d], 30 + k, -4, 4).data));
    const clf3 = affine(
      w3,
      w3.map((r) => -dot(r, r.map(() => 0.5))),
    );
    const xs = [0, 1, 2, 3].map((i) => Array.from(randomRef([d], 50 + i, 0.4, 0.6).data));
    const labels = xs.map((x) => {
      const z = clf3.w.map((r, k) => dot(r, x) + clf3.b[k]);
      return z.indexOf(Math.max(...z));
    });
    const res3 = await cw(clf3, batch(xs), labelTensor(labels), { iterations: 150, lr: 0.02, binarySearchSteps: 1, initialConst: 10, kappa: 1 });
    const adv3 = await res3.adversarial.data();
    xs.forEach((_, i) => {
      expect(res3.success[i]).toBe(1);
      expect(margin(clf3, row(adv3, i, d), labels[i])).toBeGreaterThanOrEqual(1 - 1e-4);
    });
    res3.adversarial.dispose();
  }, 120_000);

  it('abortEarly ends a search step once the loss stalls, and still returns a successful adversarial', async () => {
    const p = twoClassProblem(3, 4, [0.1, 0.2]);
    expect(p.inBox).toBe(true);
    let calls = 0;
    const res = await cw(p.clf, batch(p.xs), labelTensor(p.labels), { iterations: 500, lr: 0.05, initialConst: 10, abortEarly: true, onIteration: () => calls++ });
    expect(calls).toBeLessThan(500);
    expect(Array.from(res.success)).toEqual([1, 1]);
    res.adversarial.dispose();
  }, 60_000);

  it('rejects bad options and inputs, naming cw, the option and its value', async () => {
    const clf = affine([[1], [-1]], [0, 0]);
    const x = T.tensor([0.5], [1, 1, 1, 1]);
    const y = T.tensor([0], [1], 'i32');
    await expect(cw(clf, x, y, { kappa: -1 })).rejects.toThrow(/cw: kappa must be a finite number >= 0, got -1/);
    await expect(cw(clf, x, y, { initialConst: 0 })).rejects.toThrow(/cw: initialConst must be a finite number > 0, got 0/);
    await expect(cw(clf, x, y, { initialConst: -2 })).rejects.toThrow(/cw: initialConst must be a finite number > 0, got -2/);
    await expect(cw(clf, x, y, { iterations: 0 })).rejects.toThrow(/cw: iterations must be an integer >= 1, got 0/);
    await expect(cw(clf, x, y, { iterations: 2.5 })).rejects.toThrow(/cw: iterations must be an integer >= 1, got 2.5/);
    await expect(cw(clf, x, y, { binarySearchSteps: 0 })).rejects.toThrow(/cw: binarySearchSteps must be an integer >= 1, got 0/);
    await expect(cw(clf, x, y, { lr: 0 })).rejects.toThrow(/cw: lr must be a finite number > 0, got 0/);
    await expect(cw(clf, T.tensor([1.5], [1, 1, 1, 1]), y)).rejects.toThrow(/cw: image values must lie in \[0, 1\]/);
    await expect(cw(clf, x, T.tensor([0, 1], [2], 'i32'))).rejects.toThrow(/cw: labels must be i32 \[1\]/);
    await expect(cw(clf, x, T.tensor([2], [1], 'i32'))).rejects.toThrow(/cw: label 0 is 2, outside \[0, 2\)/);
  });
});
