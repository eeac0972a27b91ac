import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, download, expectClose, randomRef, arbShape, arbSeed } from './helpers.js';
import { createModel, modelConfig, NUM_CLASSES, type ModelName } from '../src/models/factorisations.js';
import type { Tensor } from '../src/index.js';

const { rt } = useGpu();

const tiny = (model: ModelName, seed = 1) => modelConfig(model, 'compact', { channels: 3, hidden: 12, latent: 3, seed, preset: 'custom' });

/** Images in [0, 1] and labels for a batch of n. */
const batch = (n: number, seed: number) => ({
  x: T.tensor(randomRef([n * 784], seed, 0, 1).data, [n, 1, 28, 28]),
  y: T.tensor(Int32Array.from({ length: n }, (_, i) => (i * 7 + seed) % NUM_CLASSES), [n], 'i32'),
});

/** A graph of elementwise ops, reductions, a matmul and data movement over two inputs [m, n] and [n, k]. */
const program = ([a, b]: Tensor[]) => {
  const h = T.tanh(T.add(T.matmul(T.exp(T.scale(a, 0.5)), b), T.sum(a)));
  return [T.softmax(h, 1), T.sum(T.mul(h, h), 0), T.transpose(h)];
};

describe('compile: trace once, replay', () => {
  it('replays give what the eager path gives on random shapes, and a new shape traces again', async () => {
    const f = T.compile(program);
    await fc.assert(
      fc.asyncProperty(arbShape(3, 3, 9), arbSeed, async ([m, n, k], seed) => {
        const a = T.tensor(randomRef([m, n], seed).data, [m, n]);
        const b = T.tensor(randomRef([n, k], seed + 1).data, [n, k]);
        const eager = program([a, b]);
        const compiled = f([a, b]);
        const again = f([a, b]);
        const [want, got, got2] = await Promise.all([eager, compiled, again].map((ts) => Promise.all(ts.map(download))));
        want.forEach((w, i) => {
          expectClose(got[i], w, { rtol: 1e-5, atol: 1e-6 }, `output ${i}`);
          expect(Array.from(got2[i])).toEqual(Array.from(got[i]));
        });
        expect(compiled.map((t) => t.shape)).toEqual(eager.map((t) => t.shape));
        for (const t of [a, b, ...eager, ...compiled, ...again]) t.dispose();
      }),
      { numRuns: 12 },
    );
    expect(f.traces).toBeGreaterThan(1);
    expect(f.signatures.length).toBeLessThanOrEqual(8);
    f.dispose();
  });

  it('replays one command buffer: one submission, no reads, the recorded dispatches', async () => {
    const f = T.compile(program);
    const a = T.tensor(randomRef([5, 6], 1).data, [5, 6]);
    const b = T.tensor(randomRef([6, 7], 2).data, [6, 7]);
    f([a, b]).forEach((t) => t.dispose());
    await rt().sync();
    const [s0, r0, d0] = [rt().submitCount, rt().readCount, rt().dispatchCount];
    for (let i = 0; i < 5; i++) f([a, b]).forEach((t) => t.dispose());
    expect(rt().submitCount - s0).toBe(5);
    expect(rt().readCount - r0).toBe(0);
    expect(rt().dispatchCount - d0).toBeGreaterThan(0);
    expect(f.traces).toBe(1);
    f.dispose();
    a.dispose();
    b.dispose();
  });

  it('seeds are arguments: every replay draws what the eager ops draw from that seed, derived seeds included', async () => {
    const draw = (_: Tensor[], [seed]: number[]) => {
      const rng = new T.Rng(seed);
      const x = T.randomNormal([3, 17], rng.nextSeed());
      return [T.randomUniform([5], seed), T.dropout(x, 0.5, rng.fork().nextSeed())];
    };
    const f = T.compile(draw);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 2 ** 53 - 1 }), async (seed) => {
        const eager = draw([], [seed]);
        const got = f([], [seed]);
        const [w, g] = await Promise.all([eager, got].map((ts) => Promise.all(ts.map(download))));
        w.forEach((v, i) => expect(Array.from(g[i])).toEqual(Array.from(v)));
        for (const t of [...eager, ...got]) t.dispose();
      }),
      { numRuns: 10 },
    );
    expect(f.traces).toBe(1);
    f.dispose();
  });

  it('a parameter update is seen by the next replay', async () => {
    const set = new T.ParameterSet([{ name: 'w', shape: [4, 3], init: randomRef([4, 3], 3).data }]);
    const f = T.compile(([x]) => T.matmul(x, set.get('w')));
    const x = T.tensor(randomRef([2, 4], 4).data, [2, 4]);
    const [before] = f([x]);
    const w2 = randomRef([4, 3], 5).data;
    set.loadState({ w: w2 });
    const [after] = f([x]);
    const [eager] = [T.matmul(x, set.get('w'))];
    expect(Array.from(await download(after))).toEqual(Array.from(await download(eager)));
    expect(Array.from(await download(before))).not.toEqual(Array.from(await download(after)));
    f.dispose();
    set.dispose();
  });

  it('a bad input gets the eager error, and leaves nothing behind', async () => {
    const f = T.compile(([a, b]) => T.matmul(a, b));
    const a = T.tensor([1, 2, 3, 4, 5, 6], [2, 3]);
    const b = T.tensor([1, 2, 3, 4], [2, 2]);
    let eagerMessage = '';
    try {
      T.matmul(a, b);
    } catch (e) {
      eagerMessage = (e as Error).message;
    }
    expect(eagerMessage).not.toBe('');
    const before = rt().memory();
    expect(() => f([a, b])).toThrow(eagerMessage);
    expect(rt().memory().recordedBytes).toBe(before.recordedBytes);
    expect(rt().tracing).toBe(false);
    expect(() => f([a, T.tensor([1], [1])]).length).toThrow();
    expect(() => f([a, 'x' as unknown as Tensor])).toThrow(/input 1 is not a tensor/);
    expect(() => f([a, b], [-1])).toThrow(/seed 0 must be an integer/);
    const c = T.tensor([1, 0, 0, 1, 1, 1], [3, 2]);
    const [ok] = f([a, c]);
    expect(Array.from(await download(ok))).toEqual([4, 5, 10, 11]);
    f.dispose();
    expect(() => f([a, c])).toThrow(/after dispose/);
  });

  it('reading back inside a traced function is a clear error', async () => {
    const f = T.compile(([a]) => {
      a.data().catch(() => undefined);
      return a;
    });
    expect(() => f([T.tensor([1], [1])])).toThrow(/cannot read tensors back while it is traced/);
    expect(rt().tracing).toBe(false);
    await rt().sync();
  });
});

