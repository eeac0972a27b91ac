// Attacks as compiled steps. DeepFool against a float64 host reference of the same algorithm (both variants, p = 2,
// Infinity and 3), run both eagerly and as a compiled step; the compiled CW, DeepFool and detection-aware PGD steps
// and Square's and HopSkipJump's compiled queries and estimates against the eager ones on generative classifiers; the
// readbacks per DeepFool iteration; and the errors bad input gets.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, randomRef, arbSeed, expectClose } from './helpers.js';
import { affineModel, reluModel, randomMatrix, imagesAtBounds, maxAbs, argmaxOf, type PiecewiseLinearModel } from './fixtures.js';
import { type Classifier, type NoiseMode, bayesClassifier } from '../src/attacks/classifier.js';
import { deepfool, type DeepFoolOptions, type DeepFoolVariant } from '../src/attacks/deepfool.js';
import { cw } from '../src/attacks/cw.js';
import { adaptivePgd } from '../src/attacks/adaptive.js';
import { iterativeAttack } from '../src/attacks/gradient.js';
import { squareAttack } from '../src/attacks/square.js';
import { hopSkipJump } from '../src/attacks/hopskipjump.js';
import { fitDetectors, type DetectorName } from '../src/attacks/detection.js';
import { createModel, modelConfig, type LatentVariableClassifier } from '../src/models/factorisations.js';
import type { CompiledFunction } from '../src/autograd/compile.js';
import { loadModel } from '../src/models/store.js';
import { parseIdx } from '../src/data/idx-format.js';
import { readFileSync } from 'node:fs';

const { rt } = useGpu();

/** `run` with compiled functions on (traced and replayed) or off (the same functions op by op), then on again. */
async function withCompiling<T>(compiling: boolean, run: () => Promise<T>): Promise<T> {
  rt().compiling = compiling;
  try {
    return await run();
  } finally {
    rt().compiling = true;
  }
}

/** The compiled function the model keeps under `key`; an error if the attack did not make it. */
function compiledOf(model: LatentVariableClassifier, key: string): CompiledFunction {
  return model.compiled(key, () => {
    throw new Error(`${key}: not compiled`);
  });
}

interface RefOptions {
  p: number;
  variant: DeepFoolVariant;
  overshoot: number;
  maxIterations: number;
  candidates: number;
}

/**
 * DeepFool for one image in float64, written out plainly from the header of src/attacks/deepfool.ts, both
 * variants. `slack` holds the narrowest relative margin of each decision along the path that float32 could take
 * the other way: the prediction at each check, the ReLU pattern, the argmin between the two nearest faces, the
 * sign of a component of w where it matters (the box mask at held pixels; the step for p = Infinity), and an
 * unclipped iterate's distance from a bound of the box.
 */
