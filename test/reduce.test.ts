import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, toGpu, download, expectClose, randomRef, arbShape, arbSeed, RUNS, checkVjp } from './helpers.js';
import { refReduce, refSoftmax, refCrossEntropy } from '../src/reference/reduce.js';
import { ref } from '../src/reference/tensor.js';

useGpu();

/** A shape plus a non-empty subset of its axes. */
const arbShapeAxes = arbShape(1, 4, 11).chain((shape) =>
  fc.subarray([...shape.keys()], { minLength: 1 }).map((axes) => ({ shape, axes })),
);

const kinds = ['sum', 'mean', 'max', 'logsumexp'] as const;

describe('reductions along any axes match the float64 reference', () => {
  for (const kind of kinds) {
    it(kind, async () => {
      await fc.assert(
        fc.asyncProperty(arbShapeAxes, arbSeed, fc.boolean(), async ({ shape, axes }, seed, keepDims) => {
          const x = randomRef(shape, seed, -3, 3);
          const y = T[kind](toGpu(x), axes, keepDims);
          const want = refReduce(x, axes, kind, keepDims);
          expect(y.shape).toEqual(want.shape);
          expectClose(await download(y), want, { rtol: 1e-5, atol: 1e-5 }, kind);
        }),
        RUNS,
      );
    });
  }

  it('reducing only axes of size 1 gives the input values in the reduced shape, for every kind', async () => {
    const x = randomRef([1, 6, 1, 5], 3, -2, 2);
    for (const kind of kinds) {
      for (const [axes, keepDims] of [[[0], false], [[0, 2], true], [[2], false]] as const) {
        const y = T[kind](toGpu(x), [...axes], keepDims);
        const want = refReduce(x, [...axes], kind, keepDims);
        expect(y.shape).toEqual(want.shape);
        expectClose(await download(y), want, { rtol: 1e-6, atol: 1e-6 }, `${kind} over ${axes}`);
      }
    }
  });

  it('reduces long rows and many rows (workgroup tree and folded dispatch)', async () => {
    const x = randomRef([3, 5000], 7, -1, 1);
    expectClose(await download(T.sum(toGpu(x), 1)), refReduce(x, [1], 'sum'), { rtol: 1e-5, atol: 1e-4 });
    const many = randomRef([70000, 2], 8, -1, 1);
    expectClose(await download(T.logsumexp(toGpu(many), 1)), refReduce(many, [1], 'logsumexp'), { rtol: 1e-5, atol: 1e-5 });
  });

  it('logsumexp is stable for huge and very negative inputs', async () => {
    const x = ref([1000, 999, -1000, -1e30, -1e30, -1e30], [2, 3]);
    expectClose(await download(T.logsumexp(toGpu(x), 1)), refReduce(x, [1], 'logsumexp'), { rtol: 1e-6, atol: 1e-3 });
  });

  it('softmax, log-softmax and cross-entropy', async () => {
    await fc.assert(
      // Last axes up to 200 cover both kernels: one invocation per short row, a workgroup tree per long one.
      fc.asyncProperty(fc.tuple(arbShape(0, 2, 12), fc.integer({ min: 1, max: 200 })), arbSeed, async ([lead, cols], seed) => {
        const shape = [...lead, cols];
        const x = randomRef(shape, seed, -20, 20);
        expectClose(await download(T.softmax(toGpu(x))), refSoftmax(x), { rtol: 1e-5, atol: 1e-6 }, 'softmax');
        expectClose(await download(T.logSoftmax(toGpu(x))), refSoftmax(x, true), { rtol: 1e-5, atol: 1e-5 }, 'logSoftmax');
        if (shape.length === 2) {
          const labels = Array.from({ length: shape[0] }, (_, i) => (seed + i) % shape[1]);
          const ce = await download(T.crossEntropy(toGpu(x), T.tensor(labels, [shape[0]], 'i32')));
          expectClose(ce, [refCrossEntropy(x, labels)], { rtol: 1e-5, atol: 1e-5 }, 'crossEntropy');
        }
      }),
      RUNS,
    );
  });
});