/** Two copies of one model and their optimisers: one trained eagerly, one through a compiled step. */
function twins(name: ModelName) {
  const make = () => {
    const model = createModel(tiny(name, 3));
    return { model, adam: new T.Adam(model.params, { lr: 1e-2 }) };
  };
  return [make(), make()] as const;
}

const trainStep = (m: ReturnType<typeof twins>[0], x: Tensor, y: Tensor, seed: number, klWeight = 1) => {
  const negElbo = T.scale(T.mean(m.model.elbo(x, y, { seed, training: true, klWeight })), -1);
  m.adam.step(T.gradients(negElbo));
  return negElbo;
};

describe('compiled models', () => {
  for (const name of ['gfz', 'dfz'] as ModelName[]) {
    it(`${name}: compiled training steps with Adam follow the eager ones (losses and parameters)`, async () => {
      const [eager, compiled] = twins(name);
      const step = T.compile(([x, y], [seed]) => trainStep(compiled, x, y, seed));
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 2, max: 5 }), arbSeed, async (n, seed) => {
          const { x, y } = batch(n, seed);
          const want = T.tidy(() => trainStep(eager, x, y, seed));
          const [got] = step([x, y], [seed]);
          expectClose(await download(got), await download(want), { rtol: 1e-4, atol: 1e-4 }, 'loss');
          for (const t of [x, y, want, got]) t.dispose();
        }),
        { numRuns: 6 },
      );
      const [a, b] = await Promise.all([eager.model.params.state(), compiled.model.params.state()]);
      for (const k of Object.keys(a)) expectClose(b[k], a[k], { rtol: 2e-3, atol: 2e-4 }, k);
      expect(compiled.adam.stepsOf(compiled.model.params.names[0])).toBe(6);
      step.dispose();
    });

    it(`${name}: compiled logits and input gradients equal the eager ones`, async () => {
      const model = createModel(tiny(name, 4));
      const logits = (x: Tensor, seed: number) => model.logits(x, { seed, samples: 3 });
      const inputGrad = (x: Tensor, y: Tensor, seed: number) => {
        const loss = T.mean(T.crossEntropy(logits(x, seed), y));
        return T.gradients(loss, null, [x]).get(x)!;
      };
      const f = T.compile(([x], [seed]) => logits(x, seed));
      const g = T.compile(([x, y], [seed]) => inputGrad(x, y, seed));
      for (const seed of [1, 99]) {
        const { x, y } = batch(3, seed);
        x.requireGrad();
        const [wantL, wantG] = [logits(x, seed), inputGrad(x, y, seed)];
        const [[gotL], [gotG]] = [f([x], [seed]), g([x, y], [seed])];
        expectClose(await download(gotL), await download(wantL), { rtol: 1e-5, atol: 1e-5 }, 'logits');
        expectClose(await download(gotG), await download(wantG), { rtol: 1e-4, atol: 1e-7 }, 'input gradient');
      }
      f.dispose();
      g.dispose();
      model.params.dispose();
    });
  }

  it('a compiled training step holds live, pooled and arena memory flat over 200 steps', async () => {
    const [m] = twins('gfz');
    const step = T.compile(([x, y], [seed]) => trainStep(m, x, y, seed));
    const { x, y } = batch(4, 1);
    const losses: Tensor[] = [];
    let warm: ReturnType<ReturnType<typeof rt>['memory']> | null = null;
    for (let s = 0; s < 200; s++) {
      losses.push(...step([x, y], [s]));
      if (losses.length >= 8) {
        await T.readAll(losses);
        losses.splice(0).forEach((t) => t.dispose());
      }
      if (s === 15) warm = rt().memory();
    }
    expect(losses.length).toBe(0);
    const end = rt().memory();
    expect(end).toEqual(warm);
    expect(step.traces).toBe(1);
    const arena = step.arenaBytes;
    expect(arena).toBeGreaterThan(0);
    step.dispose();
    expect(rt().memory().recordedBytes).toBe(end.recordedBytes - arena);
  });
});
