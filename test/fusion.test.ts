// Fusion (src/kernels/fusion.ts): on random graphs of the engine's elementwise ops, with broadcasting, shared
// subexpressions, scalars and chains longer than one kernel holds, the fused path gives what the eager path (one
// dispatch per op) gives, in fewer dispatches, values and gradients alike. A deferred value sees its inputs as they
// were when it was made, even when they are disposed or written in place before it is computed; an unused one
// costs no dispatch and leaks nothing.
import { describe, it, expect, onTestFinished } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, randomRef, arbSeed, expectClose, runs } from './helpers.js';
import { MAX_NODES } from '../src/kernels/fusion.js';

const { rt } = useGpu();

/** Runs `f` with the runtime's fusion and kernel profile (gpu or software) set as given, restoring both. */
function withRuntime<R>(set: { fusion?: boolean; gpu?: boolean }, f: () => R): R {
  const r = rt();
  const was = { fusion: r.fusion, kernelProfile: r.kernelProfile };
  if (set.fusion !== undefined) r.fusion = set.fusion;
  if (set.gpu !== undefined) r.kernelProfile = set.gpu ? 'gpu' : 'software';
  try {
    return f();
  } finally {
    r.fusion = was.fusion;
    r.kernelProfile = was.kernelProfile;
  }
}
const withFusion = <R>(on: boolean, f: () => R): R => withRuntime({ fusion: on }, f);
const withProfile = <R>(gpu: boolean, f: () => R): R => withRuntime({ gpu }, f);

type Tolerance = { rtol: number; atol: number };

/**
 * Builds the outputs eagerly, then fused (under the gpu kernel profile when `gpu`, else the adapter's): the fused
 * path takes no more dispatches and gives the same shapes, dtypes and values.
 */
async function expectFusedLikeEager(build: () => T.Tensor[], tol: Tolerance, gpu?: boolean): Promise<void> {
  const d0 = rt().dispatchCount;
  const eager = withFusion(false, () => T.tidy(build));
  const eagerValues = await T.readAll(eager);
  const d1 = rt().dispatchCount;
  const fused = withRuntime({ fusion: true, gpu }, () => T.tidy(build));
  const fusedValues = await withRuntime({ gpu }, () => T.readAll(fused));
  expect(rt().dispatchCount - d1).toBeLessThanOrEqual(d1 - d0);
  fused.forEach((t, k) => {
    expect(t.shape).toEqual(eager[k].shape);
    expect(t.dtype).toBe(eager[k].dtype);
    expectClose(fusedValues[k], eagerValues[k], tol, `value ${k}`);
  });
  [...eager, ...fused].forEach((t) => t.dispose());
}

/** The gradients of `loss` with respect to fresh inputs, eager and fused, agree. */
async function expectFusedGradients(makeInputs: () => T.Tensor[], loss: (inputs: T.Tensor[]) => T.Tensor, tol: Tolerance): Promise<void> {
  const grads = (on: boolean) =>
    withFusion(on, () =>
      T.tidy(() => {
        const inputs = makeInputs().map((t) => t.requireGrad());
        const g = T.gradients(loss(inputs), null, inputs);
        return inputs.map((x) => g.get(x) ?? T.zeros(x.shape));
      }),
    );
  const [eager, fused] = [grads(false), grads(true)];
  const [e, f] = [await T.readAll(eager), await T.readAll(fused)];
  f.forEach((v, k) => expectClose(v, e[k], tol, `gradient ${k}`));
  [...eager, ...fused].forEach((t) => t.dispose());
}

type Step = { kind: 'unary'; op: number; x: number } | { kind: 'binary'; op: number; x: number; y: number } | { kind: 'scalar'; x: number; a: number; b: number };

// Ops whose domain is all reals (inputs stay in [-2, 2]; exp of a sum of a few such values stays finite).
const UNARY: Array<(x: T.Tensor) => T.Tensor> = [T.neg, T.square, T.abs, T.relu, T.sigmoid, T.softplus, T.tanh, (x) => T.clamp(x, -1, 0.5), (x) => T.exp(T.scale(x, 0.25))];
const BINARY: Array<(x: T.Tensor, y: T.Tensor) => T.Tensor> = [T.add, T.sub, T.mul, T.maximum, T.minimum, (x, y) => T.div(x, T.addScalar(T.square(y), 1))];