function reference(model: PiecewiseLinearModel, x0: number[], o: RefOptions) {
  const q = o.p === Infinity ? 1 : o.p / (o.p - 1);
  const f0 = model.logits(x0);
  const c = f0.length;
  const label = argmaxOf(f0);
  const ranked = [label, ...Array.from({ length: c }, (_, k) => k).filter((k) => k !== label).sort((a, b) => f0[b] - f0[a] || a - b)];
  const others = o.variant === 'box' ? ranked.slice(1).sort((a, b) => a - b) : ranked.slice(1, Math.min(o.candidates, c));
  const total = x0.map(() => 0);
  let x = x0.slice();
  const slack = { margin: Infinity, kink: Infinity, argmin: Infinity, sign: Infinity, clip: Infinity };
  const signSlack = (w: number[], at: (e: number) => boolean) => {
    const m = maxAbs(w);
    w.forEach((v, e) => {
      if (v !== 0 && at(e)) slack.sign = Math.min(slack.sign, Math.abs(v) / m);
    });
  };
  for (let it = 0; it <= o.maxIterations; it++) {
    const f = model.logits(x);
    slack.margin = Math.min(slack.margin, Math.abs(f[label] - Math.max(...f.filter((_, k) => k !== label))) / (1 + maxAbs(f)));
    slack.kink = Math.min(slack.kink, model.kink(x));
    if (argmaxOf(f) !== label) return { x, iterations: it, label, flipped: true, slack };
    if (it === o.maxIterations) break;
    const g = model.grads(x);
    const faces = others.map((k) => {
      let w = g[k].map((v, e) => v - g[label][e]);
      if (o.variant === 'box') {
        signSlack(w, (e) => x[e] === 0 || x[e] === 1);
        w = w.map((v, e) => ((v > 0 && x[e] < 1) || (v < 0 && x[e] > 0) ? v : 0));
      }
      const nq = w.reduce((s, v) => s + Math.abs(v) ** q, 0);
      const absF = Math.abs(f[k] - f[label]);
      if (o.variant === 'box') {
        const wq = nq ** (1 / q);
        return { w, dist: absF / Math.max(wq, 1e-30), coefficient: absF / Math.max(nq, 1e-30) };
      }
      const wq = q === 1 ? nq : Math.sqrt(nq);
      const dist = absF / (wq + 1e-8);
      return { w, dist, coefficient: q === 1 ? dist + 1e-4 : (dist + 1e-4) / (wq + 1e-8) };
    });
    const best = faces.reduce((a, b) => (b.dist < a.dist ? b : a));
    if (faces.length > 1) slack.argmin = Math.min(slack.argmin, (Math.min(...faces.filter((t) => t !== best).map((t) => t.dist)) - best.dist) / best.dist);
    if (q === 1) signSlack(best.w, () => true);
    best.w.forEach((v, e) => (total[e] += best.coefficient * (q === 1 ? Math.sign(v) : Math.sign(v) * Math.abs(v) ** (q - 1))));
    const unclipped = x0.map((v, e) => v + (1 + o.overshoot) * total[e]);
    unclipped.forEach((u) => {
      if (u !== 0 && u !== 1) slack.clip = Math.min(slack.clip, Math.abs(u), Math.abs(u - 1));
    });
    x = unclipped.map((u) => Math.min(1, Math.max(0, u)));
  }
  return { x, iterations: o.maxIterations + 1, label, flipped: false, slack };
}

/** n images of d pixels, about a quarter of them at 0 and a quarter at 1. */
const row = (x: ArrayLike<number>, i: number, d: number) => Array.from(x).slice(i * d, (i + 1) * d);

/** As in test/deepfool-foolbox.test.ts: paths with every decision's margin above this are compared exactly. */
const SLACK = 1e-5;

/**
 * Runs DeepFool eagerly and compiled on a batch, and the reference per image. The two GPU runs execute the same
 * kernels, so they agree bit for bit. Each image whose reference path has slack above SLACK must have the
 * reference's label, iteration count and flip, and its adversarial to atol 1e-4 + rtol 1e-3 per pixel.
 */
async function expectMatchesReference(model: PiecewiseLinearModel, x: number[], n: number, d: number, o: RefOptions) {
  const opts: DeepFoolOptions = { p: o.p, variant: o.variant, overshoot: o.overshoot, maxIterations: o.maxIterations, ...(o.variant === 'foolbox' ? { candidates: o.candidates } : {}) };
  const xt = T.tensor(x, [n, 1, 1, d]);
  const eager = await deepfool(model.clf, xt, opts);
  const compiled = await deepfool(model.compiled, xt, opts);
  const [adv, advCompiled] = await T.readAll([eager.adversarial, compiled.adversarial]);
  [xt, eager.adversarial, compiled.adversarial].forEach((t) => t.dispose());
  expect(Array.from(advCompiled)).toEqual(Array.from(adv));
  expect(Array.from(compiled.iterations)).toEqual(Array.from(eager.iterations));
  expect(Array.from(compiled.flipped)).toEqual(Array.from(eager.flipped));
  const iterations: number[] = [];
  let nearTies = 0;
  for (let i = 0; i < n; i++) {
    const want = reference(model, row(x, i, d), o);
    if (!(Math.min(...Object.values(want.slack)) > SLACK)) {
      nearTies++;
      continue;
    }
    const what = `image ${i} (${o.variant}, p ${o.p})`;
    expect(eager.originalLabels[i], `${what} label`).toBe(want.label);
    expect(eager.iterations[i], `${what} iterations`).toBe(want.iterations);
    expect(eager.flipped[i], `${what} flipped`).toBe(want.flipped ? 1 : 0);
    expectClose(row(adv, i, d), want.x, { atol: 1e-4, rtol: 1e-3 }, `${what} adversarial`);
    iterations.push(want.iterations);
  }
  return { iterations, nearTies, batchIterations: Array.from(eager.iterations) };
}

