import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, randomRef, arbSeed } from './helpers.js';
import { type Classifier, lossGradient } from '../src/attacks/classifier.js';
import { fgs, iterativeAttack, perturbationNorms } from '../src/attacks/gradient.js';
import { deepfool } from '../src/attacks/deepfool.js';
import { affine } from './fixtures.js';

useGpu();


const dot = (a: number[], b: ArrayLike<number>) => a.reduce((s, v, i) => s + v * b[i], 0);
const pnorm = (v: number[], p: number) => (p === Infinity ? Math.max(...v.map(Math.abs)) : Math.pow(v.reduce((s, e) => s + Math.abs(e) ** p, 0), 1 / p));

/** Closed form for an affine classifier: the nearest face of the label's region in L_p, and the distance to it. */
function nearestFace(clf: { w: number[][]; b: number[] }, x: number[], p: number) {
  const q = p === Infinity ? 1 : p / (p - 1);
  const f = clf.w.map((row, k) => dot(row, x) + clf.b[k]);
  const l = f.indexOf(Math.max(...f));
  let best = { k: -1, dist: Infinity };
  clf.w.forEach((row, k) => {
    if (k === l) return;
    const wk = row.map((v, i) => v - clf.w[l][i]);
    const dist = Math.abs(f[k] - f[l]) / pnorm(wk, q);
    if (dist < best.dist) best = { k, dist };
  });
  return { label: l, ...best, f };
}

describe('DeepFool on an affine classifier is exact', () => {
  for (const p of [2, Infinity, 3]) {
    it(`p = ${p}: one iteration, perturbation = closed-form distance, class = brute-force nearest face`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 2, max: 6 }), fc.integer({ min: 2, max: 9 }), arbSeed, async (c, d, seed) => {
          const w = Array.from({ length: c }, (_, k) => Array.from(randomRef([d], seed + k, -20, 20).data));
          const b = Array.from(randomRef([c], seed + 99, -1, 1).data);
          const x = Array.from(randomRef([d], seed + 7, 0.4, 0.6).data);
          const clf = affine(w, b);
          const want = nearestFace(clf, x, p);
          fc.pre(want.dist < 0.05); // stays inside [0, 1], so clipping plays no part
          const res = await deepfool(clf, T.tensor(x, [1, 1, 1, d]), { p, overshoot: 0.02 });
          const adv = Array.from(await res.adversarial.data());
          const r = adv.map((v, i) => (v - x[i]) / 1.02);
          expect(res.iterations[0]).toBe(1);
          expect(res.flipped[0]).toBe(1);
          expect(res.originalLabels[0]).toBe(want.label);
          expect(pnorm(r, p)).toBeCloseTo(want.dist, 4);
          // x + r lies on the chosen face: f_k = f_l there.
          const fr = w.map((row, k) => dot(row, x.map((v, i) => v + r[i])) + b[k]);
          expect(Math.abs(fr[want.k] - fr[want.label])).toBeLessThan(1e-3 * (1 + Math.abs(want.f[want.label])));
          const fAdv = w.map((row, k) => dot(row, adv) + b[k]);
          expect(fAdv.indexOf(Math.max(...fAdv))).toBe(want.k);
        }),
        { numRuns: 20 },
      );
    });
  }

  it('3 classes: the nearest face is not the one between the two top classes', async () => {
    // f_0 is top; class 1 is second by logit but far (gentle slope); class 2 is third but near (steep slope).
    const clf = affine([[0, 0], [0.1, 0], [10, 0]], [0, -0.01, -5.5]);
    const x = [0.5, 0.5];
    const want = nearestFace(clf, x, 2);
    expect(want.f[1]).toBeGreaterThan(want.f[2]);
    expect(want.k).toBe(2);
    const res = await deepfool(clf, T.tensor(x, [1, 1, 1, 2]), { p: 2 });
    const adv = await res.adversarial.data();
    const fAdv = clf.w.map((row, k) => dot(row, adv) + clf.b[k]);
    expect(fAdv.indexOf(Math.max(...fAdv))).toBe(2);
    expect(Math.hypot(adv[0] - 0.5, adv[1] - 0.5) / 1.02).toBeCloseTo(want.dist, 5);
  });

  it('shows its iterates: current() after the last iteration is the adversarial it returns', async () => {
    const clf = affine([[0, 0], [0.1, 0], [10, 0]], [0, -0.01, -5.5]);
    const x = T.tensor([0.5, 0.5, 0.4, 0.6], [2, 1, 1, 2]);
    const frames: Array<{ it: number; active: number; x: number[] }> = [];
    const res = await deepfool(clf, x, { p: 2, onIteration: (it, active, current) => void frames.push({ it, active, x: Array.from(current()) }) });
    expect(frames[0].it).toBe(0);
    expect(frames.at(-1)!.active).toBe(0);
    expect(frames.at(-1)!.x).toEqual(Array.from(await res.adversarial.data()));
    expect(frames.length).toBe(Math.max(...res.iterations) + 1);
  });

  it('unbounded DeepFool fools every point of a random linear softmax model', async () => {
    const c = 5;
    const d = 16;
    const w = Array.from({ length: c }, (_, k) => Array.from(randomRef([d], 40 + k, -1, 1).data));
    const clf = affine(w, new Array(c).fill(0));
    const x = T.tensor(randomRef([12, 1, 4, 4], 3, 0.2, 0.8).data, [12, 1, 4, 4]);
    const res = await deepfool(clf, x, { p: Infinity, maxIterations: 50 });
    expect(Array.from(res.flipped).every((f) => f === 1)).toBe(true);
  });

  it('at the box: pixels held at 0 or 1 take no part in the step, which is exact for the pixels that can move', async () => {
    // w = w_1 - w_0 = [-5, 2, 3] at x = [0, 0.5, 1]: pixel 0 would go below 0 and pixel 2 above 1, so only pixel 1
    // moves, by |f_1 - f_0| / 2 = 0.25 in every norm.
    const clf = affine([[0, 0, 0], [-5, 2, 3]], [0, -4.5]);
    for (const p of [2, Infinity, 3]) {
      const res = await deepfool(clf, T.tensor([0, 0.5, 1], [1, 1, 1, 3]), { p, overshoot: 0.02 });
      const adv = Array.from(await res.adversarial.data());
      expect(res.iterations[0]).toBe(1);
      expect(res.flipped[0]).toBe(1);
      expect(adv[0]).toBe(0);
      expect(adv[2]).toBe(1);
      expect((adv[1] - 0.5) / 1.02).toBeCloseTo(0.25, 5);
    }
  });

  it('unbounded DeepFool fools every point of a linear model whose images have many pixels at 0 and 1', async () => {
    const c = 4;
    const d = 16;
    const w = Array.from({ length: c }, (_, k) => Array.from(randomRef([d], 60 + k, -1, 1).data));
    const clf = affine(w, new Array(c).fill(0));
    const x = Array.from(randomRef([10 * d], 5, -0.5, 1.5).data, (v) => Math.min(1, Math.max(0, v)));
    for (const p of [2, Infinity]) {
      const res = await deepfool(clf, T.tensor(x, [10, 1, 4, 4]), { p, maxIterations: 50 });
      expect(Array.from(res.flipped).every((f) => f === 1)).toBe(true);
    }
  });

  it('rejects p <= 1 and images outside [0, 1]', async () => {
    const clf = affine([[1], [0]], [0, 0]);
    await expect(deepfool(clf, T.tensor([0.5], [1, 1, 1, 1]), { p: 1 })).rejects.toThrow(/deepfool: p must be > 1/);
    await expect(deepfool(clf, T.tensor([1.5], [1, 1, 1, 1]), { p: 2 })).rejects.toThrow(/deepfool: image values must lie in \[0, 1\], got range \[1.5, 1.5\]/);
    await expect(deepfool(clf, T.tensor([0.5], [1, 1]), { p: 2 })).rejects.toThrow(/images must be f32 \[N, 1, H, W\]/);
  });
});

