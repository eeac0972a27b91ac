import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, toGpu, download, expectClose, randomRef, arbShape, arbSeed, RUNS, checkVjp } from './helpers.js';
import { refMap, refZip, refUnaryFns, refBinaryFns, refClamp } from '../src/reference/elementwise.js';
import { ref, type Ref } from '../src/reference/tensor.js';

useGpu();

// Inputs kept inside each op's domain, away from kinks where finite differences are meaningless.
const unaryCases: { op: keyof typeof refUnaryFns; lo: number; hi: number; smooth: boolean }[] = [
  { op: 'neg', lo: -3, hi: 3, smooth: true },
  { op: 'exp', lo: -3, hi: 3, smooth: true },
  { op: 'log', lo: 0.1, hi: 5, smooth: true },
  { op: 'sqrt', lo: 0.1, hi: 5, smooth: true },
  { op: 'square', lo: -3, hi: 3, smooth: true },
  { op: 'abs', lo: -3, hi: 3, smooth: false },
  { op: 'sign', lo: -3, hi: 3, smooth: false },
  { op: 'relu', lo: -3, hi: 3, smooth: false },
  { op: 'sigmoid', lo: -8, hi: 8, smooth: true },
  { op: 'softplus', lo: -8, hi: 8, smooth: true },
  { op: 'tanh', lo: -4, hi: 4, smooth: true },
];

/** Moves values away from 0 so kinked ops (abs, relu) are differentiable at every sample. */
const awayFromZero = (r: Ref): Ref => refMap(r, (v) => (Math.abs(v) < 0.05 ? v + 0.1 * Math.sign(v || 1) : v));