describe('DeepFool on the GPU matches a float64 host reference of the same algorithm', () => {
  const cases: [DeepFoolVariant, number][] = [['box', 2], ['box', Infinity], ['box', 3], ['foolbox', 2], ['foolbox', Infinity]];
  for (const [variant, p] of cases) {
    it(`${variant}, p = ${p}: affine and two-layer ReLU classifiers, eager and compiled, pixels at 0 and 1 included`, async () => {
      const seen: number[] = [];
      let nearTies = 0;
      let staggered = false;
      await fc.assert(
        fc.asyncProperty(fc.record({ seed: arbSeed, c: fc.integer({ min: 3, max: 5 }), d: fc.integer({ min: 2, max: 8 }), relu: fc.boolean(), candidates: fc.integer({ min: 2, max: 6 }) }), async ({ seed, c, d, relu, candidates }) => {
          const h = 5;
          const model = relu
            ? reluModel(randomMatrix(h, d, seed, -2, 2), Array.from(randomRef([h], seed + 3, -0.5, 0.5).data), randomMatrix(c, h, seed + 7, -2, 2), Array.from(randomRef([c], seed + 5, -0.5, 0.5).data))
            : affineModel(randomMatrix(c, d, seed, -2, 2), Array.from(randomRef([c], seed + 5, -1, 1).data));
          const n = 6;
          const got = await expectMatchesReference(model, imagesAtBounds(n, d, seed + 11), n, d, { p, variant, overshoot: 0.02, maxIterations: 20, candidates });
          seen.push(...got.iterations);
          nearTies += got.nearTies;
          // Images of one batch stopping at different iterations: the batch is compacted on the way.
          if (new Set(got.batchIterations).size > 1) staggered = true;
        }),
        { numRuns: 6 },
      );
      expect(nearTies).toBeLessThanOrEqual(seen.length);
      expect(seen.some((it) => it > 1)).toBe(true);
      expect(staggered).toBe(true);
    }, 60_000);
  }

  it('on an affine classifier inside the box, one L2 step lands on the nearest face times (1 + overshoot)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 2, max: 5 }), fc.integer({ min: 2, max: 8 }), arbSeed, async (c, d, seed) => {
        const w = randomMatrix(c, d, seed, -20, 20);
        const b = Array.from(randomRef([c], seed + 99, -1, 1).data);
        const model = affineModel(w, b);
        const x = Array.from(randomRef([d], seed + 7, 0.45, 0.55).data);
        const f = model.logits(x);
        const l = argmaxOf(f);
        const faces = w.map((wk, k) => {
          const dw = wk.map((v, e) => v - w[l][e]);
          const n2 = dw.reduce((s, v) => s + v * v, 0);
          return { k, dw, n2, dist: k === l ? Infinity : Math.abs(f[k] - f[l]) / Math.sqrt(n2) };
        });
        const best = faces.reduce((a, f2) => (f2.dist < a.dist ? f2 : a));
        fc.pre(best.dist < 0.04);
        const want = x.map((v, e) => v + (1.02 * Math.abs(f[best.k] - f[l]) * best.dw[e]) / best.n2);
        for (const clf of [model.clf, model.compiled]) {
          const res = await deepfool(clf, T.tensor(x, [1, 1, 1, d]), { p: 2, overshoot: 0.02 });
          expect(res.iterations[0]).toBe(1);
          expect(res.flipped[0]).toBe(1);
          expectClose(await res.adversarial.data(), want, { atol: 1e-5, rtol: 1e-4 }, 'adversarial');
        }
      }),
      { numRuns: 8 },
    );
  });
});

