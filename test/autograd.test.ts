import { describe, it, expect, onTestFinished } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, download, expectClose, randomRef, arbSeed, checkVjp, toGpu, SWIFTSHADER } from './helpers.js';
import { refLinear, type RefActivation } from '../src/reference/matmul.js';
import { refConv2d, refConvTranspose2d } from '../src/reference/conv.js';
import type { Ref } from '../src/reference/tensor.js';

useGpu();

describe('tape', () => {
  it('accumulates through a diamond and into .grad across calls', async () => {
    const x = T.tensor([0.5, -1, 2], [3]).requireGrad();
    // f = sum(x*x + exp(x)): both branches reuse x.
    const f = () => T.sum(T.add(T.mul(x, x), T.exp(x)));
    T.backward(f());
    const want = [0.5, -1, 2].map((v) => 2 * v + Math.exp(v));
    expectClose(await download(x.grad!), want, { rtol: 1e-6 });
    T.backward(f());
    expectClose(await download(x.grad!), want.map((v) => 2 * v), { rtol: 1e-6 });
  });

  it('valueAndGrad and grad return gradients for every argument without touching .grad', async () => {
    const a = T.tensor([1, 2], [2]);
    const b = T.tensor([3, 4], [2]);
    const { value, grads } = T.valueAndGrad((p: T.Tensor, q: T.Tensor) => T.sum(T.mul(p, q)))(a, b);
    expect(await value.item()).toBe(11);
    expectClose(await download(grads[0]), [3, 4]);
    expectClose(await download(grads[1]), [1, 2]);
    expect(a.grad).toBeNull();
    expect(a.requiresGrad).toBe(false);
    const [ga] = T.grad((p: T.Tensor) => T.sum(T.square(p)))(a);
    expectClose(await download(ga), [2, 4]);
  });

  it('an argument the function ignores gets a zero gradient', async () => {
    const a = T.tensor([1, 2], [2]);
    const b = T.tensor([3], [1]);
    const [, gb] = T.grad((p: T.Tensor, _q: T.Tensor) => T.sum(p))(a, b);
    expectClose(await download(gb), [0]);
  });

  it('noGrad records nothing', () => {
    const x = T.tensor([1], [1]).requireGrad();
    const y = T.noGrad(() => T.exp(x));
    expect(y.requiresGrad).toBe(false);
    expect(() => T.backward(T.sum(y))).toThrow(/does not depend on any tensor that requires a gradient/);
  });

  it('non-scalar outputs need a seed of matching size', async () => {
    const x = T.tensor([1, 2], [2]).requireGrad();
    const y = T.mul(x, x);
    expect(() => T.backward(y)).toThrow(/pass a seed gradient/);
    expect(() => T.backward(y, T.tensor([1, 2, 3], [3]))).toThrow(/seed \[3\] does not match output \[2\]/);
    T.backward(y, T.tensor([1, 10], [2]));
    expectClose(await download(x.grad!), [2, 40]);
  });

  it('gradients with wrt follow only the paths to the targets and agree with the full pass', async () => {
    const w = T.tensor([0.3, -0.2, 0.5, 0.1, -0.4, 0.2], [2, 3]).requireGrad();
    const b = T.tensor([0.1, -0.1, 0.2], [3]).requireGrad();
    const x = T.tensor([1, 2, -1, 0.5], [2, 2]).requireGrad();
    const f = () => T.sum(T.exp(T.add(T.matmul(x, w), b)));
    const all = T.gradients(f());
    const only = T.gradients(f(), null, [x]);
    expectClose(await download(only.get(x)!), await download(all.get(x)!), { rtol: 1e-6 });
    expect(only.has(w)).toBe(false);
    expect(only.has(b)).toBe(false);
    expect(all.has(w)).toBe(true);
  });

  it('a long chain does not overflow the stack', async () => {
    const x = T.tensor([1], [1]).requireGrad();
    let y = x;
    for (let i = 0; i < 3000; i++) y = T.affine(y, 1, 0.001);
    T.backward(T.sum(y));
    expectClose(await download(x.grad!), [1]);
  });
});

