import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, toGpu, download, expectClose, randomRef, arbShape, arbSeed, RUNS, checkVjp } from './helpers.js';
import { type Ref, unravel, refStrides } from '../src/reference/tensor.js';

useGpu();

function refPermute(x: Ref, perm: number[]): Ref {
  const shape = perm.map((p) => x.shape[p]);
  const st = refStrides(x.shape);
  const data = new Float64Array(x.data.length);
  for (let i = 0; i < data.length; i++) {
    const idx = unravel(i, shape);
    data[i] = x.data[idx.reduce((a, c, k) => a + c * st[perm[k]], 0)];
  }
  return { shape, data };
}

function refSlice(x: Ref, begin: number[], size: number[]): Ref {
  const st = refStrides(x.shape);
  const n = size.reduce((a, b) => a * b, 1);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = x.data[unravel(i, size).reduce((a, c, k) => a + (c + begin[k]) * st[k], 0)];
  return { shape: size, data };
}

function refConcat(xs: Ref[], axis: number): Ref {
  const shape = [...xs[0].shape];
  shape[axis] = xs.reduce((a, x) => a + x.shape[axis], 0);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const idx = unravel(i, shape);
    let j = 0;
    let c = idx[axis];
    while (c >= xs[j].shape[axis]) c -= xs[j++].shape[axis];
    const src = [...idx];
    src[axis] = c;
    data[i] = xs[j].data[src.reduce((a, v, k) => a * xs[j].shape[k] + v, 0)];
  }
  return { shape, data };
}

const arbPermuted = arbShape(1, 6, 6).chain((shape) =>
  fc.shuffledSubarray([...shape.keys()], { minLength: shape.length, maxLength: shape.length }).map((perm) => ({ shape, perm })),
);

const arbSliced = arbShape(1, 4, 9).chain((shape) =>
  fc.tuple(...shape.map((d) => fc.integer({ min: 0, max: d - 1 }).chain((b) => fc.tuple(fc.constant(b), fc.integer({ min: 1, max: d - b }))))).map((bs) => ({
    shape,
    begin: bs.map(([b]) => b),
    size: bs.map(([, s]) => s),
  })),
);

const arbConcat = fc
  .tuple(arbShape(1, 4, 6), fc.integer({ min: 0, max: 3 }), fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 4 }))
  .map(([shape, a, sizes]) => {
    const axis = a % shape.length;
    return { axis, shapes: sizes.map((s) => shape.map((d, k) => (k === axis ? s : d))) };
  });

