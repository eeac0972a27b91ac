// The black-box attacker's substitute CNN learns the labels it is given, reproducibly.
import { describe, it, expect } from 'vitest';
import { useGpu, randomRef } from './helpers.js';
import { trainSubstitute, trainAugmentedSubstitute, SUBSTITUTE_DEFAULTS } from '../src/models/substitute.js';

useGpu();

/** Images bright on the left (label 3) or on the right (label 7), with noise. */
function synthetic(n: number, seed: number): { images: Float32Array; labels: Int32Array } {
  const noise = randomRef([n * 784], seed, 0, 0.4).data;
  const labels = Int32Array.from({ length: n }, (_, i) => (i % 2 ? 7 : 3));
  const images = Float32Array.from({ length: n * 784 }, (_, k) => {
    const i = Math.floor(k / 784);
    const col = (k % 784) % 28;
    return Math.min(1, noise[k] + ((labels[i] === 3) === col < 14 ? 0.5 : 0));
  });
  return { images, labels };
}

describe('substitute', () => {
  it('fits the labels it is given, and the same data and seed give the same weights', async () => {
    const { images, labels } = synthetic(60, 5);
    const config = { ...SUBSTITUTE_DEFAULTS, channels: 4, hidden: 16, epochs: 6, batchSize: 20, lr: 3e-3 };
    const a = await trainSubstitute(images, labels, config);
    const b = await trainSubstitute(images, labels, config);
    expect(a.trainAgreement).toBeGreaterThan(0.9);
    const [sa, sb] = [await a.model.params.state(), await b.model.params.state()];
    for (const k of Object.keys(sa)) expect(Array.from(sa[k])).toEqual(Array.from(sb[k]));
    a.model.params.dispose();
    b.model.params.dispose();
  });

  it('names bad input', async () => {
    const { images, labels } = synthetic(4, 1);
    await expect(trainSubstitute(images.subarray(0, 100), labels, SUBSTITUTE_DEFAULTS)).rejects.toThrow(/substitute: 100 pixel values for 4 labels \(expected 3136\)/);
    await expect(trainSubstitute(images, labels, { ...SUBSTITUTE_DEFAULTS, epochs: 0 })).rejects.toThrow(/epochs must be a positive integer, got 0/);
    await expect(trainSubstitute(images, Int32Array.from([0, 1, 2, 12]), SUBSTITUTE_DEFAULTS)).rejects.toThrow(/labels must lie in \[0, 10\), got 12/);
  });
});

describe('Jacobian augmentation', () => {
  /** The victim: bright left half means 3, bright right half 7. */
  const oracle = async (images: Float32Array) => {
    const calls = images.length / 784;
    return Int32Array.from({ length: calls }, (_, i) => {
      let left = 0;
      let right = 0;
      for (let k = 0; k < 784; k++) (k % 28 < 14 ? (v: number) => (left += v) : (v: number) => (right += v))(images[i * 784 + k]);
      return left > right ? 3 : 7;
    });
  };
  const config = { ...SUBSTITUTE_DEFAULTS, channels: 4, hidden: 16, epochs: 3, batchSize: 20, lr: 3e-3 };

  it('doubles the set each round with victim-labelled Jacobian steps of size lambda, reproducibly', async () => {
    const { images, labels } = synthetic(10, 3);
    const asked: Float32Array[] = [];
    const spy = async (x: Float32Array) => {
      asked.push(x);
      return oracle(x);
    };
    const a = await trainAugmentedSubstitute(images, labels, spy, config, { rounds: 2, lambda: 0.1 });
    expect(a.images).toBe(40);
    expect(a.queries).toBe(30);
    expect(asked.map((x) => x.length / 784)).toEqual([10, 20]);
    // Round one moves each seed pixel by exactly lambda (or to a bound of the box, or not at all where the gradient is 0).
    let moved = 0;
    asked[0].forEach((v, k) => {
      const d = Math.abs(v - images[k]);
      expect(v >= 0 && v <= 1).toBe(true);
      expect(Math.abs(d - 0.1) < 1e-6 || d < 1e-7 || v === 0 || v === 1).toBe(true);
      moved += +(d > 1e-7);
    });
    expect(moved).toBeGreaterThan(images.length / 2);
    const b = await trainAugmentedSubstitute(images, labels, oracle, config, { rounds: 2, lambda: 0.1 });
    const [sa, sb] = [await a.model.params.state(), await b.model.params.state()];
    for (const k of Object.keys(sa)) expect(Array.from(sa[k])).toEqual(Array.from(sb[k]));
    expect(a.trainAgreement).toBe(b.trainAgreement);
    // No rounds: the plain fit on the seed set.
    const plain = await trainSubstitute(images, labels, config);
    const none = await trainAugmentedSubstitute(images, labels, oracle, config, { rounds: 0, lambda: 0.1 });
    expect(none.queries).toBe(0);
    const [sp, sn] = [await plain.model.params.state(), await none.model.params.state()];
    for (const k of Object.keys(sp)) expect(Array.from(sp[k])).toEqual(Array.from(sn[k]));
    [a, b, plain, none].forEach((f) => f.model.params.dispose());
  });

  it('names bad input', async () => {
    const { images, labels } = synthetic(4, 1);
    await expect(trainAugmentedSubstitute(images, labels, oracle, config, { rounds: -1, lambda: 0.1 })).rejects.toThrow(/augmentation rounds must be an integer >= 0, got -1/);
    await expect(trainAugmentedSubstitute(images, labels, oracle, config, { rounds: 1, lambda: 0 })).rejects.toThrow(/augmentation lambda must lie in \(0, 1\], got 0/);
    await expect(trainAugmentedSubstitute(images, labels, async () => new Int32Array(1), config, { rounds: 1, lambda: 0.1 })).rejects.toThrow(/the oracle labelled 1 of 4 images/);
  });
});
