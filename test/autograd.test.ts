import { describe, it, expect, onTestFinished } from 'vitest';
import * as T from './lib.js';
import { useGpu, download, expectClose } from './helpers.js';

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