describe('FGS', () => {
  it('matches the closed form on a linear softmax model and respects the box and the budget', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 2, max: 6 }), fc.integer({ min: 1, max: 12 }), fc.double({ min: 0.001, max: 0.3, noNaN: true }), arbSeed, async (c, d, eps, seed) => {
        const n = 4;
        const w = Array.from({ length: c }, (_, k) => Array.from(randomRef([d], seed + k, -2, 2).data));
        const clf = affine(w, new Array(c).fill(0));
        const x = randomRef([n, 1, 1, d], seed + 50, 0, 1);
        const labels = Array.from({ length: n }, (_, i) => (seed + i) % c);
        const xt = T.tensor(x.data, x.shape);
        const before = Array.from(await xt.data());
        const adv = await (await fgs(clf, xt, T.tensor(labels, [n], 'i32'), { eps })).data();
        expect(Array.from(await xt.data())).toEqual(before); // input untouched
        for (let i = 0; i < n; i++) {
          const xi = Array.from(x.data.subarray(i * d, (i + 1) * d));
          const f = w.map((row) => dot(row, xi));
          const m = Math.max(...f);
          const p = f.map((v) => Math.exp(v - m));
          const z = p.reduce((a, v) => a + v, 0);
          // d CE / dx = sum_k (softmax_k - [k = y]) w_k
          const g = xi.map((_, e) => w.reduce((s, row, k) => s + (p[k] / z - (k === labels[i] ? 1 : 0)) * row[e], 0));
          for (let e = 0; e < d; e++) {
            const want = Math.min(1, Math.max(0, xi[e] + Math.fround(eps) * Math.sign(g[e])));
            if (Math.abs(g[e]) > 1e-5) expect(adv[i * d + e]).toBeCloseTo(want, 5);
            expect(Math.abs(adv[i * d + e] - xi[e])).toBeLessThanOrEqual(eps + 1e-6);
            expect(adv[i * d + e]).toBeGreaterThanOrEqual(0);
            expect(adv[i * d + e]).toBeLessThanOrEqual(1);
          }
        }
      }),
      { numRuns: 20 },
    );
  });

  it('eps = 0 returns the input; a targeted step lowers the target loss', async () => {
    const clf = affine([[1, -1], [-1, 1], [0.5, 0.5]], [0, 0, 0]);
    const x = T.tensor([0.3, 0.6, 0.7, 0.2], [2, 1, 1, 2]);
    const labels = T.tensor([0, 1], [2], 'i32');
    expect(Array.from(await (await fgs(clf, x, labels, { eps: 0 })).data())).toEqual(Array.from(await x.data()));
    const target = T.tensor([2, 2], [2], 'i32');
    const adv = await fgs(clf, x, labels, { eps: 0.1, target });
    const [l0, l1] = await T.readAll([T.crossEntropy(clf.logits(x, 0), target), T.crossEntropy(clf.logits(adv, 0), target)]);
    expect(l1[0]).toBeLessThan(l0[0]);
  });

  it('rejects negative eps and mismatched labels', async () => {
    const clf = affine([[1], [0]], [0, 0]);
    const x = T.tensor([0.5, 0.5], [2, 1, 1, 1]);
    await expect(fgs(clf, x, T.tensor([0, 1], [2], 'i32'), { eps: -0.1 })).rejects.toThrow(/fgs: eps must be a finite number >= 0, got -0.1/);
    await expect(fgs(clf, x, T.tensor([0], [1], 'i32'), { eps: 0.1 })).rejects.toThrow(/fgs: labels must be i32 \[2\]/);
  });
});

