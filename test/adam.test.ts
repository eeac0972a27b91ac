import { describe, it, expect } from 'vitest';
import * as T from './lib.js';
import { useGpu, download, expectClose, randomRef } from './helpers.js';
import { ParameterSet, Adam, type AdamOptions } from '../src/autograd/optim.js';
import { RefAdam } from '../src/reference/adam.js';

const { rt } = useGpu();

// Awkward sizes: a scalar-like parameter, odd lengths, and slots that straddle the 64-element alignment.
const SHAPES: number[][] = [[1], [7], [33, 5], [3, 1, 4], [65]];
const initial = (seed: number) => SHAPES.map((s, k) => randomRef(s, seed + k));
const specsOf = (seed: number) => initial(seed).map((r, k) => ({ name: `p${k}`, shape: r.shape, init: Float32Array.from(r.data) }));
/** Host gradients for step `step`; `skip` lists parameters that get none. */
const gradsAt = (step: number, skip: number[] = []) =>
  SHAPES.map((s, k) => (skip.includes(k) ? null : randomRef(s, 1000 * step + 17 * k + 5, -2, 2).data));
const upload = (grads: (Float64Array | null)[]) => grads.map((g, k) => (g ? T.tensor(g, SHAPES[k]) : null));

/** Float32 initial values as the reference's float64 start, so both begin from the same point. */
const refFrom = (set: ParameterSet, seed: number, opts: AdamOptions) =>
  new RefAdam(initial(seed).map((r) => Float64Array.from(Float32Array.from(r.data))), opts);

async function expectMatchesRef(set: ParameterSet, ref: RefAdam, what: string) {
  const state = await set.state();
  set.names.forEach((name, k) => expectClose(state[name], ref.params[k], { rtol: 1e-5, atol: 1e-6 }, `${what} ${name}`));
}

describe('ParameterSet', () => {
  it('lays parameters out as 256-byte-aligned views usable in ops', async () => {
    const set = new ParameterSet(specsOf(1));
    expect(set.count).toBe(SHAPES.length);
    for (const [k, [name, t]] of set.entries().entries()) {
      expect(name).toBe(`p${k}`);
      expect(t.shape).toEqual(SHAPES[k]);
      expect(t.byteOffset % 256).toBe(0);
      expect(t.buffer).toBe(set.buffer);
      expect(t.requiresGrad).toBe(true);
    }
    const p2 = set.get('p2');
    expectClose(await download(T.add(p2, p2)), initial(1)[2].data.map((v) => 2 * Math.fround(v)), { rtol: 1e-7, atol: 0 }, 'p2 + p2');
    T.backward(T.sum(T.square(p2)));
    expectClose(await download(p2.grad!), initial(1)[2].data.map((v) => 2 * Math.fround(v)), { rtol: 1e-6, atol: 0 }, 'grad');
    set.dispose();
  });

  it('state() and loadState() round-trip; fromTensors copies on the GPU', async () => {
    const set = new ParameterSet(specsOf(2));
    const saved = await set.state();
    const other = new ParameterSet(SHAPES.map((shape, k) => ({ name: `p${k}`, shape })));
    expect(Array.from((await other.state()).p2)).toEqual(new Array(165).fill(0));
    other.loadState(saved);
    expect(await other.state()).toEqual(saved);
    const copied = ParameterSet.fromTensors({ a: set.get('p1'), b: T.tensor([1, 2, 3], [3]) });
    expect(Array.from((await copied.state()).a)).toEqual(Array.from(saved.p1));
    expect(Array.from(await download(copied.get('b')))).toEqual([1, 2, 3]);
    for (const s of [set, other, copied]) s.dispose();
  });

  it('rejects bad specs and bad states', () => {
    expect(() => new ParameterSet([])).toThrow(/no parameters/);
    expect(() => new ParameterSet([{ name: 'a', shape: [2] }, { name: 'a', shape: [1] }])).toThrow(/duplicate parameter name 'a'/);
    expect(() => new ParameterSet([{ name: 'a', shape: [2], init: [1] }])).toThrow(/'a' has 1 initial values for shape \[2\]/);
    const set = new ParameterSet([{ name: 'a', shape: [2] }]);
    expect(() => set.get('b')).toThrow(/no parameter named 'b'/);
    expect(() => set.loadState({})).toThrow(/missing parameter 'a'/);
    expect(() => set.loadState({ a: [1, 2], z: [1] })).toThrow(/unknown parameter\(s\) z/);
    expect(() => set.loadState({ a: [1] })).toThrow(/'a' has 1 values, expected 2/);
    set.dispose();
  });
});

describe('fused Adam matches the float64 reference', () => {
  const variants: [string, AdamOptions][] = [
    ['defaults', {}],
    ['lr 0.05, L2 weight decay', { lr: 0.05, weightDecay: 0.1 }],
    ['AdamW (decoupled decay), other betas', { lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.5, decoupledWeightDecay: true }],
  ];
  for (const [what, opts] of variants) {
    it(what, async () => {
      const set = new ParameterSet(specsOf(3));
      const adam = new Adam(set, opts);
      const ref = refFrom(set, 3, opts);
      for (let step = 1; step <= 6; step++) {
        const grads = gradsAt(step);
        adam.step(upload(grads));
        ref.step(grads);
      }
      await expectMatchesRef(set, ref, what);
      adam.dispose();
      set.dispose();
    });
  }

  it('accepts a Map from gradients() and each parameter .grad; an lr change takes effect', async () => {
    const set = new ParameterSet(specsOf(4));
    const adam = new Adam(set, { lr: 0.01 });
    const ref = refFrom(set, 4, { lr: 0.01 });
    const target = T.tensor(new Float64Array(165).fill(0.5), [33, 5]);
    // loss = sum((p2 - 0.5)^2) + sum(p0 * p1): gradients 2(p2 - 0.5), p1 for p0 (broadcast sum), p0 for p1.
    const loss = () => T.add(T.sum(T.square(T.sub(set.get('p2'), target))), T.sum(T.mul(set.get('p0'), set.get('p1'))));
    const refGrads = () => {
      const [p0, p1, p2] = ref.params;
      return [Float64Array.of(p1.reduce((a, b) => a + b, 0)), p1.map(() => p0[0]), p2.map((v) => 2 * (v - 0.5)), null, null];
    };
    adam.step(T.gradients(loss()));
    ref.step(refGrads());
    adam.lr = 0.02;
    ref.lr = 0.02;
    T.backward(loss());
    adam.step();
    ref.step(refGrads());
    set.zeroGrad();
    await expectMatchesRef(set, ref, 'map/.grad');
    adam.dispose();
    set.dispose();
  });
});