/** A random program: leaves of shapes that broadcast against [d0, d1, d2], then steps over earlier values. */
const arbProgram = fc.record({
  dims: fc.tuple(fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 13 })),
  // Which axes each leaf keeps (others are 1, broadcast), and how many leading axes it drops.
  leaves: fc.array(fc.record({ keep: fc.tuple(fc.boolean(), fc.boolean(), fc.boolean()), drop: fc.integer({ min: 0, max: 2 }) }), { minLength: 1, maxLength: 4 }),
  steps: fc.array(
    fc.oneof(
      fc.record({ kind: fc.constant('unary' as const), op: fc.nat(UNARY.length - 1), x: fc.nat() }),
      fc.record({ kind: fc.constant('binary' as const), op: fc.nat(BINARY.length - 1), x: fc.nat(), y: fc.nat() }),
      fc.record({ kind: fc.constant('scalar' as const), x: fc.nat(), a: fc.double({ min: -2, max: 2, noNaN: true }), b: fc.double({ min: -1, max: 1, noNaN: true }) }),
    ),
    { minLength: 1, maxLength: 60 },
  ),
  seed: arbSeed,
});

type Program = { dims: [number, number, number]; leaves: { keep: [boolean, boolean, boolean]; drop: number }[]; steps: Step[]; seed: number };

const leafShape = (p: Program, k: number) => {
  const { keep, drop } = p.leaves[k];
  return p.dims.map((d, i) => (keep[i] ? d : 1)).slice(drop);
};

/**
 * Kernels that read a fused value as their prologue instead of a buffer: reductions along any axes, the row
 * normalisations and the strided copies (transpose, slice).
 */
const CONSUMERS: Array<(x: T.Tensor) => T.Tensor> = [
  (x) => T.sum(x),
  (x) => T.sum(x, [0]),
  (x) => T.sum(x, -1, true),
  (x) => T.max(x, x.rank > 1 ? [x.rank - 2] : [0]),
  (x) => T.logsumexp(x, -1),
  (x) => T.softmax(x),
  (x) => T.logSoftmax(x),
  (x) => T.transpose(x),
  (x) => T.slice(x, x.shape.map((d) => (d > 1 ? 1 : 0)), x.shape.map((d) => (d > 1 ? d - 1 : 1))),
];

/** Evaluates the program; every value is an output (so shared subexpressions are read several times), read as it is and through every consumer. */
function run(p: Program, inputs: T.Tensor[], consumers = false): T.Tensor[] {
  const values: T.Tensor[] = [...inputs];
  for (const s of p.steps) {
    const pick = (i: number) => values[i % values.length];
    if (s.kind === 'unary') values.push(UNARY[s.op](pick(s.x)));
    else if (s.kind === 'binary') values.push(BINARY[s.op](pick(s.x), pick(s.y)));
    else values.push(T.affine(pick(s.x), s.a, s.b));
  }
  const outs = values.slice(inputs.length);
  // The consumers first: a fused value read through a prologue stays deferred, and is computed once more as itself.
  const consumed = consumers ? outs.map((v, k) => CONSUMERS[k % CONSUMERS.length](v)) : [];
  return [...consumed, ...outs];
}

function inputsOf(p: Program): T.Tensor[] {
  return p.leaves.map((_, k) => {
    const r = randomRef(leafShape(p, k), p.seed + k, -2, 2);
    return T.tensor(r.data, r.shape);
  });
}

describe('fused elementwise graphs', () => {
  it('equal the eager path on random graphs, read directly and through reductions, normalisations and copies, in no more dispatches', async () => {
    await fc.assert(
      fc.asyncProperty(arbProgram, async (prog) => {
        const p = prog as Program;
        const inputs = inputsOf(p);
        // The same f32 operations per element; a compiler may contract a*b+c into one fma in either kernel.
        await expectFusedLikeEager(() => run(p, inputs, true), { rtol: 1e-5, atol: 1e-6 });
        inputs.forEach((t) => t.dispose());
      }),
      runs(30),
    );
  });

  it('gradients through fused chains equal the eager gradients', async () => {
    await fc.assert(
      fc.asyncProperty(arbProgram, async (prog) => {
        const p = prog as Program;
        const loss = (inputs: T.Tensor[]) => run(p, inputs).map((t) => T.sum(t)).reduce((a, b) => T.add(a, b));
        await expectFusedGradients(() => inputsOf(p), loss, { rtol: 1e-4, atol: 1e-5 });
      }),
      runs(15),
    );
  });
});