describe('iterative attacks', () => {
  const c = 4;
  const d = 16;
  const w = Array.from({ length: c }, (_, k) => Array.from(randomRef([d], 70 + k, -1, 1).data));
  const n = 16;
  const xRef = randomRef([n, 1, 4, 4], 5, 0.2, 0.8);
  const labelsArr = Array.from({ length: n }, (_, i) => i % c);

  const successRate = async (clf: Classifier, adv: T.Tensor, labels: T.Tensor) => {
    const pred = await T.argmax(clf.logits(adv, 0)).data();
    const truth = await labels.data();
    return Array.from(pred).filter((p, i) => p !== truth[i]).length / pred.length;
  };

  it('same seed, same result; different seeds differ; the perturbation stays in the ball', async () => {
    const clf = affine(w, new Array(c).fill(0));
    const x = T.tensor(xRef.data, xRef.shape);
    const labels = T.tensor(labelsArr, [n], 'i32');
    for (const norm of ['linf', 'l2'] as const) {
      const eps = norm === 'linf' ? 0.05 : 0.5;
      const run = (seed: number) => iterativeAttack(clf, x, labels, { eps, norm, stepSize: eps / 4, iterations: 5, randomStart: true, seed });
      const [a, b, other] = await T.readAll([await run(1), await run(1), await run(2)]);
      expect(Array.from(b)).toEqual(Array.from(a));
      expect(Array.from(other)).not.toEqual(Array.from(a));
      const norms = await perturbationNorms(x, T.tensor(a, x.shape));
      for (let i = 0; i < n; i++) expect(norm === 'linf' ? norms.linf[i] : norms.l2[i]).toBeLessThanOrEqual(eps * (1 + 1e-5) + 1e-6);
    }
  });

  it('reports every iterate to onIteration, the last being the result; a callback that throws stops the attack', async () => {
    const clf = affine(w, new Array(c).fill(0));
    const x = T.tensor(xRef.data, xRef.shape);
    const labels = T.tensor(labelsArr, [n], 'i32');
    const opts = { eps: 0.05, norm: 'linf' as const, stepSize: 0.02, iterations: 4, randomStart: false, seed: 1 };
    const seen: number[] = [];
    let last: Float32Array | null = null;
    const adv = await iterativeAttack(clf, x, labels, { ...opts, onIteration: async (i, t) => {
      seen.push(i);
      last = (await t.data()) as Float32Array;
    } });
    expect(seen).toEqual([0, 1, 2, 3]);
    expect(Array.from(last!)).toEqual(Array.from(await adv.data()));
    expect(Array.from(await adv.data())).toEqual(Array.from(await (await iterativeAttack(clf, x, labels, opts)).data()));
    const live = T.runtime().memory().liveBuffers;
    await expect(iterativeAttack(clf, x, labels, { ...opts, onIteration: (i) => { if (i === 1) throw new Error('stop here'); } })).rejects.toThrow('stop here');
    expect(T.runtime().memory().liveBuffers).toBe(live);
  });

  it('PGD and MIM are at least as strong as FGS, and success grows with eps', async () => {
    const clf = affine(w, new Array(c).fill(0));
    const x = T.tensor(xRef.data, xRef.shape);
    const labels = T.tensor(labelsArr, [n], 'i32');
    const rates: number[] = [];
    for (const eps of [0.02, 0.05, 0.1, 0.2]) {
      const f = await successRate(clf, await fgs(clf, x, labels, { eps }), labels);
      const p = await successRate(clf, await iterativeAttack(clf, x, labels, { eps, norm: 'linf', stepSize: eps / 5, iterations: 10, randomStart: false, seed: 1 }), labels);
      const m = await successRate(clf, await iterativeAttack(clf, x, labels, { eps, norm: 'linf', stepSize: eps / 5, iterations: 10, randomStart: false, momentum: 1, seed: 1 }), labels);
      expect(p).toBeGreaterThanOrEqual(f);
      expect(m).toBeGreaterThanOrEqual(f);
      rates.push(f);
    }
    for (let i = 1; i < rates.length; i++) expect(rates[i]).toBeGreaterThanOrEqual(rates[i - 1]);
    expect(rates[rates.length - 1]).toBeGreaterThan(rates[0]);
  });
});