describe('fused Adam semantics', () => {
  it('parameters without a gradient stay bit-identical, moments included, and keep their own step count', async () => {
    const set = new ParameterSet(specsOf(5));
    const adam = new Adam(set);
    const ref = refFrom(set, 5, {});
    const schedule = [[], [1, 3], [1], [0, 1, 2, 3, 4], []];
    let before = await set.state();
    let beforeMoments = await adam.exportState();
    for (const [s, skip] of schedule.entries()) {
      const grads = gradsAt(s + 1, skip);
      adam.step(upload(grads));
      ref.step(grads);
      const after = await set.state();
      const afterMoments = await adam.exportState();
      for (const k of skip) {
        expect(after[`p${k}`], `p${k} at step ${s + 1}`).toEqual(before[`p${k}`]);
        expect(afterMoments.m[`p${k}`]).toEqual(beforeMoments.m[`p${k}`]);
        expect(afterMoments.v[`p${k}`]).toEqual(beforeMoments.v[`p${k}`]);
      }
      before = after;
      beforeMoments = afterMoments;
    }
    expect(set.names.map((n) => adam.stepsOf(n))).toEqual(ref.steps);
    expect(ref.steps).toEqual([4, 2, 4, 3, 4]);
    await expectMatchesRef(set, ref, 'skipping');
    adam.dispose();
    set.dispose();
  });

  it('exported state resumes identically in a fresh set and optimiser', async () => {
    const opts = { lr: 0.03, weightDecay: 0.01 };
    const a = new ParameterSet(specsOf(6));
    const adamA = new Adam(a, opts);
    for (let s = 1; s <= 3; s++) adamA.step(upload(gradsAt(s, s === 2 ? [4] : [])));
    const params = await a.state();
    const state = await adamA.exportState();

    const b = new ParameterSet(SHAPES.map((shape, k) => ({ name: `p${k}`, shape })));
    const adamB = new Adam(b, opts);
    b.loadState(params);
    adamB.importState(state);
    expect(await adamB.exportState()).toEqual(state);
    for (let s = 4; s <= 6; s++) {
      const grads = gradsAt(s);
      adamA.step(upload(grads));
      adamB.step(upload(grads));
    }
    expect(await b.state()).toEqual(await a.state());
    for (const x of [adamA, adamB, a, b]) x.dispose();
  });

  it('one step is exactly one dispatch, whatever the number of parameters', async () => {
    for (const count of [1, 5, 40]) {
      const specs = Array.from({ length: count }, (_, k) => ({ name: `w${k}`, shape: [1 + ((k * 37) % 90)] }));
      const set = new ParameterSet(specs);
      const adam = new Adam(set);
      const grads = set.tensors.map((t) => T.tensor(new Float32Array(t.size).fill(0.25), t.shape));
      await rt().sync();
      const before = rt().dispatchCount;
      adam.step(grads);
      expect(rt().dispatchCount - before, `${count} parameters`).toBe(1);
      // Each parameter moved by lr (the first Adam step is lr * sign(g)).
      const state = await set.state();
      for (const [k, name] of set.names.entries()) expectClose(state[name], new Float32Array(specs[k].shape[0]).fill(-1e-3), { rtol: 1e-5, atol: 0 }, name);
      adam.dispose();
      set.dispose();
    }
  });

  it('releases every arena on dispose', async () => {
    await rt().sync();
    const live = rt().memory().liveBytes;
    const set = new ParameterSet(specsOf(7));
    const adam = new Adam(set);
    T.tidy(() => adam.step(upload(gradsAt(1))));
    await set.state();
    adam.dispose();
    set.dispose();
    expect(rt().memory().liveBytes).toBe(live);
  });

  it('rejects mismatched gradients, bad options and bad states', () => {
    const set = new ParameterSet([{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [4] }]);
    const adam = new Adam(set);
    expect(() => adam.step([T.zeros([5]), null])).toThrow(/gradient \[5\] \(f32\) does not match parameter 'a' \[2, 3\]/);
    expect(() => adam.step([null])).toThrow(/1 gradients for 2 parameters/);
    expect(() => new Adam(set, { beta1: 1 })).toThrow(/beta1 must be in \[0, 1\)/);
    expect(() => new Adam(set, { lr: NaN })).toThrow(/learning rate must be finite/);
    expect(() => new Adam(set, { weightDecay: -1 })).toThrow(/weightDecay must be finite and >= 0/);
    expect(() => adam.importState({ steps: { a: 1, b: -1 }, m: {}, v: {} })).toThrow(/step count of 'b' must be a non-negative integer/);
    expect(() => adam.importState({ steps: { a: 1, b: 1 }, m: { a: new Float32Array(6) }, v: {} })).toThrow(/missing parameter 'b'/);
    adam.dispose();
    expect(() => adam.step([null, null])).toThrow(/disposed/);
    set.dispose();
  });
});