// Data movement as index maps: slices, transposes, reshapes, concatenations and (in the gradients) a slice's
// padding, over values of any shape, read directly and by the kernels that take fused operands.
type ViewStep =
  | { kind: 'unary'; op: number; x: number }
  | { kind: 'binary'; op: number; x: number; y: number }
  | { kind: 'slice'; x: number; cuts: [number, number][] }
  | { kind: 'permute'; x: number; order: number[] }
  | { kind: 'concat'; x: number; axis: number; op: number }
  | { kind: 'reshape'; x: number; how: number };

const arbViewProgram = fc.record({
  leaves: fc.array(fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 3 }),
  steps: fc.array(
    fc.oneof(
      fc.record({ kind: fc.constant('unary' as const), op: fc.nat(UNARY.length - 1), x: fc.nat() }),
      fc.record({ kind: fc.constant('binary' as const), op: fc.nat(BINARY.length - 1), x: fc.nat(), y: fc.nat() }),
      fc.record({ kind: fc.constant('slice' as const), x: fc.nat(), cuts: fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 3, maxLength: 3 }) }),
      fc.record({ kind: fc.constant('permute' as const), x: fc.nat(), order: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 3, maxLength: 3 }) }),
      fc.record({ kind: fc.constant('concat' as const), x: fc.nat(), axis: fc.nat(), op: fc.nat(UNARY.length - 1) }),
      fc.record({ kind: fc.constant('reshape' as const), x: fc.nat(), how: fc.nat(3) }),
    ),
    { minLength: 1, maxLength: 12 },
  ),
  seed: arbSeed,
  // Under the gpu kernel profile matmul reads fused operands through their expressions; under software it computes them first.
  gpu: fc.boolean(),
});

type ViewProgram = { leaves: number[][]; steps: ViewStep[]; seed: number; gpu: boolean };

/** Rank-2 values also go through both matmul kernels as either operand (direct needs multiples of 4, so both appear). */
const VIEW_CONSUMERS: Array<(x: T.Tensor) => T.Tensor> = [
  (x) => T.sum(x, [0]),
  (x) => (x.rank === 2 ? T.matmul(x, T.transpose(x)) : T.sum(x, -1)),
  (x) => (x.rank === 2 ? T.matmul(x, x, { transA: true }) : T.transpose(x)),
  (x) => (x.rank === 2 ? T.matmul(T.relu(x), T.tanh(x), { transB: true }) : T.logsumexp(x, 0)),
];

/** Reversed axes (a general reshape); the last axis split in two; a size-1 axis added; the last two merged. */
function reshaped(shape: readonly number[], how: number): number[] {
  const last = shape[shape.length - 1];
  const f = [2, 3, 5, 7].find((p) => last % p === 0 && last > p);
  if (how === 1 && f) return [...shape.slice(0, -1), f, last / f];
  if (how === 2) return [1, ...shape];
  if (how === 3 && shape.length > 1) return [...shape.slice(0, -2), shape[shape.length - 2] * last];
  return [...shape].reverse();
}

function runViews(p: ViewProgram, inputs: T.Tensor[], consumers = false): T.Tensor[] {
  const values: T.Tensor[] = [...inputs];
  for (const s of p.steps) {
    const x = values[s.x % values.length];
    if (s.kind === 'unary') values.push(UNARY[s.op](x));
    else if (s.kind === 'binary') {
      // The most recent value of x's shape (x itself if none): binary ops need matching shapes here.
      const same = values.filter((v) => v.rank === x.rank && v.shape.every((d, k) => d === x.shape[k]));
      values.push(BINARY[s.op](x, same[s.y % same.length]));
    } else if (s.kind === 'slice') {
      // A reshape may have added axes beyond the cuts drawn for the leaves' rank: those keep the whole axis.
      const begin = x.shape.map((d, k) => (k < s.cuts.length ? s.cuts[k][0] % d : 0));
      const size = x.shape.map((d, k) => (k < s.cuts.length ? 1 + (s.cuts[k][1] % (d - begin[k])) : d));
      values.push(T.slice(x, begin, size));
    } else if (s.kind === 'permute') {
      const perm = [...x.shape.keys()].sort((a, b) => s.order[a] - s.order[b] || a - b);
      values.push(T.transpose(x, perm));
    } else if (s.kind === 'concat') values.push(T.concat([x, UNARY[s.op](x)], s.axis % x.rank));
    else values.push(T.reshape(x, reshaped(x.shape, s.how)));
  }
  const outs = values.slice(inputs.length);
  const consumed = consumers ? outs.map((v, k) => VIEW_CONSUMERS[k % VIEW_CONSUMERS.length](v)) : [];
  return [...consumed, ...outs];
}