describe('expectation over noise', () => {
  it('attack gradients average the classifier\'s noise draws', async () => {
    const w = [Array.from(randomRef([4], 1, -1, 1).data), Array.from(randomRef([4], 2, -1, 1).data), Array.from(randomRef([4], 3, -1, 1).data)];
    // A stochastic classifier: draw d perturbs the weights deterministically.
    const noisy = (draws: number, offset = 0): Classifier => ({
      name: 'noisy',
      numClasses: 3,
      draws,
      logits: (x, draw) => T.linear(T.reshape(x, [x.shape[0], -1]), T.tensor(w.flat().map((v, i) => v * (1 + 0.5 * Math.sin(draw + offset + i))), [3, 4])),
    });
    const x = T.tensor(randomRef([2, 1, 2, 2], 4, 0.2, 0.8).data, [2, 1, 2, 2]);
    const labels = T.tensor([0, 2], [2], 'i32');
    const averaged = await lossGradient(noisy(3), x, labels).grad.data();
    const single = await Promise.all([0, 1, 2].map((d) => lossGradient(noisy(1, d), x, labels).grad.data()));
    const want = Array.from(averaged, (_, i) => (single[0][i] + single[1][i] + single[2][i]) / 3);
    Array.from(averaged).forEach((v, i) => expect(v).toBeCloseTo(want[i], 5));
  });

  it('DeepFool under EOT linearises the draw-averaged logits', async () => {
    const d = 6;
    const w = Array.from({ length: 3 }, (_, k) => Array.from(randomRef([d], 10 + k, -1, 1).data));
    // Draw j scales the weights by 1 + 0.5 sin(j mod 3 + i): the average over three draws is one affine map.
    const scaleOf = (draw: number, i: number) => 1 + 0.5 * Math.sin((draw % 3) + i);
    const weights = (draw: number) => T.tensor(w.flat().map((v, i) => v * scaleOf(draw, i)), [3, d]);
    const noisy: Classifier = { name: 'noisy', numClasses: 3, draws: 3, logits: (x, draw) => T.linear(T.reshape(x, [x.shape[0], -1]), weights(draw)) };
    const mean = T.tensor(w.flat().map((v, i) => (v * (scaleOf(0, i) + scaleOf(1, i) + scaleOf(2, i))) / 3), [3, d]);
    const averaged: Classifier = { name: 'mean', numClasses: 3, draws: 1, logits: (x) => T.linear(T.reshape(x, [x.shape[0], -1]), mean) };
    const x = T.tensor(randomRef([4, 1, 1, d], 5, 0.3, 0.7).data, [4, 1, 1, d]);
    const eot = await deepfool(noisy, x, { p: 2, maxIterations: 20 });
    const ref = await deepfool(averaged, x, { p: 2, maxIterations: 20 });
    expect(Array.from(eot.originalLabels)).toEqual(Array.from(ref.originalLabels));
    expect(Array.from(eot.iterations)).toEqual(Array.from(ref.iterations));
    expect(Array.from(eot.flipped)).toEqual(Array.from(ref.flipped));
    const [a, b] = await T.readAll([eot.adversarial, ref.adversarial]);
    a.forEach((v, i) => expect(v).toBeCloseTo(b[i], 5));
  });
});