describe('readbacks and memory', () => {
  const model = () => affineModel(randomMatrix(4, 9, 17, -1, 1), [0, 0.1, -0.1, 0.2]);
  const x = () => T.tensor(imagesAtBounds(8, 9, 23), [8, 1, 3, 3]);

  it('one readback per DeepFool iteration (the active flags), the iterates in the same read when the callback takes them', async () => {
    const m = model();
    const xs = x();
    for (const clf of [m.clf, m.compiled]) {
      for (const variant of ['box', 'foolbox'] as const) {
        const reads: number[] = [];
        const quiet = await deepfool(clf, xs, { p: 2, variant, maxIterations: 20, onIteration: () => void reads.push(rt().readCount) });
        const frames: number[] = [];
        const frameReads: number[] = [];
        let last: number[] = [];
        const before = rt().readCount;
        const shown = await deepfool(clf, xs, {
          p: 2,
          variant,
          maxIterations: 20,
          onIteration: (_, __, current) => {
            frameReads.push(rt().readCount);
            last = Array.from(current());
            frames.push(last.length);
          },
        });
        const after = rt().readCount;
        // A point that flips at check i stops the loop's work for it after iteration i; one that never flips runs to the end.
        const ran = Math.max(...Array.from(shown.iterations, (v, i) => (shown.flipped[i] ? v + 1 : v)));
        expect(reads.length).toBe(ran);
        expect(frameReads.length).toBe(ran);
        for (let i = 1; i < ran; i++) {
          expect(reads[i] - reads[i - 1]).toBe(1);
          expect(frameReads[i] - frameReads[i - 1]).toBe(1);
        }
        // The image check, the clean prediction, one read per iteration and the final counts.
        expect(after - before).toBe(ran + 3);
        expect(frames.every((len) => len === xs.size)).toBe(true);
        expect(last).toEqual(Array.from(await shown.adversarial.data()));
        expect(Array.from(await shown.adversarial.data())).toEqual(Array.from(await quiet.adversarial.data()));
        [quiet.adversarial, shown.adversarial].forEach((t) => t.dispose());
      }
    }
  });

  it('leaves no buffer behind, also when the callback throws', async () => {
    const m = model();
    const xs = x();
    for (const clf of [m.clf, m.compiled]) {
      const live = rt().memory().liveBuffers;
      const res = await deepfool(clf, xs, { p: Infinity, maxIterations: 10 });
      res.adversarial.dispose();
      expect(rt().memory().liveBuffers).toBe(live);
      await expect(deepfool(clf, xs, { p: 2, onIteration: (it) => { if (it === 1) throw new Error('stop here'); } })).rejects.toThrow('stop here');
      expect(rt().memory().liveBuffers).toBe(live);
    }
  });
});