describe('argmax', () => {
  it('picks the first largest entry of each row', async () => {
    await fc.assert(
      fc.asyncProperty(arbShape(1, 3, 300), arbSeed, fc.boolean(), async (shape, seed, ties) => {
        // With ties, values are coarse so equal maxima are common.
        const x = randomRef(shape, seed, -3, 3);
        if (ties) x.data.forEach((v, i) => (x.data[i] = Math.round(v)));
        const cols = shape[shape.length - 1];
        const want = Array.from({ length: x.data.length / cols }, (_, r) => {
          const row = Array.from(x.data.subarray(r * cols, (r + 1) * cols));
          return row.indexOf(Math.max(...row));
        });
        const got = T.argmax(toGpu(x));
        expect(got.dtype).toBe('i32');
        expect(got.shape).toEqual(shape.slice(0, -1));
        expect(Array.from(await got.data())).toEqual(want);
      }),
      RUNS,
    );
  });
});

/** Values -3 + 6k/n (k < n), in a seeded random order. */
function spacedRef(shape: number[], seed: number) {
  const n = shape.reduce((a, b) => a * b, 1);
  const order = Array.from(randomRef([n], seed).data, (r, k) => [r, k] as const).sort((a, b) => a[0] - b[0]);
  const data = new Float64Array(n);
  order.forEach(([, k], rank) => (data[k] = -3 + (6 * rank) / n));
  return { shape, data };
}

describe('reduction gradients against finite differences', () => {
  for (const kind of kinds) {
    it(kind, async () => {
      await fc.assert(
        fc.asyncProperty(arbShapeAxes, arbSeed, fc.boolean(), async ({ shape, axes }, seed, keepDims) => {
          // max is differentiable away from ties: its inputs are a shuffle of evenly spaced values, at least
          // 6 / size apart, more than the finite difference's 2h (random values can fall within 2h of each other).
          const x = kind === 'max' ? spacedRef(shape, seed) : randomRef(shape, seed, -3, 3);
          await checkVjp((t) => T[kind](t, axes, keepDims), (r) => refReduce(r, axes, kind, keepDims), [x], seed, { what: kind });
        }),
        RUNS,
      );
    });
  }

  it('softmax, log-softmax, cross-entropy', async () => {
    await fc.assert(
      fc.asyncProperty(arbShape(2, 2, 7), arbSeed, async (shape, seed) => {
        const x = randomRef(shape, seed, -4, 4);
        await checkVjp((t) => T.softmax(t), (r) => refSoftmax(r), [x], seed, { what: 'softmax' });
        await checkVjp((t) => T.logSoftmax(t), (r) => refSoftmax(r, true), [x], seed, { what: 'logSoftmax' });
        const labels = Array.from({ length: shape[0] }, (_, i) => (seed + 3 * i) % shape[1]);
        await checkVjp(
          (t) => T.crossEntropy(t, T.tensor(labels, [shape[0]], 'i32')),
          (r) => ref([refCrossEntropy(r, labels)], []),
          [x],
          seed,
          { what: 'crossEntropy' },
        );
      }),
      RUNS,
    );
  });
});

describe('bad input', () => {
  it('names the op and the offending axis', () => {
    expect(() => T.sum(T.zeros([2, 3]), 2)).toThrow(/sum: axis 2 is out of range for rank 2/);
    expect(() => T.mean(T.zeros([2, 3]), [1, -1])).toThrow(/mean: repeated axis/);
    expect(() => T.softmax(T.zeros([2, 3]), 0)).toThrow(/softmax: only the last axis/);
    expect(() => T.crossEntropy(T.zeros([2, 3]), T.tensor([0, 1, 2], [3], 'i32'))).toThrow(/crossEntropy: labels must be i32 \[2\]/);
  });
});