// A fused activation's derivative is folded into the kernel producing its output's gradient (a dense or conv input
// gradient, through reshapes), or applied on its own for consumers that cannot fold it. A small net exercises every
// case: dense -> reshape -> conv -> transposed conv -> reshape -> dense, with the first activation also read by an
// elementwise op (a consumer that cannot fold) and the dense output read twice.
interface Net {
  n: number;
  din: number;
  c: number;
  hw: number;
  k: number;
  acts: [RefActivation, RefActivation, RefActivation, RefActivation];
}
const arbNet = fc.record({
  n: fc.integer({ min: 1, max: 3 }),
  din: fc.integer({ min: 1, max: 5 }),
  c: fc.integer({ min: 1, max: 3 }),
  hw: fc.integer({ min: 2, max: 5 }),
  k: fc.integer({ min: 1, max: 4 }),
  acts: fc.tuple(...[0, 1, 2, 3].map(() => fc.constantFrom<RefActivation>('relu', 'sigmoid', 'none'))) as fc.Arbitrary<Net['acts']>,
});

const netShapes = (s: Net) => [
  [s.n, s.din],
  [s.c * s.hw * s.hw, s.din],
  [s.c * s.hw * s.hw],
  [s.c, s.c, 3, 3],
  [s.c],
  [s.c, s.c, 3, 3],
  [s.c],
  [s.k, s.c * s.hw * s.hw],
  [s.k],
];

/** The net on the engine; `inner` collects the activations' outputs. */
function net(s: Net, inner: T.Tensor[] = []) {
  return (x: T.Tensor, w1: T.Tensor, b1: T.Tensor, wc: T.Tensor, bc: T.Tensor, wt: T.Tensor, bt: T.Tensor, w2: T.Tensor, b2: T.Tensor) => {
    const h1 = T.linear(x, w1, b1, s.acts[0]);
    const h2 = T.conv2d(T.reshape(h1, [s.n, s.c, s.hw, s.hw]), wc, bc, { padding: 1, activation: s.acts[1] });
    const h3 = T.convTranspose2d(h2, wt, bt, { padding: 1, activation: s.acts[2] });
    const h4 = T.linear(T.reshape(h3, [s.n, s.c * s.hw * s.hw]), w2, b2, s.acts[3]);
    inner.push(h1, h2, h3, h4);
    // h1 also feeds an elementwise consumer; h4 feeds two.
    return T.add(T.mul(h4, h4), T.add(h4, T.sum(T.mul(h1, h1), 1, true)));
  };
}

const refAct = (r: Ref, a: RefActivation): Ref => ({
  shape: r.shape,
  data: r.data.map((v) => (a === 'relu' ? Math.max(v, 0) : a === 'sigmoid' ? 1 / (1 + Math.exp(-v)) : v)),
});

function netRef(s: Net) {
  return (x: Ref, w1: Ref, b1: Ref, wc: Ref, bc: Ref, wt: Ref, bt: Ref, w2: Ref, b2: Ref): Ref => {
    const h1 = refLinear(x, w1, b1, s.acts[0]);
    const img = { shape: [s.n, s.c, s.hw, s.hw], data: h1.data };
    const h2 = refAct(refConv2d(img, wc, bc, { stride: [1, 1], padding: [1, 1], outputSize: [s.hw, s.hw] }), s.acts[1]);
    const h3 = refAct(refConvTranspose2d(h2, wt, bt, { stride: [1, 1], padding: [1, 1], outputPadding: [0, 0] }), s.acts[2]);
    const h4 = refLinear({ shape: [s.n, s.c * s.hw * s.hw], data: h3.data }, w2, b2, s.acts[3]);
    const sq = new Float64Array(s.n);
    h1.data.forEach((v, i) => (sq[Math.floor(i / h1.shape[1])] += v * v));
    return { shape: h4.shape, data: h4.data.map((v, i) => v * v + v + sq[Math.floor(i / s.k)]) };
  };
}

// SwiftShader compiles these nets' many kernel variants about 10x slower than llvmpipe: one case there checks
// the gpu profile's kernels against the unfolded passes.

