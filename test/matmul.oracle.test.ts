// An independent oracle: TensorFlow.js (tfjs-core on its CPU backend) computes the same products and, through
// its own autodiff, their gradients; both sides get identical float32 inputs.
import { describe, it, beforeAll, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
// tfjs-core registers its gradient functions only on request (the umbrella package does this itself).
import '@tensorflow/tfjs-core/dist/register_all_gradients.js';
import * as T from './lib.js';
import { useGpu, toGpu, expectClose, randomRef } from './helpers.js';
import { type Ref } from '../src/reference/tensor.js';

useGpu();

beforeAll(async () => {
  tf.env().set('IS_TEST', true); // silences the tfjs-node advice printed on first use
  await tf.setBackend('cpu');
});

// float32 on both sides with different summation orders.
const TOL = { rtol: 1e-4, atol: 1e-5 };

const tfOf = (r: Ref) => tf.tensor(Float32Array.from(r.data), r.shape);

/** Forward value and gradients of <u, f(inputs)> on our engine. */
async function ours(f: (...xs: T.Tensor[]) => T.Tensor, inputs: Ref[], seed: number) {
  const result = T.tidy(() => {
    const xs = inputs.map((x) => toGpu(x).requireGrad());
    const out = f(...xs);
    const u = randomRef(out.shape, seed);
    const grads = T.gradients(out, toGpu(u));
    return [out, ...xs.map((x) => grads.get(x)!)];
  });
  const data = await T.readAll(result);
  const shapes = result.map((t) => t.shape);
  result.forEach((t) => t.dispose());
  return { out: data[0], outShape: shapes[0], grads: data.slice(1), gradShapes: shapes.slice(1) };
}

/** The same through TensorFlow.js. */
function theirs(f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: Ref[], seed: number) {
  return tf.tidy(() => {
    const xs = inputs.map(tfOf);
    const out = f(...xs);
    const u = tfOf(randomRef(out.shape, seed));
    const grads = tf.grads((...args: tf.Tensor[]) => tf.sum(tf.mul(f(...args), u)))(xs);
    return { out: out.dataSync(), outShape: out.shape, grads: grads.map((g) => g.dataSync()), gradShapes: grads.map((g) => g.shape) };
  });
}

async function compare(what: string, f: (...xs: T.Tensor[]) => T.Tensor, g: (...xs: tf.Tensor[]) => tf.Tensor, inputs: Ref[], seed: number) {
  const a = await ours(f, inputs, seed);
  const b = theirs(g, inputs, seed);
  expect([...a.outShape], `${what} output shape`).toEqual(b.outShape);
  expectClose(a.out, b.out, TOL, `${what} forward`);
  a.grads.forEach((grad, i) => {
    expect([...a.gradShapes[i]], `${what} gradient ${i} shape`).toEqual(b.gradShapes[i]);
    expectClose(grad, b.grads[i], TOL, `${what} gradient of input ${i}`);
  });
}

/** tf.matMul's gradient does not reduce a broadcast batch, so the oracle broadcasts explicitly first. */
const tfBatched = (x: tf.Tensor, batch: number) => (batch > 1 && (x.rank === 2 || x.shape[0] === 1) ? tf.broadcastTo(x, [batch, ...x.shape.slice(-2)]) : x);

const matmulCases: { a: number[]; b: number[]; transA?: boolean; transB?: boolean }[] = [
  { a: [5, 7], b: [7, 3] },
  { a: [7, 5], b: [7, 3], transA: true },
  { a: [5, 7], b: [3, 7], transB: true },
  { a: [9, 1], b: [6, 9], transA: true, transB: true },
  { a: [2, 5, 7], b: [2, 7, 3] },
  { a: [5, 7], b: [3, 7, 4] },
  { a: [2, 12, 8], b: [1, 6, 12], transA: true, transB: true },
  // Multiples of 4: the direct vec4 kernel on the CPU adapter.
  { a: [36, 64], b: [48, 64], transB: true },
  { a: [64, 36], b: [64, 20], transA: true },
  { a: [3, 16, 32], b: [32, 8] },
];

describe('matmul agrees with TensorFlow.js (forward and gradients)', () => {
  matmulCases.forEach(({ a, b, transA = false, transB = false }, i) => {
    const what = `a [${a}]${transA ? 'ᵀ' : ''} · b [${b}]${transB ? 'ᵀ' : ''}`;
    it(what, async () => {
      const batch = Math.max(a.length === 3 ? a[0] : 1, b.length === 3 ? b[0] : 1);
      await compare(
        what,
        (x, y) => T.matmul(x, y, { transA, transB }),
        (x, y) => tf.matMul(tfBatched(x, batch), tfBatched(y, batch), transA, transB),
        [randomRef(a, 100 + i), randomRef(b, 200 + i)],
        300 + i,
      );
    });
  });
});

describe('linear agrees with TensorFlow.js (forward and gradients)', () => {
  const cases: { n: number; inDim: number; outDim: number; bias: boolean; activation: 'none' | 'relu' | 'sigmoid' }[] = [
    { n: 6, inDim: 10, outDim: 4, bias: true, activation: 'none' },
    { n: 6, inDim: 10, outDim: 4, bias: true, activation: 'relu' },
    { n: 5, inDim: 3, outDim: 7, bias: true, activation: 'sigmoid' },
    { n: 3, inDim: 9, outDim: 2, bias: false, activation: 'relu' },
    { n: 16, inDim: 32, outDim: 24, bias: true, activation: 'relu' },
    { n: 20, inDim: 28, outDim: 12, bias: true, activation: 'sigmoid' },
  ];
  const tfActivation = { none: (z: tf.Tensor) => z, relu: tf.relu, sigmoid: tf.sigmoid };
  cases.forEach(({ n, inDim, outDim, bias, activation }, i) => {
    const what = `x [${n}, ${inDim}], weight [${outDim}, ${inDim}]${bias ? ', bias' : ''}, ${activation}`;
    it(what, async () => {
      const inputs = [randomRef([n, inDim], 400 + i), randomRef([outDim, inDim], 500 + i), ...(bias ? [randomRef([outDim], 600 + i)] : [])];
      await compare(
        what,
        (x, w, b) => T.linear(x, w, b ?? null, activation),
        (x, w, b) => {
          const z = tf.matMul(x, w, false, true);
          return tfActivation[activation](b ? tf.add(z, b) : z);
        },
        inputs,
        700 + i,
      );
    });
  });
});
