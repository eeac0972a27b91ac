// DeepFool's 'foolbox' variant against a per-image float64 reference of Foolbox 3's L2DeepFoolAttack and
// LinfDeepFoolAttack (loss 'logits'), on classifiers whose input gradients the host computes exactly: an affine map
// and a two-layer ReLU net. Inputs have many pixels at 0 and 1, where the 'box' and 'foolbox' variants part ways.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, randomRef, arbSeed, expectClose, RUNS } from './helpers.js';
import { deepfool } from '../src/attacks/deepfool.js';
import { affineModel, reluModel, randomMatrix, imagesAtBounds, maxAbs, argmaxOf, type PiecewiseLinearModel } from './fixtures.js';

useGpu();

/**
 * Foolbox 3's DeepFool for one image, written out plainly: classes ranked once by the clean logits, loss_k =
 * f_k - f_orig over the top `candidates`, distance |loss| / (||grad loss||_q + 1e-8) (q = 2 for L2, 1 for Linf)
 * padded by 1e-4 after the argmin, step d grad / (||grad||_2 + 1e-8) or d sign(grad), and
 * x = clip(x0 + (1 + overshoot) p_total) until the prediction leaves the original class.
 *
 * `slack` holds the narrowest relative margin of each kind of decision along the path: the prediction at each
 * check, the ReLU pattern at each iterate, the argmin between the two nearest candidates, and (Linf) the sign of
 * each component of the step. Float32 may decide a near-tie the other way and then follow a different path.
 */
function foolboxReference(model: PiecewiseLinearModel, x0: number[], o: { p: number; overshoot: number; maxIterations: number; candidates: number }) {
  const f0 = model.logits(x0);
  const c = f0.length;
  const label = argmaxOf(f0);
  const ranked = [label, ...Array.from({ length: c }, (_, k) => k).filter((k) => k !== label).sort((a, b) => f0[b] - f0[a] || a - b)];
  const classes = ranked.slice(0, Math.min(o.candidates, c));
  const pTotal = x0.map(() => 0);
  let x = x0.slice();
  const slack = { margin: Infinity, kink: Infinity, argmin: Infinity, sign: Infinity };
  const check = () => {
    const f = model.logits(x);
    const others = f.filter((_, k) => k !== label);
    slack.margin = Math.min(slack.margin, Math.abs(f[label] - Math.max(...others)) / (1 + maxAbs(f)));
    slack.kink = Math.min(slack.kink, model.kink(x));
    return { f, adversarial: argmaxOf(f) !== label };
  };
  for (let step = 0; step < o.maxIterations; step++) {
    const { f, adversarial } = check();
    if (adversarial) return { x, iterations: step, label, flipped: true, slack };
    const g = model.grads(x);
    const tried = classes.slice(1).map((k) => {
      const w = g[k].map((v, e) => v - g[label][e]);
      const norm = o.p === 2 ? Math.sqrt(w.reduce((s, v) => s + v * v, 0)) : w.reduce((s, v) => s + Math.abs(v), 0);
      return { dist: Math.abs(f[k] - f[label]) / (norm + 1e-8), w, norm };
    });
    const best = tried.reduce((a, b) => (b.dist < a.dist ? b : a));
    const runnerUp = Math.min(...tried.filter((t) => t !== best).map((t) => t.dist));
    slack.argmin = Math.min(slack.argmin, (runnerUp - best.dist) / best.dist);
    // A component that is exactly 0 stays 0 in float32 too (it comes from equal weights, not from a rounded sum).
    if (o.p === Infinity) slack.sign = Math.min(slack.sign, ...best.w.filter((v) => v !== 0).map((v) => Math.abs(v) / maxAbs(best.w)));
    const dist = best.dist + 1e-4;
    best.w.forEach((v, e) => (pTotal[e] += o.p === 2 ? (dist / (best.norm + 1e-8)) * v : dist * Math.sign(v)));
    x = x0.map((v, e) => Math.min(1, Math.max(0, v + (1 + o.overshoot) * pTotal[e])));
  }
  const { adversarial } = check();
  return { x, iterations: adversarial ? o.maxIterations : o.maxIterations + 1, label, flipped: adversarial, slack };
}

const row = (x: ArrayLike<number>, i: number, d: number) => Array.from(x).slice(i * d, (i + 1) * d);

/**
 * Paths whose every decision has a relative margin above this are compared. The GPU's iterates stay within a few
 * 1e-6 of the reference's per pixel, so float32 cannot tip such a decision; below it, an image crossing the face by
 * 1e-8 has been seen to need one step more on the GPU. Creeping paths end close to the face (the 1e-4 padding is
 * what gets them across), so about one image in ten falls below.
 */
const SLACK = 1e-5;
const narrowest = (s: Record<string, number>) => Math.min(...Object.values(s));

/**
 * Runs the GPU variant on a batch and the reference per image. For each image whose reference path has slack
 * above SLACK, the iteration counts must agree exactly and each pixel of the adversarial to atol 1e-4 + rtol 1e-3
 * (the GPU works in float32 through up to maxIterations steps). Returns the iteration counts of the images
 * compared, and how many were left out as near-ties.
 */