describe('compiled Carlini-Wagner step', () => {
  it('gives what the eager step gives (to 1e-6), tracing once for every iteration and search step', async () => {
    const model = createModel(modelConfig('gfz', 'compact', { channels: 2, hidden: 8, latent: 3, seed: 2, preset: 'custom' }));
    const x = T.randomUniform([2, 1, 28, 28], 4);
    for (const noise of [{ kind: 'fixed' as const, seed: 5 }, { kind: 'expectation' as const, seed: 5, draws: 2 }]) {
      // Attacked from its clean prediction under the draws its first iteration sees, so that it has work to do.
      const probe = bayesClassifier(model, { samples: 2, noise });
      const labels = T.tidy(() => T.argmax(Array.from({ length: probe.draws - 1 }, (_, k) => k + 1).reduce((z, k) => T.add(z, probe.logits(x, k)), probe.logits(x, 0))));
      const run = (compiling: boolean) =>
        withCompiling(compiling, async () => {
          const clf = bayesClassifier(model, { samples: 2, noise });
          const reads: number[] = [];
          const r = await cw(clf, x, labels, { iterations: 6, binarySearchSteps: 2, initialConst: 100, lr: 0.1, onIteration: () => void reads.push(rt().readCount) });
          // No readback inside a search step; one between steps (the successes, for the search).
          expect(reads.slice(1, 6).every((v) => v === reads[0])).toBe(true);
          expect(reads[6] - reads[5]).toBe(1);
          return { adv: await r.adversarial.data(), l2: Array.from(r.l2), success: Array.from(r.success), c: Array.from(r.const), next: clf.seeded!.nextSeed() };
        });
      const compiled = await run(true);
      const eager = await run(false);
      expectClose(compiled.adv, eager.adv, { atol: 1e-6, rtol: 0 }, `${noise.kind} adversarial`);
      expect(compiled.success).toEqual(eager.success);
      // Infinity where no adversarial was found, on both sides alike.
      const finite = (l2: number[]) => l2.map((v) => (Number.isFinite(v) ? v : -1));
      expectClose(finite(compiled.l2), finite(eager.l2), { atol: 1e-6, rtol: 1e-5 }, `${noise.kind} l2`);
      // Under fixed noise Adam does real work: an adversarial well away from the clean image. (Under fresh draws
      // the untrained model's prediction changes from draw to draw, so success comes at once.)
      if (noise.kind === 'fixed') expect(compiled.l2.some((v) => v > 0.1 && Number.isFinite(v))).toBe(true);
      expect(compiled.c).toEqual(eager.c);
      // Both drew the same seeds from the classifier's stream.
      expect(compiled.next).toBe(eager.next);
      const step = compiledOf(model, `cw step K=2 shared draws=${noise.kind === 'fixed' ? 1 : 2}`);
      expect(step.traces).toBe(1);
      labels.dispose();
    }
    model.params.dispose();
  }, 60_000);

  it('DeepFool on the same classifier: the compiled step gives what the eager step gives', async () => {
    const model = createModel(modelConfig('gfz', 'compact', { channels: 2, hidden: 8, latent: 3, seed: 2, preset: 'custom' }));
    const x = T.randomUniform([3, 1, 28, 28], 4);
    const run = (compiling: boolean) =>
      withCompiling(compiling, async () => {
        const r = await deepfool(bayesClassifier(model, { samples: 2, noise: { kind: 'fixed', seed: 5 } }), x, { p: 2, maxIterations: 3 });
        return { adv: await r.adversarial.data(), iterations: Array.from(r.iterations) };
      });
    const [compiled, eager] = [await run(true), await run(false)];
    expect(compiled.iterations).toEqual(eager.iterations);
    expectClose(compiled.adv, eager.adv, { atol: 1e-6, rtol: 0 }, 'adversarial');
    model.params.dispose();
  }, 60_000);
});

describe('compiled PGD and MIM steps', () => {
  it('give what the eager steps give, one command buffer per iteration, one trace for every eps of a sweep', async () => {
    const model = createModel(modelConfig('dfz', 'compact', { channels: 2, hidden: 8, latent: 3, seed: 2, preset: 'custom' }));
    const x = T.randomUniform([3, 1, 28, 28], 4);
    const labels = T.tensor([1, 7, 3], [3], 'i32');
    const iterations = 3;
    const cases = [
      { norm: 'linf' as const, momentum: 0, noise: { kind: 'fixed' as const, seed: 5 } },
      { norm: 'l2' as const, momentum: 0, noise: { kind: 'expectation' as const, seed: 5, draws: 2 } },
      { norm: 'linf' as const, momentum: 1, noise: { kind: 'fresh' as const, seed: 6 } },
    ];
    for (const { norm, momentum, noise } of cases) {
      const what = `${momentum ? 'mim' : 'pgd'} ${norm} ${noise.kind}`;
      const run = (compiling: boolean, eps: number) =>
        withCompiling(compiling, async () => {
          const clf = bayesClassifier(model, { samples: 2, noise });
          const submits: number[] = [];
          const adv = await iterativeAttack(clf, x, labels, { eps, norm, stepSize: eps / 2, iterations, randomStart: true, momentum, seed: 3, onIteration: () => void submits.push(rt().submitCount) });
          const out = { adv: await adv.data(), submits, next: clf.seeded!.nextSeed() };
          adv.dispose();
          return out;
        });
      const x0 = await x.data();
      for (const eps of [0.1, 0.05]) {
        const compiled = await run(true, eps);
        const eager = await run(false, eps);
        expectClose(compiled.adv, eager.adv, { atol: 1e-6, rtol: 0 }, `${what} eps ${eps}`);
        expect(compiled.next, what).toBe(eager.next);
        for (let i = 1; i < iterations; i++) expect(compiled.submits[i] - compiled.submits[i - 1], what).toBe(1);
        for (let i = 0; i < 3; i++) {
          const moved = Array.from(compiled.adv.subarray(i * 784, (i + 1) * 784), (v, j) => v - x0[i * 784 + j]);
          const size = norm === 'linf' ? Math.max(...moved.map(Math.abs)) : Math.hypot(...moved);
          expect(size, what).toBeGreaterThan(eps / 4);
          expect(size, what).toBeLessThanOrEqual(eps + 1e-5);
        }
      }
      const draws = noise.kind === 'expectation' ? 2 : 1;
      const step = compiledOf(model, `${momentum ? 'mim' : 'pgd'} step K=2 shared draws=${draws} ${norm}`);
      expect(step.traces, what).toBe(1);
    }
    labels.dispose();
    model.params.dispose();
  }, 120_000);
});