describe('activation derivatives folded into the producing kernels', () => {
  (SWIFTSHADER ? it.skip : it)('gradients of every input match finite differences on random nets', async () => {
    await fc.assert(
      fc.asyncProperty(arbNet, arbSeed, (s, seed) =>
        checkVjp(net(s), netRef(s), netShapes(s).map((shape, i) => randomRef(shape, seed + i)), seed, { what: `net ${JSON.stringify(s)}` }),
      ),
      { numRuns: 12 },
    );
  });

  it('folding gives what the separate derivative passes give; folded activations leave the map unless asked for', async () => {
    await fc.assert(
      fc.asyncProperty(arbNet, arbSeed, async (s, seed) => {
        const params = netShapes(s).map((shape, i) => toGpu(randomRef(shape, seed + i)).requireGrad());
        const inner: T.Tensor[] = [];
        const out = net(s, inner)(...(params as Parameters<ReturnType<typeof net>>));
        const u = toGpu(randomRef(out.shape, seed + 99));
        const folded = T.gradients(out, u, params);
        // Naming the activations' outputs as targets keeps their gradients, so nothing is folded into them.
        const unfolded = T.gradients(out, u, [...params, ...inner]);
        inner.forEach((t, i) => {
          expect(folded.has(t)).toBe(s.acts[i] === 'none');
          expect(unfolded.has(t)).toBe(true);
        });
        for (const [i, p] of params.entries()) {
          const want = await download(unfolded.get(p)!);
          // The two paths sum the same terms in different orders in f32; where an element cancels, the error is
          // relative to the terms, not to the sum, so the absolute bound follows the gradient's largest element.
          const scale = Math.max(1, ...Array.from(want, Math.abs));
          expectClose(await download(folded.get(p)!), want, { rtol: 1e-5, atol: 1e-5 * scale }, `param ${i} of ${JSON.stringify(s)}`);
        }
        for (const m of [folded, unfolded]) for (const g of m.values()) g.dispose();
      }),
      { numRuns: SWIFTSHADER ? 1 : 8 },
    );
  });
});

describe('scopes and memory', () => {
  it('tidy frees intermediates and keeps what it returns', async () => {
    const rt = T.runtime();
    const x = T.tensor([1, 2, 3], [3]);
    const before = rt.memory().liveBytes;
    const kept = T.tidy(() => {
      const a = T.exp(x);
      const b = T.mul(a, a);
      return { out: T.sum(b) };
    });
    expect(rt.memory().liveBytes - before).toBe(256); // just the returned scalar's bucket
    expect(await kept.out.item()).toBeCloseTo(Math.exp(2) + Math.exp(4) + Math.exp(6), 2);
    kept.out.dispose();
    expect(rt.memory().liveBytes).toBe(before);
  });

  it('reshape views share storage and free it with the last view', () => {
    const rt = T.runtime();
    const before = rt.memory().liveBytes;
    const x = T.zeros([4, 4]);
    const y = T.reshape(x, [16]);
    x.dispose();
    expect(rt.memory().liveBytes).toBeGreaterThan(before);
    expect(y.disposed).toBe(false);
    y.dispose();
    expect(rt.memory().liveBytes).toBe(before);
  });

  it('tidy refuses async functions, whose tensors would escape the scope', () => {
    expect(() => T.tidy(async () => T.zeros([1]))).toThrow(/tidy: the function returned a Promise/);
  });

  it('use after dispose names the tensor', () => {
    const x = T.zeros([2, 2]);
    x.dispose();
    expect(() => T.exp(x)).toThrow(/tensor \[2, 2\] .* used after dispose/);
  });

  it('batches many dispatches into few submissions', async () => {
    const rt = T.runtime();
    // One dispatch per op (fusion would make the chain a handful; test/fusion.test.ts counts those).
    const fusion = rt.fusion;
    rt.fusion = false;
    onTestFinished(() => void (rt.fusion = fusion));
    const s0 = rt.submitCount;
    const d0 = rt.dispatchCount;
    const y = T.tidy(() => {
      let t = T.zeros([64]);
      for (let i = 0; i < 100; i++) t = T.addScalar(t, 1);
      return t;
    });
    expect((await y.data())[0]).toBe(100);
    expect(rt.dispatchCount - d0).toBeGreaterThanOrEqual(100);
    expect(rt.submitCount - s0).toBeLessThanOrEqual(2);
  });
});
