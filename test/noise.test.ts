// The classifier's randomness as a threat model: fixed, fresh and EOT noise are reproducible from their seed,
// differ across seeds, and fixed noise never changes.
import { describe, it, expect } from 'vitest';
import * as T from './lib.js';
import { useGpu } from './helpers.js';
import { createModel, modelConfig } from '../src/models/factorisations.js';
import { bayesClassifier, lossGradient } from '../src/attacks/classifier.js';
import { Rng } from '../src/index.js';
import { iterativeAttack } from '../src/attacks/gradient.js';

useGpu();

const tiny = () => createModel(modelConfig('gfz', 'compact', { channels: 2, hidden: 8, latent: 3, seed: 2, preset: 'custom' }));
const same = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).every((v, i) => v === b[i]);

describe('noise modes', () => {
  it('fixed noise: every call sees the same draws; fresh: every call new ones, the same sequence from the same seed', async () => {
    const model = tiny();
    const x = T.randomUniform([3, 1, 28, 28], 4);
    const fixed = bayesClassifier(model, { samples: 2, noise: { kind: 'fixed', seed: 5 } });
    const fresh = bayesClassifier(model, { samples: 2, noise: { kind: 'fresh', seed: 5 } });
    const again = bayesClassifier(model, { samples: 2, noise: { kind: 'fresh', seed: 5 } });
    const other = bayesClassifier(model, { samples: 2, noise: { kind: 'fresh', seed: 6 } });
    const [f1, f2, a1, a2, b1, b2, o1] = await T.readAll([fixed.logits(x, 0), fixed.logits(x, 3), fresh.logits(x, 0), fresh.logits(x, 0), again.logits(x, 0), again.logits(x, 0), other.logits(x, 0)]);
    expect(same(f1, f2)).toBe(true);
    expect(same(a1, a2)).toBe(false);
    expect(same(a1, b1) && same(a2, b2)).toBe(true);
    expect(same(a1, o1)).toBe(false);
    model.params.dispose();
  });

  it('EOT averages the loss gradient over fresh draws: the mean of the per-copy gradients of one stacked call', async () => {
    const model = tiny();
    const x = T.randomUniform([2, 1, 28, 28], 8);
    const labels = T.tensor([1, 7], [2], 'i32');
    const eot = bayesClassifier(model, { samples: 2, noise: { kind: 'expectation', seed: 9, draws: 3 } });
    expect(eot.draws).toBe(3);
    const averaged = await lossGradient(eot, x, labels).grad.data();
    const again = await lossGradient(bayesClassifier(model, { samples: 2, noise: { kind: 'expectation', seed: 9, draws: 3 } }), x, labels).grad.data();
    const other = await lossGradient(bayesClassifier(model, { samples: 2, noise: { kind: 'expectation', seed: 10, draws: 3 } }), x, labels).grad.data();
    expect(same(averaged, again)).toBe(true);
    expect(same(averaged, other)).toBe(false);
    // The reference: three copies of the batch under the first seed of the stream, each copy's cross-entropy
    // differentiated on its own (fixed noise, so each copy keeps its draws), then averaged.
    const seed = new Rng(9).nextSeed();
    const xHost = await x.data();
    const stacked = T.tensor(Float32Array.from({ length: 3 * xHost.length }, (_, i) => xHost[i % xHost.length]), [6, 1, 28, 28]).requireGrad();
    const loss = T.sum(T.crossEntropy(model.logits(stacked, { samples: 2, seed }), T.tensor([1, 7, 1, 7, 1, 7], [6], 'i32'), 'none'));
    const perCopy = await T.gradients(loss, null, [stacked]).get(stacked)!.data();
    const d = xHost.length;
    let worst = 0;
    let scale = 0;
    averaged.forEach((v, i) => {
      worst = Math.max(worst, Math.abs(v - (perCopy[i] + perCopy[d + i] + perCopy[2 * d + i]) / 3));
      scale = Math.max(scale, Math.abs(v));
    });
    expect(scale).toBeGreaterThan(0);
    expect(worst).toBeLessThan(1e-4 * scale + 1e-7);
    // The copies saw different draws: their gradients differ.
    expect(same(perCopy.slice(0, d), perCopy.slice(d, 2 * d))).toBe(false);
    expect(() => bayesClassifier(model, { noise: { kind: 'expectation', seed: 1, draws: 0 } })).toThrow(/EOT draws must be a positive integer, got 0/);
    model.params.dispose();
  });

  it('an attack under fresh noise: same seed, same result; another seed, another; under fixed noise the classifier seed alone decides', async () => {
    const model = tiny();
    const x = T.randomUniform([2, 1, 28, 28], 3);
    const labels = T.tensor([0, 4], [2], 'i32');
    const run = (noise: Parameters<typeof bayesClassifier>[1]['noise']) =>
      iterativeAttack(bayesClassifier(model, { samples: 2, noise }), x, labels, { eps: 0.1, norm: 'linf', stepSize: 0.05, iterations: 3, randomStart: false, seed: 1 }).then((t) => t.data());
    const [a, b, c] = [await run({ kind: 'fresh', seed: 11 }), await run({ kind: 'fresh', seed: 11 }), await run({ kind: 'fresh', seed: 12 })];
    expect(same(a, b)).toBe(true);
    expect(same(a, c)).toBe(false);
    const [f, g] = [await run({ kind: 'fixed', seed: 11 }), await run({ kind: 'fixed', seed: 11 })];
    expect(same(f, g)).toBe(true);
    expect(same(f, a)).toBe(false);
    model.params.dispose();
  });
});