describe('compiled detection-aware PGD step', () => {
  it('gives what the eager step gives for every detector, both norms and every noise mode, one command buffer per iteration', async () => {
    const model = createModel(modelConfig('gfz', 'compact', { channels: 2, hidden: 8, latent: 3, seed: 2, preset: 'custom' }));
    const x = T.randomUniform([2, 1, 28, 28], 4);
    const labels = T.tensor([1, 7], [2], 'i32');
    // Thresholds from logits that favour their label, so every class has members and every detector a cut.
    const rows = 300;
    const noise = randomRef([rows, 10], 9, -1, 1).data;
    const fitted = Float32Array.from(noise, (v, i) => v + (i % 10 === Math.floor(i / 10) % 10 ? 4 : 0) - 60);
    const detectors = fitDetectors({ logits: fitted, labels: Int32Array.from({ length: rows }, (_, i) => i % 10), numClasses: 10 });
    const cases: [DetectorName, 'linf' | 'l2', NoiseMode][] = [
      ['marginal', 'linf', { kind: 'fixed', seed: 5 }],
      ['logit', 'l2', { kind: 'expectation', seed: 5, draws: 2 }],
      ['kl', 'linf', { kind: 'fresh', seed: 6 }],
    ];
    const iterations = 4;
    for (const [detector, norm, noiseMode] of cases) {
      const run = (compiling: boolean) =>
        withCompiling(compiling, async () => {
          const clf = bayesClassifier(model, { samples: 2, noise: noiseMode });
          const submits: number[] = [];
          const opts = { detector, lambda: 1, eps: 0.1, stepSize: 0.03, iterations, norm, randomStart: true, seed: 3, onIteration: () => void submits.push(rt().submitCount) };
          const adv = await adaptivePgd(clf, x, labels, detectors, opts);
          const out = { adv: await adv.data(), submits, next: clf.seeded!.nextSeed() };
          adv.dispose();
          return out;
        });
      const compiled = await run(true);
      const eager = await run(false);
      const what = `${detector} ${norm} ${noiseMode.kind}`;
      expectClose(compiled.adv, eager.adv, { atol: 1e-6, rtol: 0 }, what);
      // After the trace, each iteration is one replay: one submission.
      for (let i = 1; i < iterations; i++) expect(compiled.submits[i] - compiled.submits[i - 1], what).toBe(1);
      expect(compiled.next, what).toBe(eager.next);
      // The attack moved the images, within the ball.
      const x0 = await x.data();
      for (let i = 0; i < 2; i++) {
        const moved = Array.from(compiled.adv.subarray(i * 784, (i + 1) * 784), (v, j) => v - x0[i * 784 + j]);
        const size = norm === 'linf' ? Math.max(...moved.map(Math.abs)) : Math.hypot(...moved);
        expect(size, what).toBeGreaterThan(0.02);
        expect(size, what).toBeLessThanOrEqual(0.1 + 1e-5);
      }
    }
    labels.dispose();
    model.params.dispose();
  }, 90_000);
});