async function expectMatchesReference(model: PiecewiseLinearModel, x: number[], n: number, d: number, o: { p: number; overshoot: number; maxIterations: number; candidates?: number }) {
  const res = await deepfool(model.clf, T.tensor(x, [n, 1, 1, d]), { ...o, variant: 'foolbox' });
  const adv = await res.adversarial.data();
  const iterations: number[] = [];
  let nearTies = 0;
  for (let i = 0; i < n; i++) {
    const want = foolboxReference(model, row(x, i, d), { ...o, candidates: o.candidates ?? 10 });
    if (!(narrowest(want.slack) > SLACK)) {
      nearTies++;
      continue;
    }
    const what = `image ${i} (p ${o.p}, candidates ${o.candidates ?? 'default'})`;
    expect(res.originalLabels[i], `${what} label`).toBe(want.label);
    expect(res.iterations[i], `${what} iterations`).toBe(want.iterations);
    expect(res.flipped[i], `${what} flipped`).toBe(want.flipped ? 1 : 0);
    expectClose(row(adv, i, d), want.x, { atol: 1e-4, rtol: 1e-3 }, `${what} adversarial`);
    iterations.push(want.iterations);
  }
  return { iterations, nearTies };
}

describe("DeepFool variant 'foolbox' matches a float64 reference of Foolbox 3", () => {
  // Candidates from 2 (only the runner-up class) to beyond the class count (all of them, Foolbox's default 10).
  const arbCase = fc.record({ seed: arbSeed, c: fc.integer({ min: 3, max: 6 }), d: fc.integer({ min: 2, max: 10 }), candidates: fc.option(fc.integer({ min: 2, max: 7 }), { nil: undefined }) });

  for (const p of [2, Infinity]) {
    it(`p = ${p}, affine classifier: same iterations and perturbation, pixels at 0 and 1 included`, async () => {
      const seen: number[] = [];
      let nearTies = 0;
      await fc.assert(
        fc.asyncProperty(arbCase, async ({ seed, c, d, candidates }) => {
          const model = affineModel(randomMatrix(c, d, seed, -2, 2), Array.from(randomRef([c], seed + 5, -1, 1).data));
          const n = 3;
          const got = await expectMatchesReference(model, imagesAtBounds(n, d, seed + 11), n, d, { p, overshoot: 0.02, maxIterations: 30, candidates });
          seen.push(...got.iterations);
          nearTies += got.nearTies;
        }),
        RUNS,
      );
      // Most images are compared, and the cases reach past a single step, so the accumulated perturbation and the
      // clipping are exercised.
      expect(nearTies).toBeLessThanOrEqual(seen.length);
      expect(seen.some((it) => it > 1)).toBe(true);
    });

    it(`p = ${p}, two-layer ReLU net: same iterations and perturbation, pixels at 0 and 1 included`, async () => {
      const seen: number[] = [];
      let nearTies = 0;
      await fc.assert(
        fc.asyncProperty(arbCase, async ({ seed, c, d, candidates }) => {
          const h = 6;
          const model = reluModel(randomMatrix(h, d, seed, -2, 2), Array.from(randomRef([h], seed + 3, -0.5, 0.5).data), randomMatrix(c, h, seed + 7, -2, 2), Array.from(randomRef([c], seed + 5, -0.5, 0.5).data));
          const n = 3;
          const got = await expectMatchesReference(model, imagesAtBounds(n, d, seed + 11), n, d, { p, overshoot: 0.02, maxIterations: 30, candidates });
          seen.push(...got.iterations);
          nearTies += got.nearTies;
        }),
        RUNS,
      );
      expect(nearTies).toBeLessThanOrEqual(seen.length);
      expect(seen.some((it) => it > 1)).toBe(true);
    });
  }

  it('few candidates change the result: with 2, only the runner-up class is tried', async () => {
    // At x = [0.5, 0.5] f = [0, -0.1, -0.5]: class 1 is second by logit but 0.1 away along pixel 0; class 2 is
    // third but 0.05 away along pixel 1, so it is the nearest face when every class is a candidate.
    const model = affineModel([[0, 0], [1, 0], [0, 10]], [0, -0.6, -5.5]);
    const x = [0.5, 0.5];
    for (const p of [2, Infinity]) {
      const all = await deepfool(model.clf, T.tensor(x, [1, 1, 1, 2]), { p, variant: 'foolbox' });
      const two = await deepfool(model.clf, T.tensor(x, [1, 1, 1, 2]), { p, variant: 'foolbox', candidates: 2 });
      expect(argmaxOf(model.logits(Array.from(await all.adversarial.data())))).toBe(2);
      expect(argmaxOf(model.logits(Array.from(await two.adversarial.data())))).toBe(1);
      expect((await expectMatchesReference(model, x, 1, 2, { p, overshoot: 0.02, maxIterations: 50, candidates: 2 })).iterations).toEqual([two.iterations[0]]);
    }
  });
});