describe('shape ops match the reference and carry gradients', () => {
  it('transpose (any permutation)', async () => {
    await fc.assert(
      fc.asyncProperty(arbPermuted, arbSeed, async ({ shape, perm }, seed) => {
        const x = randomRef(shape, seed);
        expectClose(await download(T.transpose(toGpu(x), perm)), refPermute(x, perm), { rtol: 0, atol: 0 });
        await checkVjp((t) => T.transpose(t, perm), (r) => refPermute(r, perm), [x], seed, { what: 'transpose' });
      }),
      RUNS,
    );
  });

  it('slice', async () => {
    await fc.assert(
      fc.asyncProperty(arbSliced, arbSeed, async ({ shape, begin, size }, seed) => {
        const x = randomRef(shape, seed);
        expectClose(await download(T.slice(toGpu(x), begin, size)), refSlice(x, begin, size), { rtol: 0, atol: 0 });
        await checkVjp((t) => T.slice(t, begin, size), (r) => refSlice(r, begin, size), [x], seed, { what: 'slice' });
      }),
      RUNS,
    );
  });

  it('concat', async () => {
    await fc.assert(
      fc.asyncProperty(arbConcat, arbSeed, async ({ axis, shapes }, seed) => {
        const xs = shapes.map((s, i) => randomRef(s, seed + i));
        expectClose(await download(T.concat(xs.map(toGpu), axis)), refConcat(xs, axis), { rtol: 0, atol: 0 });
        await checkVjp((...ts) => T.concat(ts, axis), (...rs) => refConcat(rs, axis), xs, seed, { what: 'concat' });
      }),
      RUNS,
    );
  });

  it('reshape shares storage and routes gradients', async () => {
    const x = randomRef([2, 3, 4], 3);
    const y = T.reshape(toGpu(x), [4, -1]);
    expect(y.shape).toEqual([4, 6]);
    expectClose(await download(y), x.data, { rtol: 0, atol: 0 });
    await checkVjp((t) => T.mul(T.reshape(t, [6, 4]), T.reshape(t, [6, 4])), (r) => ({ shape: [6, 4], data: r.data.map((v) => v * v) }), [x], 5);
  });

  it('broadcastTo', async () => {
    const x = randomRef([3, 1], 4);
    const want = { shape: [2, 3, 5], data: Float64Array.from({ length: 30 }, (_, i) => x.data[Math.floor(i / 5) % 3]) };
    expectClose(await download(T.broadcastTo(toGpu(x), [2, 3, 5])), want, { rtol: 0, atol: 0 });
    await checkVjp((t) => T.broadcastTo(t, [2, 3, 5]), (r) => ({ shape: [2, 3, 5], data: want.data.map((_, i) => r.data[Math.floor(i / 5) % 3]) }), [x], 9);
  });

  it('gather rows (with repeated indices) and one-hot', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 7 }), fc.array(fc.nat(), { minLength: 1, maxLength: 12 }), arbSeed, async (rows, cols, raw, seed) => {
        const idx = raw.map((v) => v % rows);
        const x = randomRef([rows, cols], seed);
        const want = { shape: [idx.length, cols], data: Float64Array.from({ length: idx.length * cols }, (_, i) => x.data[idx[Math.floor(i / cols)] * cols + (i % cols)]) };
        const indices = T.tensor(idx, [idx.length], 'i32');
        expectClose(await download(T.gather(toGpu(x), indices)), want, { rtol: 0, atol: 0 });
        await checkVjp((t) => T.gather(t, indices), (r) => ({ shape: want.shape, data: want.data.map((_, i) => r.data[idx[Math.floor(i / cols)] * cols + (i % cols)]) }), [x], seed, { what: 'gather' });
        const oh = await download(T.oneHot(indices, rows));
        expect(Array.from(oh)).toEqual(idx.flatMap((j) => Array.from({ length: rows }, (_, c) => (c === j ? 1 : 0))));
      }),
      RUNS,
    );
  });
});

describe('bad input', () => {
  it('names the op and the shapes', () => {
    expect(() => T.reshape(T.zeros([2, 3]), [4, 2])).toThrow(/reshape: cannot reshape \[2, 3\] \(6 elements\) to \[4, 2\]/);
    expect(() => T.reshape(T.zeros([2, 3]), [-1, -1])).toThrow(/reshape: at most one -1/);
    expect(() => T.transpose(T.zeros([2, 3]), [0, 0])).toThrow(/transpose/);
    expect(() => T.slice(T.zeros([2, 3]), [1, 2], [2, 1])).toThrow(/slice: .* out of bounds for \[2, 3\]/);
    expect(() => T.concat([T.zeros([2, 3]), T.zeros([3, 3])], 1)).toThrow(/concat: shapes \[2, 3\], \[3, 3\] differ outside axis 1/);
    expect(() => T.broadcastTo(T.zeros([2, 3]), [3, 3])).toThrow(/broadcastTo: \[2, 3\] cannot be broadcast to \[3, 3\]/);
    expect(() => T.oneHot(T.tensor([1], [1], 'i32'), 0)).toThrow(/oneHot: depth must be a positive integer/);
    expect(() => T.gather(T.zeros([2, 3]), T.zeros([2]))).toThrow(/gather: indices must be i32/);
  });
});