describe('unary kernels match the float64 reference', () => {
  for (const { op, lo, hi } of unaryCases) {
    it(op, async () => {
      await fc.assert(
        fc.asyncProperty(arbShape(0, 4, 40), arbSeed, async (shape, seed) => {
          const x = randomRef(shape, seed, lo, hi);
          const y = (T as unknown as Record<string, (t: T.Tensor) => T.Tensor>)[op](toGpu(x));
          expectClose(await download(y), refMap(x, refUnaryFns[op]), { rtol: 2e-6 * 8, atol: 1e-6 }, op);
        }),
        RUNS,
      );
    });
  }

  it('stable forms stay finite at extreme inputs', async () => {
    const x = ref([-1000, -88, -20, 0, 20, 88, 1000], [7]);
    for (const op of ['sigmoid', 'softplus', 'tanh'] as const) {
      const y = await download(T[op](toGpu(x)));
      expectClose(y, refMap(x, refUnaryFns[op]), { rtol: 1e-6, atol: 1e-6 }, op);
    }
  });

  it('clamp and affine', async () => {
    await fc.assert(
      fc.asyncProperty(arbShape(1, 3, 30), arbSeed, fc.double({ min: -1, max: 0, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), async (shape, seed, lo, hi) => {
        const x = randomRef(shape, seed, -2, 2);
        expectClose(await download(T.clamp(toGpu(x), lo, hi)), refClamp(x, Math.fround(lo), Math.fround(hi)), { rtol: 0, atol: 1e-7 }, 'clamp');
        expectClose(await download(T.affine(toGpu(x), 3, -0.5)), refMap(x, (v) => 3 * v - 0.5), { rtol: 1e-6, atol: 1e-6 }, 'affine');
      }),
      RUNS,
    );
  });
});

/** A pair of shapes that broadcast: b is a with some dims set to 1 and some leading dims dropped. */
const arbBroadcastPair = fc
  .tuple(arbShape(1, 5, 12), fc.array(fc.boolean(), { minLength: 5, maxLength: 5 }), fc.integer({ min: 0, max: 2 }), fc.boolean())
  .map(([a, ones, drop, swap]) => {
    const b = a.map((d, k) => (ones[k] ? 1 : d)).slice(Math.min(drop, a.length - 1));
    return swap ? [b, a] : [a, b];
  });

describe('binary kernels broadcast like NumPy and match the reference', () => {
  for (const op of Object.keys(refBinaryFns) as (keyof typeof refBinaryFns)[]) {
    it(op, async () => {
      await fc.assert(
        fc.asyncProperty(arbBroadcastPair, arbSeed, async ([sa, sb], seed) => {
          const a = randomRef(sa, seed);
          const b = op === 'div' ? randomRef(sb, seed + 1, 0.5, 2) : randomRef(sb, seed + 1);
          const y = T[op](toGpu(a), toGpu(b));
          const want = refZip(a, b, refBinaryFns[op]);
          expect(y.shape).toEqual(want.shape);
          expectClose(await download(y), want, { rtol: 1e-6, atol: 1e-6 }, op);
        }),
        RUNS,
      );
    });
  }

  it('rejects shapes that do not broadcast, naming the op and shapes', () => {
    expect(() => T.add(T.zeros([2, 3]), T.zeros([4]))).toThrow(/add: shapes \[2, 3\] and \[4\]/);
  });
});

describe('elementwise gradients against finite differences', () => {
  for (const { op, lo, hi, smooth } of unaryCases) {
    if (op === 'sign') continue;
    it(op, async () => {
      await fc.assert(
        fc.asyncProperty(arbShape(1, 3, 6), arbSeed, async (shape, seed) => {
          let x = randomRef(shape, seed, lo, hi);
          if (!smooth) x = awayFromZero(x);
          const fn = (T as unknown as Record<string, (t: T.Tensor) => T.Tensor>)[op];
          await checkVjp(fn, (r) => refMap(r, refUnaryFns[op]), [x], seed, { what: op });
        }),
        RUNS,
      );
    });
  }

  for (const op of Object.keys(refBinaryFns) as (keyof typeof refBinaryFns)[]) {
    it(`${op} (broadcasting)`, async () => {
      await fc.assert(
        fc.asyncProperty(arbBroadcastPair, arbSeed, async ([sa, sb], seed) => {
          const a = randomRef(sa, seed);
          // Keep max/min operands apart so the non-smooth tie set is never within the finite-difference step.
          const b = op === 'div' ? randomRef(sb, seed + 1, 0.5, 2) : refMap(randomRef(sb, seed + 1), (v) => v + (op === 'maximum' || op === 'minimum' ? 3 : 0));
          await checkVjp((x, y) => T[op](x, y), (x, y) => refZip(x, y, refBinaryFns[op]), [a, b], seed, { what: op });
        }),
        RUNS,
      );
    });
  }

  it('clamp and powAbs', async () => {
    await fc.assert(
      fc.asyncProperty(arbShape(1, 3, 6), arbSeed, fc.double({ min: 1.2, max: 4, noNaN: true }), async (shape, seed, p) => {
        const x = awayFromZero(randomRef(shape, seed, -1.5, 1.5));
        const xc = refMap(x, (v) => (Math.abs(Math.abs(v) - 1) < 0.02 ? v * 1.05 : v));
        await checkVjp((t) => T.clamp(t, -1, 1), (r) => refClamp(r, -1, 1), [xc], seed, { what: 'clamp' });
        await checkVjp((t) => T.powAbs(t, p), (r) => refMap(r, (v) => Math.abs(v) ** Math.fround(p)), [x], seed, { what: 'powAbs' });
      }),
      RUNS,
    );
  });
});

describe('bad input', () => {
  it('clamp rejects NaN and inverted bounds', () => {
    expect(() => T.clamp(T.zeros([2]), NaN, 1)).toThrow(/clamp: invalid bounds/);
    expect(() => T.clamp(T.zeros([2]), 2, 1)).toThrow(/clamp: invalid bounds/);
  });
  it('rejects zero, negative and fractional dims', () => {
    expect(() => T.zeros([2, 0])).toThrow(/full: invalid shape \[2, 0\]/);
    expect(() => T.zeros([-1])).toThrow(/invalid shape/);
    expect(() => T.tensor([1, 2, 3], [2, 2])).toThrow(/3 values do not fill shape \[2, 2\]/);
  });
  it('rejects integer tensors in float ops', () => {
    expect(() => T.exp(T.tensor([1, 2], [2], 'i32'))).toThrow(/exp: expected an f32 tensor, got i32/);
  });
});
