import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, toGpu, download, expectClose, randomRef, arbShape, arbSeed, RUNS, checkVjp } from './helpers.js';
import { uniformKernel, normalKernel, dropoutKernel } from '../src/kernels/random.js';
import { philox4x32 } from '../src/autograd/rng.js';
import { refPhilox4x32, refUniform, refNormal, refDropoutMask } from '../src/reference/random.js';
import { refMap } from '../src/reference/elementwise.js';
import type { Ref } from '../src/reference/tensor.js';

useGpu();

const N_STAT = 100_000;
/** Kolmogorov-Smirnov critical value at significance 0.001 for N_STAT samples. */
const KS_CRITICAL = 1.95 / Math.sqrt(N_STAT);

const arbFullSeed = fc.oneof(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.maxSafeNat());
const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

function meanVar(xs: ArrayLike<number>): { mean: number; variance: number } {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  const mean = s / xs.length;
  let q = 0;
  for (let i = 0; i < xs.length; i++) q += (xs[i] - mean) ** 2;
  return { mean, variance: q / (xs.length - 1) };
}

const minOf = (xs: Float64Array) => xs.reduce((a, b) => Math.min(a, b), Infinity);
const maxOf = (xs: Float64Array) => xs.reduce((a, b) => Math.max(a, b), -Infinity);

/** sup |F_n(x) - F(x)| over the sample. */
function ksStatistic(xs: ArrayLike<number>, cdf: (x: number) => number): number {
  const sorted = Float64Array.from(xs).sort();
  const n = sorted.length;
  let d = 0;
  for (let i = 0; i < n; i++) {
    const f = cdf(sorted[i]);
    d = Math.max(d, (i + 1) / n - f, f - i / n);
  }
  return d;
}

/** Standard normal CDF via erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7). */
function normalCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * z);
  const poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  const erf = 1 - poly * Math.exp(-z * z);
  return x >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

describe('Philox4x32-10', () => {
  // Known-answer vectors from Random123 (kat_vectors, philox4x32 10 rounds).
  const kat: [number[], number[], number[]][] = [
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]],
    [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]],
  ];
  it('host and BigInt reference reproduce the Random123 known answers', () => {
    for (const [ctr, key, want] of kat) {
      expect(refPhilox4x32(ctr, key)).toEqual(want);
      expect(philox4x32(ctr, key)).toEqual(want);
    }
  });

  it('host (16-bit limb) and BigInt implementations agree on random counters and keys', () => {
    const u32 = fc.integer({ min: 0, max: 2 ** 32 - 1 });
    fc.assert(
      fc.property(fc.tuple(u32, u32, u32, u32), fc.tuple(u32, u32), (ctr, key) => {
        expect(philox4x32(ctr, key)).toEqual(refPhilox4x32(ctr, key));
      }),
      { numRuns: 200 },
    );
  });
});

describe('GPU random kernels match the reference', () => {
  it('uniform is bit-identical for random shapes, seeds and streams', async () => {
    await fc.assert(
      fc.asyncProperty(arbShape(1, 3, 40), arbFullSeed, arbFullSeed, async (shape, seed, stream) => {
        const got = await download(uniformKernel(shape, { seed, stream }));
        const want = refUniform(size(shape), seed, stream);
        expect(got.length).toBe(want.length);
        for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) expect.fail(`element ${i}: got ${got[i]}, want ${want[i]} (seed ${seed}, stream ${stream})`);
      }),
      RUNS,
    );
  });

  it('normal matches Box-Muller on the same words within f32 transcendental error', async () => {
    await fc.assert(
      fc.asyncProperty(arbShape(1, 3, 30), arbFullSeed, fc.nat(1000), async (shape, seed, stream) => {
        const n = size(shape);
        const got = await download(normalKernel(shape, { seed, stream }));
        // Pairs complete, so each element's radius r = |(z_even, z_odd)| is known.
        const want = refNormal(n + 1, seed, stream);
        for (let i = 0; i < n; i++) {
          const pair = i - (i % 2);
          const r = Math.hypot(want[pair], want[pair + 1]);
          // WGSL lets cos and sin err by 2^-11 absolutely (SwiftShader comes close); log and sqrt add a little.
          const tol = r * 2 ** -11 + 1e-5 * Math.abs(want[i]) + 2e-5;
          if (!(Math.abs(got[i] - want[i]) <= tol)) expect.fail(`normal element ${i}: got ${got[i]}, want ${want[i]} (tolerance ${tol}, seed ${seed}, stream ${stream})`);
        }
      }),
      RUNS,
    );
  });

  it('dropout keeps exactly the reference mask and scales by 1/(1 - rate) in f32', async () => {
    await fc.assert(
      fc.asyncProperty(arbShape(1, 3, 30), arbFullSeed, fc.double({ min: 0, max: 0.95, noNaN: true }), async (shape, seed, rate) => {
        const x = randomRef(shape, seed % 1000 + 1);
        const got = await download(dropoutKernel(toGpu(x), rate, { seed }));
        const mask = refDropoutMask(x.data.length, rate, seed);
        const scale = Math.fround(1 / (1 - rate));
        const want = x.data.map((v, i) => (mask[i] ? Math.fround(Math.fround(v) * scale) : 0));
        expect(Array.from(got)).toEqual(Array.from(want));
      }),
      RUNS,
    );
  });
});

