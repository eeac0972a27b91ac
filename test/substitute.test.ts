// The black-box attacker's substitute CNN learns the labels it is given, reproducibly.
import { describe, it, expect } from 'vitest';
import { useGpu, randomRef } from './helpers.js';
import { trainSubstitute, SUBSTITUTE_DEFAULTS } from '../src/models/substitute.js';

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