const viewInputs = (p: ViewProgram) =>
  p.leaves.map((shape, k) => {
    const r = randomRef(shape, p.seed + k, -2, 2);
    return T.tensor(r.data, r.shape);
  });

describe('fused data movement', () => {
  it('slices, transposes, reshapes and concatenations equal the eager copies, read directly, reduced and multiplied', async () => {
    await fc.assert(
      fc.asyncProperty(arbViewProgram, async (prog) => {
        const p = prog as ViewProgram;
        const inputs = viewInputs(p);
        await expectFusedLikeEager(() => runViews(p, inputs, true), { rtol: 1e-5, atol: 1e-5 }, p.gpu);
        inputs.forEach((t) => t.dispose());
      }),
      // Every program compiles its own kernels: few runs, each a different structure.
      runs(6),
    );
  });

  it('their gradients (pads of slices, slices of concatenations) equal the eager gradients', async () => {
    await fc.assert(
      fc.asyncProperty(arbViewProgram, async (prog) => {
        const p = prog as ViewProgram;
        // Weighted so every element's gradient differs.
        const loss = (inputs: T.Tensor[]) =>
          runViews(p, inputs)
            .map((t, k) => T.sum(T.mul(t, T.tanh(T.scale(t, 0.3 + 0.1 * k)))))
            .reduce((a, b) => T.add(a, b));
        await expectFusedGradients(() => viewInputs(p), loss, { rtol: 1e-4, atol: 1e-4 });
      }),
      runs(8),
    );
  });

  it('index maps compose: a split of a concatenation, a slice of a transposed split, a padded transpose', async () => {
    const a = T.tensor(randomRef([3, 4], 7).data, [3, 4]);
    const b = T.tensor(randomRef([3, 2], 8).data, [3, 2]);
    const chains: Array<() => T.Tensor> = [
      // The pad's bounds test reads a coordinate combined from two axes (6 = 2 x 3).
      () => T.reshape(T.concat([T.exp(a), b], 1), [3, 2, 3]),
      () => T.slice(T.transpose(T.reshape(T.tanh(a), [3, 2, 2]), [2, 0, 1]), [1, 0, 1], [1, 3, 1]),
      () => T.transpose(T.concat([T.transpose(a), T.square(T.transpose(b))], 0)),
      () => T.reshape(T.concat([T.reshape(a, [3, 2, 2]), T.reshape(T.concat([b, b], 1), [3, 2, 2])], 2), [6, 4]),
    ];
    for (const [k, f] of chains.entries()) {
      const eager = withFusion(false, f);
      const fused = withFusion(true, f);
      expect(fused.shape).toEqual(eager.shape);
      expectClose(await fused.data(), await eager.data(), { rtol: 1e-6, atol: 1e-6 }, `chain ${k}`);
      [eager, fused].forEach((t) => t.dispose());
    }
    [a, b].forEach((t) => t.dispose());
  });

  it('a concatenation read by a matmul (gpu profile), and the sum of two slices\' gradients, cost no dispatch of their own', async () => {
    const a = T.tensor(randomRef([6, 5], 3).data, [6, 5]);
    const b = T.tensor(randomRef([6, 3], 4).data, [6, 3]);
    const w = T.tensor(randomRef([7, 8], 5).data, [7, 8]);
    const layer = () => T.tidy(() => T.linear(T.concat([T.relu(a), T.sigmoid(b)], 1), w, null, 'relu'));
    const d0 = rt().dispatchCount;
    const y = withProfile(true, layer);
    const yv = await y.data();
    expect(rt().dispatchCount - d0).toBe(1);
    // Under the software profile the concatenation is one kernel of its own.
    const d1 = rt().dispatchCount;
    const ys = withProfile(false, layer);
    expectClose(await ys.data(), yv, { rtol: 1e-6, atol: 1e-6 }, 'software profile');
    expect(rt().dispatchCount - d1).toBe(2);
    ys.dispose();
    const h = T.tensor(randomRef([6, 8], 6).data, [6, 8]).requireGrad();
    const g = T.tidy(() => {
      const loss = T.add(T.sum(T.exp(T.slice(h, [0, 0], [6, 4]))), T.sum(T.square(T.slice(h, [0, 4], [6, 4]))));
      return T.gradients(loss, null, [h]).get(h)!;
    });
    // The gradient is one kernel: both slices' gradients, their pads and their sum.
    const d2 = rt().dispatchCount;
    const gh = await g.data();
    expect(rt().dispatchCount - d2).toBe(1);
    const hv = await h.data();
    gh.forEach((v, i) => expect(v).toBeCloseTo(i % 8 < 4 ? Math.exp(hv[i]) : 2 * hv[i], 4));
    [a, b, w, y, h, g].forEach((t) => t.dispose());
  });
});