describe('compiled black-box queries', () => {
  it('Square gives what eager queries give, with one trace per bucket of active images', async () => {
    const model = createModel(modelConfig('gfz', 'compact', { channels: 2, hidden: 8, latent: 3, seed: 2, preset: 'custom' }));
    const n = 5;
    const x = T.randomUniform([n, 1, 28, 28], 8);
    for (const noise of [{ kind: 'fixed' as const, seed: 5 }, { kind: 'expectation' as const, seed: 5, draws: 2 }]) {
      // Labels: the clean prediction under the draws Square's first query sees for the first three images, another
      // class for the last two, which are misclassified from the start: the first query has five images, the next three.
      const probe = bayesClassifier(model, { samples: 2, noise });
      const predicted = T.tidy(() => T.argmax(noise.kind === 'fixed' ? probe.logits(x, 0) : T.add(probe.logits(x, 0), probe.logits(x, 1))));
      const labels = T.tensor(Array.from(await predicted.data(), (c, i) => (i < 3 ? c : (c + 1) % 10)), [n], 'i32');
      predicted.dispose();
      const run = (compiling: boolean, seeded = true) =>
        withCompiling(compiling, async () => {
          const full = bayesClassifier(model, { samples: 2, noise });
          const clf: Classifier = seeded ? full : { ...full, seeded: undefined };
          const sq = await squareAttack(clf, x, labels, { norm: 'linf', eps: 0.1, queryBudget: 12, seed: 4 });
          const out = { square: await sq.adversarial.data(), squareQueries: Array.from(sq.queries), next: full.seeded!.nextSeed() };
          sq.adversarial.dispose();
          return out;
        });
      const compiled = await run(true);
      const eager = await run(false);
      const unpadded = await run(true, false);
      expectClose(compiled.square, eager.square, { atol: 1e-6, rtol: 0 }, `${noise.kind} square`);
      expect(compiled.squareQueries).toEqual(eager.squareQueries);
      expect(compiled.next).toBe(eager.next);
      // Padding a query to its bucket with other rows of the batch leaves the queried rows' logits as they were.
      expect(compiled.squareQueries).toEqual(unpadded.squareQueries);
      expectClose(compiled.square, unpadded.square, { atol: 1e-5, rtol: 0 }, `${noise.kind} square, unpadded`);
      // The active set shrank through more than one bucket, and each bucket was traced once.
      // Query q held the images that made more than q queries.
      const sizes = Array.from({ length: Math.max(...compiled.squareQueries) }, (_, q) => compiled.squareQueries.filter((c) => c > q).length);
      const buckets = new Set(sizes.map((m) => Math.min(n, 2 ** Math.ceil(Math.log2(m)))));
      expect(buckets.size, noise.kind).toBeGreaterThan(1);
      const draws = noise.kind === 'fixed' ? 1 : 2;
      const traced = compiledOf(model, `square row query K=2 shared draws=${draws} of ${n}`);
      expect(traced.traces).toBe(buckets.size);
      labels.dispose();
    }
    model.params.dispose();
  }, 120_000);
});