describe('reproducibility', () => {
  it('same seed gives the same values; other seeds and streams differ', async () => {
    const [a, b, c, d] = await T.readAll([
      T.randomUniform([1000], 42),
      T.randomUniform([1000], 42),
      T.randomUniform([1000], 43),
      uniformKernel([1000], { seed: 42, stream: 1 }),
    ]);
    expect(Array.from(a)).toEqual(Array.from(b));
    const same = (x: ArrayLike<number>, y: ArrayLike<number>) => Array.from(x).filter((v, i) => v === y[i]).length;
    expect(same(a, c)).toBeLessThan(5);
    expect(same(a, d)).toBeLessThan(5);
  });

  it('element i depends only on i: a shorter draw is a prefix of a longer one, whatever the shape', async () => {
    const [long, short, shaped] = await T.readAll([T.randomNormal([999], 7), T.randomNormal([13], 7), T.randomNormal([3, 111], 7)]);
    expect(Array.from(short)).toEqual(Array.from(long.slice(0, 13)));
    expect(Array.from(shaped)).toEqual(Array.from(long.slice(0, 333)));
  });

  it('uniform, normal and dropout draws from one seed use disjoint counters', async () => {
    const [u, kept] = await T.readAll([T.randomUniform([4096], 5), T.dropout(T.ones([4096]), 0.5, 5)]);
    // If dropout reused the uniform words, kept would be exactly u >= 0.5.
    const agree = Array.from(u).filter((v, i) => (v >= 0.5) === (kept[i] !== 0)).length / u.length;
    expect(Math.abs(agree - 0.5)).toBeLessThan(0.05);
  });
});

describe('statistics on 1e5 samples', () => {
  for (const seed of [1, 2 ** 40 + 3]) {
    it(`uniform in [0, 1): mean, variance, range and KS (seed ${seed})`, async () => {
      const u = await download(T.randomUniform([N_STAT], seed));
      expect(minOf(u)).toBeGreaterThanOrEqual(0);
      expect(maxOf(u)).toBeLessThan(1);
      const { mean, variance } = meanVar(u);
      // Standard errors: 9.1e-4 for the mean, 2.4e-4 for the variance.
      expect(Math.abs(mean - 0.5)).toBeLessThan(5e-3);
      expect(Math.abs(variance - 1 / 12)).toBeLessThan(1.5e-3);
      expect(ksStatistic(u, (x) => Math.min(Math.max(x, 0), 1))).toBeLessThan(KS_CRITICAL);
    });

    it(`normal: mean, variance and KS against the normal CDF (seed ${seed})`, async () => {
      const z = await download(T.randomNormal([N_STAT], seed, 2, 3));
      const { mean, variance } = meanVar(z);
      // Standard errors: 9.5e-3 for the mean, 4.0e-2 for the variance (std 3).
      expect(Math.abs(mean - 2)).toBeLessThan(0.05);
      expect(Math.abs(variance - 9)).toBeLessThan(0.2);
      expect(ksStatistic(z, (x) => normalCdf((x - 2) / 3))).toBeLessThan(KS_CRITICAL);
      // Box-Muller on 24-bit uniforms cannot exceed sqrt(2 * 24 * ln 2) standard deviations.
      expect(maxOf(z.map((v) => Math.abs(v - 2) / 3))).toBeLessThan(Math.sqrt(48 * Math.LN2) + 1e-4);
    });
  }

  it('randomUniform with bounds stays in [lo, hi), even when lo + span * u would round up to hi', async () => {
    const u = await download(T.randomUniform([N_STAT], 9, -3, 5));
    expect(minOf(u)).toBeGreaterThanOrEqual(-3);
    expect(maxOf(u)).toBeLessThan(5);
    expect(Math.abs(meanVar(u).mean - 1)).toBeLessThan(0.05);
    expectClose(u, refMap({ shape: [N_STAT], data: refUniform(N_STAT, 9) }, (v) => -3 + 8 * v), { rtol: 0, atol: 1e-6 }, 'affine uniform');
    const narrow = await download(T.randomUniform([4096], 9, 1, 1 + 2 ** -23));
    expect(narrow.every((v) => v === 1)).toBe(true);
  });

  it('dropout zeroes a fraction ≈ rate and keeps the expectation', async () => {
    for (const rate of [0.1, 0.5, 0.8]) {
      const y = await download(T.dropout(T.ones([N_STAT]), rate, 11));
      const zeroed = y.filter((v) => v === 0).length / N_STAT;
      // Standard error of the fraction <= 1.6e-3.
      expect(Math.abs(zeroed - rate)).toBeLessThan(0.01);
      expect(y.every((v) => v === 0 || v === Math.fround(1 / (1 - rate)))).toBe(true);
      expect(Math.abs(meanVar(y).mean - 1)).toBeLessThan(0.05);
    }
  });
});