describe('fused prologues of conv kernels', () => {
  it('a small conv net with fused inputs and gradients computes what the eager path computes', async () => {
    // The conv kernels read fused inputs under the gpu kernel profile (on a software renderer they compute them first).
    const profile = rt().kernelProfile;
    rt().kernelProfile = 'gpu';
    onTestFinished(() => void (rt().kernelProfile = profile));
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 5, max: 11 }), arbSeed, async (n, hw, seed) => {
        const x0 = randomRef([n, 2, hw, hw], seed, -1, 1);
        const w0 = randomRef([3, 2, 3, 3], seed + 1, -0.5, 0.5);
        const v0 = randomRef([3, 2, 3, 3], seed + 2, -0.5, 0.5);
        const step = (on: boolean) =>
          withFusion(on, () =>
            T.tidy(() => {
              const x = T.tensor(x0.data, x0.shape);
              const w = T.tensor(w0.data, w0.shape).requireGrad();
              const v = T.tensor(v0.data, v0.shape).requireGrad();
              // The conv reads a fused input; its gradient reaches the transposed conv as a fused reluGrad.
              const h = T.conv2d(T.tanh(T.scale(x, 1.5)), w, null, { stride: 2, padding: 1 });
              const y = T.convTranspose2d(T.relu(h), v, null, { stride: 2, padding: 1, outputPadding: (hw + 1) % 2 });
              const loss = T.sum(T.square(T.sub(y, T.sigmoid(x))));
              const g = T.gradients(loss, null, [w, v]);
              return [loss, g.get(w)!, g.get(v)!];
            }),
          );
        const eager = await T.readAll(step(false));
        const fused = await T.readAll(step(true));
        fused.forEach((f, k) => expectClose(f, eager[k], { rtol: 1e-4, atol: 1e-5 }, ['loss', 'dW', 'dV'][k]));
      }),
      runs(8),
    );
  });
});