describe("DeepFool variants 'box' and 'foolbox' differ where they should", () => {
  it('at the box: foolbox steps every pixel and creeps; box masks the held pixels and lands in one step', async () => {
    // w = w_1 - w_0 = [-0.5, 2, 0.5] at x = [0, 0.5, 1]: pixels 0 and 2 are pushed outward and held by the clip, so
    // each foolbox step closes only the share of the gap that pixel 1 carries and it takes several. Box moves pixel 1
    // alone, by |f_1 - f_0| / 2 = 0.25.
    const model = affineModel([[0, 0, 0], [-0.5, 2, 0.5]], [0, -2]);
    const x = [0, 0.5, 1];
    const maxIterations = 50;
    for (const p of [2, Infinity]) {
      const box = await deepfool(model.clf, T.tensor(x, [1, 1, 1, 3]), { p, maxIterations });
      const fool = await deepfool(model.clf, T.tensor(x, [1, 1, 1, 3]), { p, maxIterations, variant: 'foolbox' });
      expect(box.iterations[0]).toBe(1);
      expect(fool.iterations[0]).toBeGreaterThan(1);
      expect(fool.flipped[0]).toBe(1);
      const [b, f] = [Array.from(await box.adversarial.data()), Array.from(await fool.adversarial.data())];
      expect(f[0]).toBe(0);
      expect(f[2]).toBe(1);
      expect((b[1] - 0.5) / 1.02).toBeCloseTo(0.25, 5);
      expect(Math.abs(f[1] - b[1])).toBeGreaterThan(1e-3);
      expect((await expectMatchesReference(model, x, 1, 3, { p, overshoot: 0.02, maxIterations })).iterations).toEqual([fool.iterations[0]]);
    }
  });

  it('inside the box on an affine classifier both take one step; foolbox goes 1e-4 further along it', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 2, max: 5 }), fc.integer({ min: 2, max: 8 }), arbSeed, async (c, d, seed) => {
        const model = affineModel(randomMatrix(c, d, seed, -20, 20), Array.from(randomRef([c], seed + 99, -1, 1).data));
        const x = Array.from(randomRef([d], seed + 7, 0.4, 0.6).data);
        for (const p of [2, Infinity]) {
          const box = await deepfool(model.clf, T.tensor(x, [1, 1, 1, d]), { p, variant: 'box' });
          const fool = await deepfool(model.clf, T.tensor(x, [1, 1, 1, d]), { p, variant: 'foolbox' });
          const [b, f] = [Array.from(await box.adversarial.data()), Array.from(await fool.adversarial.data())];
          fc.pre(b.every((v) => v > 0 && v < 1) && f.every((v) => v > 0 && v < 1)); // no clipping: the steps are comparable
          expect(box.iterations[0]).toBe(1);
          expect(fool.iterations[0]).toBe(1);
          const norm = (v: number[]) => (p === 2 ? Math.hypot(...v) : Math.max(...v.map(Math.abs)));
          const rb = norm(b.map((v, i) => v - x[i])) / 1.02;
          const rf = norm(f.map((v, i) => v - x[i])) / 1.02;
          expect(rf - rb).toBeCloseTo(1e-4, 5);
        }
      }),
      { numRuns: 10 },
    );
  });

  it("the default variant is 'box', bit for bit", async () => {
    const model = affineModel(randomMatrix(4, 9, 17, -1, 1), [0, 0.1, -0.1, 0.2]);
    const x = T.tensor(imagesAtBounds(5, 9, 23), [5, 1, 3, 3]);
    for (const p of [2, Infinity, 3]) {
      const a = await deepfool(model.clf, x, { p, maxIterations: 20 });
      const b = await deepfool(model.clf, x, { p, maxIterations: 20, variant: 'box' });
      expect(Array.from(await b.adversarial.data())).toEqual(Array.from(await a.adversarial.data()));
      expect(Array.from(b.iterations)).toEqual(Array.from(a.iterations));
    }
  });

  it('rejects an unknown variant, p other than 2 and Infinity for foolbox, and candidates misused', async () => {
    const model = affineModel([[1], [0]], [0, 0]);
    const x = T.tensor([0.5], [1, 1, 1, 1]);
    const bad = 'cleverhans' as unknown as 'box';
    await expect(deepfool(model.clf, x, { p: 2, variant: bad })).rejects.toThrow(/deepfool: variant must be 'box' or 'foolbox', got 'cleverhans'/);
    for (const p of [3, 1, 1.5]) {
      await expect(deepfool(model.clf, x, { p, variant: 'foolbox' })).rejects.toThrow(new RegExp(`deepfool: the 'foolbox' variant supports p = 2 and p = Infinity only .*got p = ${p}$`));
    }
    await expect(deepfool(model.clf, x, { p: 2, candidates: 3 })).rejects.toThrow(/deepfool: candidates applies to the 'foolbox' variant only/);
    await expect(deepfool(model.clf, x, { p: 2, variant: 'foolbox', candidates: 1 })).rejects.toThrow(/deepfool: candidates must be an integer >= 2, got 1/);
  });
});