describe('compiled HopSkipJump', () => {
  it('on the shipped GFZ: compiled searches and padded, masked gradient estimates give what eager and unpadded ones give', async () => {
    const { model } = loadModel('checkpoints/gfz-compact.safetensors');
    const n = 3;
    const images = parseIdx(readFileSync('web/public/data/test-images.idx3-ubyte'), 'images', 'test-images');
    const labelsIdx = parseIdx(readFileSync('web/public/data/test-labels.idx1-ubyte'), 'labels', 'test-labels');
    const x = T.tensor(Float32Array.from(images.data.subarray(0, n * 784), (v) => v / 255), [n, 1, 28, 28]);
    const labels = T.tensor(Array.from(labelsIdx.data.subarray(0, n)), [n], 'i32');
    const run = (compiling: boolean, seeded = true) =>
      withCompiling(compiling, async () => {
        const full = bayesClassifier(model, { samples: 2, noise: { kind: 'fixed', seed: 5 } });
        const clf: Classifier = seeded ? full : { ...full, seeded: undefined };
        // 9 samples, then 12: the first padded to a bucket of 10 and masked.
        const r = await hopSkipJump(clf, x, labels, { queryBudget: 120, initNumEvals: 9, maxNumEvals: 16, maxIterations: 2, maxInitTrials: 20, seed: 4 });
        const out = { adv: await r.adversarial.data(), queries: Array.from(r.queries), l2: Array.from(r.l2) };
        r.adversarial.dispose();
        return out;
      });
    const compiled = await run(true);
    const eager = await run(false);
    const unpadded = await run(true, false);
    expectClose(compiled.adv, eager.adv, { atol: 1e-6, rtol: 0 }, 'adversarial');
    expect(compiled.queries).toEqual(eager.queries);
    // Padding the samples adds masked draws after the real ones: the estimate is the unpadded one, up to the order of the sums.
    expect(compiled.queries).toEqual(unpadded.queries);
    expectClose(compiled.adv, unpadded.adv, { atol: 1e-4, rtol: 0 }, 'adversarial, unpadded');
    // The attack went past its starting points into gradient steps.
    expect(compiled.queries.some((q) => q > 40)).toBe(true);
    const estimated = compiledOf(model, 'hopskipjump estimate K=2 shared draws=1 of 3');
    expect(estimated.traces).toBeGreaterThan(0);
    [x, labels].forEach((t) => t.dispose());
    model.dispose();
  }, 120_000);
});

describe('bad input', () => {
  it('gets the errors it got before the loop moved to the GPU', async () => {
    const m = affineModel([[1], [0]], [0, 0]);
    const x = T.tensor([0.5], [1, 1, 1, 1]);
    for (const clf of [m.clf, m.compiled]) {
      await expect(deepfool(clf, x, { p: 1 })).rejects.toThrow(/deepfool: p must be > 1 \(2, Infinity or any p > 1\), got 1/);
      await expect(deepfool(clf, T.tensor([1.5], [1, 1, 1, 1]), { p: 2 })).rejects.toThrow(/deepfool: image values must lie in \[0, 1\], got range \[1.5, 1.5\]/);
      await expect(deepfool(clf, T.tensor([0.5], [1, 1]), { p: 2 })).rejects.toThrow(/deepfool: images must be f32 \[N, 1, H, W\]/);
      await expect(deepfool(clf, x, { p: 2, variant: 'cleverhans' as DeepFoolVariant })).rejects.toThrow(/deepfool: variant must be 'box' or 'foolbox', got 'cleverhans'/);
      await expect(deepfool(clf, x, { p: 3, variant: 'foolbox' })).rejects.toThrow(/deepfool: the 'foolbox' variant supports p = 2 and p = Infinity only .*got p = 3$/);
      await expect(deepfool(clf, x, { p: 2, candidates: 3 })).rejects.toThrow(/deepfool: candidates applies to the 'foolbox' variant only/);
      await expect(deepfool(clf, x, { p: 2, variant: 'foolbox', candidates: 1 })).rejects.toThrow(/deepfool: candidates must be an integer >= 2, got 1/);
      await expect(deepfool(clf, x, { p: 2, overshoot: -0.1 })).rejects.toThrow(/deepfool: overshoot must be a finite number >= 0, got -0.1/);
      await expect(deepfool(clf, x, { p: 2, maxIterations: 0 })).rejects.toThrow(/deepfool: maxIterations must be a positive integer, got 0/);
    }
    await expect(cw(m.clf, x, T.tensor([0], [1], 'i32'), { iterations: 0 })).rejects.toThrow(/cw: iterations must be an integer >= 1, got 0/);
    await expect(cw(m.clf, x, T.tensor([2], [1], 'i32'), { iterations: 1 })).rejects.toThrow(/cw: label 0 is 2, outside \[0, 2\)/);
  });

  it('current() read from a callback that does not declare it says what to do', async () => {
    const m = affineModel([[0, 0], [1, 0]], [0, -0.6]);
    const onIteration = function (this: unknown) {
      (arguments[2] as () => Float32Array)();
    };
    await expect(deepfool(m.clf, T.tensor([0.5, 0.5], [1, 1, 1, 2]), { p: 2, onIteration })).rejects.toThrow(/deepfool: current\(\) reads the iterates back only for an onIteration callback that declares its third parameter/);
  });
});