describe('deferred values', () => {
  it('a chain runs as one kernel, and one longer than a kernel holds in a few', async () => {
    const x = T.tensor(randomRef([1000], 1).data, [1000]);
    const d0 = rt().dispatchCount;
    const y = T.tidy(() => T.relu(T.addScalar(T.mul(T.exp(T.scale(x, 0.5)), x), 1)));
    await y.data();
    expect(rt().dispatchCount - d0).toBe(1);
    const n = 3 * MAX_NODES;
    const d1 = rt().dispatchCount;
    const z = T.tidy(() => {
      let t = x;
      for (let i = 0; i < n; i++) t = T.addScalar(t, 1);
      return t;
    });
    expect((await z.data())[0]).toBeCloseTo((await x.data())[0] + n, 3);
    expect(rt().dispatchCount - d1).toBeLessThanOrEqual(Math.ceil(n / MAX_NODES) + 1);
    [x, y, z].forEach((t) => t.dispose());
  });

  it('sees its inputs as they were: after they are disposed, and after an in-place write (Adam, an upload)', async () => {
    const params = new T.ParameterSet([{ name: 'w', shape: [64], init: Float32Array.from({ length: 64 }, (_, i) => i / 64) }]);
    const w = params.get('w');
    const before = Float32Array.from(await w.data());
    const doubled = T.scale(w, 2);
    const plusOne = T.addScalar(T.tensor(before, [64]), 1);
    // An Adam step writes w in place: the deferred 2w must be computed from the old w first.
    const adam = new T.Adam(params, { lr: 0.1 });
    T.tidy(() => adam.step(T.gradients(T.sum(T.square(w)))));
    // And an upload into the arena.
    params.loadState({ w: new Float32Array(64).fill(7) });
    expect(Array.from(await doubled.data())).toEqual(Array.from(before, (v) => Math.fround(2 * v)));
    expect(Array.from(await w.data())).toEqual(new Array(64).fill(7));
    // Its input disposed before it is computed: the input's buffer stays until then.
    const src = T.tensor(before, [64]);
    const later = T.sqrt(T.abs(src));
    src.dispose();
    const reuse = T.tensor(new Float32Array(64).fill(-1), [64]); // a fresh upload that could take a released buffer
    await reuse.data();
    reuse.dispose();
    expect(Array.from(await later.data())).toEqual(Array.from(before, (v) => Math.fround(Math.sqrt(v))));
    expect(Array.from(await plusOne.data())).toEqual(Array.from(before, (v) => Math.fround(v + 1)));
    [doubled, plusOne, later].forEach((t) => t.dispose());
    adam.dispose();
    params.dispose();
  });

  it('a deferred value disposed unseen costs no dispatch, and leaks nothing', async () => {
    const r = rt();
    const x = T.tensor(randomRef([4096], 2).data, [4096]);
    await r.sync();
    const live = r.memory().liveBuffers;
    const d0 = r.dispatchCount;
    for (let i = 0; i < 50; i++) T.tidy(() => T.mul(T.exp(x), T.sigmoid(x)));
    await r.sync();
    expect(r.dispatchCount).toBe(d0);
    expect(r.memory().liveBuffers).toBe(live);
    x.dispose();
  });

  it('argmax reads a fused value without computing it first', async () => {
    const x = T.tensor([0.1, 3, -1, 2, 5, -4], [2, 3]);
    const d0 = rt().dispatchCount;
    const i = T.argmax(T.mul(T.addScalar(x, -1), T.neg(x)));
    expect(Array.from(await i.data())).toEqual([0, 0]);
    expect(rt().dispatchCount - d0).toBe(1);
    [x, i].forEach((t) => t.dispose());
  });

  it('oneHot is an expression over the i32 labels: equal to the kernel, read by a concat, a sum and a slice of labels', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 3 }), arbSeed, async (n, depth, skip, seed) => {
        const labels = Array.from({ length: n + skip }, (_, i) => (seed * (i + 7)) % depth);
        const x = randomRef([n, 3], seed);
        const build = () => {
          // A view that starts past the buffer's first element exercises the labels' offset.
          const y = T.slice(T.tensor(Int32Array.from(labels), [n + skip], 'i32'), [skip], [n]);
          const h = T.oneHot(y, depth);
          return [h, T.concat([T.tensor(x.data, x.shape), h], 1), T.sum(T.mul(h, T.addScalar(h, 2)), -1)];
        };
        await expectFusedLikeEager(build, { rtol: 0, atol: 0 });
        const d0 = rt().dispatchCount;
        const h = T.oneHot(T.tensor(Int32Array.from(labels.slice(0, n)), [n], 'i32'), depth);
        expect(rt().dispatchCount - d0).toBe(0);
        const got = await h.data();
        expect(Array.from(got)).toEqual(labels.slice(0, n).flatMap((l) => Array.from({ length: depth }, (_, k) => (k === l ? 1 : 0))));
        h.dispose();
      }),
      runs(15),
    );
  });

  it('bad input gets the eager error', () => {
    const a = T.zeros([3, 4]);
    const b = T.zeros([5]);
    expect(() => withFusion(true, () => T.add(a, b))).toThrow(withFusion(false, () => captured(() => T.add(a, b))));
    const i = T.tensor([1, 2], [2], 'i32');
    expect(() => withFusion(true, () => T.exp(i))).toThrow(/exp: expected an f32 tensor/);
    [a, b, i].forEach((t) => t.dispose());
  });
});

function captured(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected an error');
}