describe('dropout as an op', () => {
  const refDropout = (x: Ref, rate: number, seed: number): Ref => {
    const mask = refDropoutMask(x.data.length, rate, seed);
    return { shape: [...x.shape], data: x.data.map((v, i) => (mask[i] * v) / (1 - rate)) };
  };

  it('gradient applies the same mask and scale (checkVjp)', async () => {
    await fc.assert(
      fc.asyncProperty(arbShape(1, 3, 8), arbSeed, fc.double({ min: 0.05, max: 0.9, noNaN: true }), async (shape, seed, rate) => {
        const x = randomRef(shape, seed);
        await checkVjp((t) => T.dropout(t, rate, seed), (r) => refDropout(r, rate, seed), [x], seed, { what: 'dropout' });
      }),
      RUNS,
    );
  });

  it('gradient of sum(dropout(x)) is exactly mask / (1 - rate)', async () => {
    const x = T.randomNormal([500], 3).requireGrad();
    T.backward(T.sum(T.dropout(x, 0.25, 77)));
    const mask = refDropoutMask(500, 0.25, 77);
    expect(Array.from(await download(x.grad!))).toEqual(Array.from(mask, (k) => k * Math.fround(1 / 0.75)));
  });

  it('is the identity when not training or at rate 0, gradient included', async () => {
    const x = randomRef([4, 5], 8);
    for (const f of [(t: T.Tensor) => T.dropout(t, 0.5, 1, false), (t: T.Tensor) => T.dropout(t, 0, 1)]) {
      expectClose(await download(f(toGpu(x))), x, { rtol: 0, atol: 0 }, 'identity');
      await checkVjp(f, (r) => r, [x], 8, { what: 'identity dropout' });
    }
  });

  it('rejects bad rates, seeds and bounds with clear messages', () => {
    const x = T.ones([3]);
    for (const rate of [-0.1, 1, 1.5, NaN]) expect(() => T.dropout(x, rate, 1)).toThrow(/dropout: rate must be in \[0, 1\)/);
    for (const seed of [-1, 1.5, NaN, 2 ** 53, Infinity]) {
      expect(() => T.dropout(x, 0.5, seed)).toThrow(/dropout: seed must be an integer in \[0, 2\^53\)/);
      expect(() => T.randomUniform([2], seed)).toThrow(/randomUniform: seed must be an integer/);
      expect(() => T.randomNormal([2], seed)).toThrow(/randomNormal: seed must be an integer/);
    }
    expect(() => T.randomUniform([2], 1, 1, 1)).toThrow(/randomUniform: bounds \[1, 1\) must be finite with lo < hi/);
    expect(() => T.randomUniform([2], 1, 0, NaN)).toThrow(/randomUniform: bounds/);
    expect(() => T.randomNormal([2], 1, 0, -1)).toThrow(/randomNormal: .*std -1/);
    expect(() => T.randomNormal([2, 0], 1)).toThrow(/randomNormal: invalid shape/);
    expect(() => T.dropout(T.tensor([1], [1], 'i32'), 0.5, 1)).toThrow(/dropout: expected an f32 tensor/);
  });
});

describe('Rng', () => {
  it('is reproducible from its root seed and streams from different roots differ', () => {
    const draw = (seed: number) => {
      const r = new T.Rng(seed);
      return [r.nextU32(), r.nextSeed(), r.float(), r.int(10), r.fork().nextSeed(), r.nextSeed()];
    };
    expect(draw(123)).toEqual(draw(123));
    expect(draw(123)).not.toEqual(draw(124));
    expect(draw(2 ** 52 + 1)).not.toEqual(draw(1));
  });

  it('draws seeds in [0, 2^53), floats in [0, 1) and unbiased integers', () => {
    const r = new T.Rng(2024);
    const counts = new Array(7).fill(0);
    for (let i = 0; i < 7000; i++) {
      const s = r.nextSeed();
      expect(Number.isSafeInteger(s) && s >= 0).toBe(true);
      const f = r.float();
      expect(f >= 0 && f < 1).toBe(true);
      counts[r.int(7)]++;
    }
    // Each count is Binomial(7000, 1/7): standard deviation 29.
    for (const c of counts) expect(Math.abs(c - 1000)).toBeLessThan(150);
    const seeds = new Set(Array.from({ length: 1000 }, () => r.nextSeed()));
    expect(seeds.size).toBe(1000);
  });

  it('rejects bad root seeds and bounds', () => {
    expect(() => new T.Rng(-1)).toThrow(/Rng: seed must be an integer/);
    expect(() => new T.Rng(0.5)).toThrow(/Rng: seed must be an integer/);
    expect(() => new T.Rng(1).int(0)).toThrow(/Rng.int: bound must be a positive integer/);
  });
});
