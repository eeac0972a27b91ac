// The runtime's in-step profile: every dispatch counted and attributed to its kernel, submissions and readbacks
// counted, encoding timed; GPU times exactly where the adapter has timestamp queries. A profiled step computes
// what an unprofiled one does.
import { describe, it, expect, onTestFinished } from 'vitest';
import * as T from './lib.js';
import { useGpu } from './helpers.js';

const { rt } = useGpu();

/** A small graph: a matmul with bias and activation, elementwise ops, a reduction and its gradient. */
function step(x: T.Tensor, w: T.Tensor): T.Tensor {
  return T.tidy(() => {
    const wv = T.noGrad(() => T.scale(w, 1)).requireGrad();
    const loss = T.sum(T.square(T.relu(T.matmul(x, wv))));
    return T.gradients(loss, null, [wv]).get(wv)!;
  });
}

describe('runtime profile', () => {
  it('counts dispatches, submissions and readbacks, and attributes every dispatch to a kernel', async () => {
    const r = rt();
    const x = T.randomUniform([37, 19], 1);
    const w = T.randomUniform([19, 23], 2);
    const [plain] = await T.readAll([step(x, w)]);
    const before = { dispatches: r.dispatchCount, submits: r.submitCount, reads: r.readCount };
    r.beginProfile();
    const g = step(x, w);
    const [profiled] = await T.readAll([g]);
    const p = await r.endProfile();
    expect(Array.from(profiled)).toEqual(Array.from(plain));
    expect(p.dispatches).toBe(r.dispatchCount - before.dispatches);
    expect(p.dispatches).toBeGreaterThanOrEqual(3);
    expect(p.submits).toBe(r.submitCount - before.submits);
    expect(p.submits).toBeGreaterThanOrEqual(1);
    expect(p.readbacks).toBe(1);
    expect(r.readCount - before.reads).toBe(1);
    expect(p.kernels.reduce((a, k) => a + k.dispatches, 0)).toBe(p.dispatches);
    expect(p.kernels.some((k) => k.key.startsWith('matmul'))).toBe(true);
    expect(p.encodeMs).toBeGreaterThan(0);
    expect(p.encodeMs).toBeCloseTo(p.kernels.reduce((a, k) => a + k.encodeMs, 0), 6);
    expect(p.timestamps).toBe(r.hasTimestamps);
    if (p.timestamps) {
      expect(p.gpuMs).toBeGreaterThan(0);
      p.kernels.forEach((k) => expect(k.gpuMs).toBeGreaterThanOrEqual(0));
    } else {
      expect(p.gpuMs).toBeNull();
      p.kernels.forEach((k) => expect(k.gpuMs).toBeNull());
    }
    [x, w, g].forEach((t) => t.dispose());
  });

  it('times more dispatches than one query set holds, over several submissions', async () => {
    const r = rt();
    // One dispatch per op: fusion would run the chain as a few dozen kernels.
    const fusion = r.fusion;
    r.fusion = false;
    onTestFinished(() => void (r.fusion = fusion));
    const x = T.randomUniform([8], 3);
    r.beginProfile();
    let y = x;
    for (let i = 0; i < 1100; i++) {
      const next = T.addScalar(y, 1e-3);
      if (y !== x) y.dispose();
      y = next;
    }
    const [v] = await T.readAll([y]);
    const p = await r.endProfile();
    expect(v[0]).toBeCloseTo((await x.data())[0] + 1.1, 3);
    expect(p.dispatches).toBe(1100);
    expect(p.submits).toBeGreaterThanOrEqual(p.timestamps ? 2 : 1);
    [x, y].forEach((t) => t.dispose());
  });

  it('says when a profile is opened twice or closed without being open', async () => {
    const r = rt();
    r.beginProfile();
    expect(() => r.beginProfile()).toThrow(/a profile is already open/);
    await r.endProfile();
    await expect(r.endProfile()).rejects.toThrow(/no profile is open/);
  });
});
