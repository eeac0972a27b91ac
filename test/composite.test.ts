// End-to-end checks of the engine on composed expressions: a small conv net with a VAE-style loss, gradients
// against finite differences of a float64 re-implementation, and flat memory over many training-like steps.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, randomRef, arbSeed, checkVjp, SWIFTSHADER } from './helpers.js';
import { type Ref } from '../src/reference/tensor.js';
import { refConv2d } from '../src/reference/conv.js';
import { refLinear } from '../src/reference/matmul.js';

useGpu();

const LOG_2PI = Math.log(2 * Math.PI);

/** Mean over the batch of log p(x|z) + log N(z; 0, I) - log N(z; mu, sigma), z = mu + sigma * eps. */
function vaeLoss(x: T.Tensor, w1: T.Tensor, b1: T.Tensor, w2: T.Tensor, b2: T.Tensor, wd: T.Tensor, bd: T.Tensor, eps: T.Tensor): T.Tensor {
  const n = x.shape[0];
  const h = T.conv2d(x, w1, b1, { stride: 2, padding: 1, activation: 'relu' });
  const q = T.linear(T.reshape(h, [n, -1]), w2, b2);
  const zDim = q.shape[1] / 2;
  const mu = T.slice(q, [0, 0], [n, zDim]);
  const logSig = T.slice(q, [0, zDim], [n, zDim]);
  const z = T.add(mu, T.mul(T.exp(logSig), eps));
  const mean = T.linear(z, wd, bd, 'sigmoid');
  const logPx = T.neg(T.sum(T.square(T.sub(T.reshape(x, [n, -1]), mean)), -1));
  const logPz = T.sum(T.affine(T.square(z), -0.5, -0.5 * LOG_2PI), -1);
  const logQ = T.sum(T.add(T.affine(T.square(eps), -0.5, -0.5 * LOG_2PI), T.neg(logSig)), -1);
  return T.mean(T.sub(T.add(logPx, logPz), logQ));
}

function vaeLossRef(x: Ref, w1: Ref, b1: Ref, w2: Ref, b2: Ref, wd: Ref, bd: Ref, eps: Ref): Ref {
  const n = x.shape[0];
  const ho = Math.floor((x.shape[2] + 2 - 3) / 2) + 1;
  const h = refConv2d(x, w1, b1, { stride: [2, 2], padding: [1, 1], outputSize: [ho, ho] });
  const hr = { shape: [n, h.data.length / n], data: h.data.map((v) => Math.max(v, 0)) };
  const q = refLinear(hr, w2, b2);
  const zDim = q.shape[1] / 2;
  const z: Ref = { shape: [n, zDim], data: new Float64Array(n * zDim) };
  for (let i = 0; i < n; i++)
    for (let j = 0; j < zDim; j++) z.data[i * zDim + j] = q.data[i * 2 * zDim + j] + Math.exp(q.data[i * 2 * zDim + zDim + j]) * eps.data[i * zDim + j];
  const mean = refLinear(z, wd, bd, 'sigmoid');
  const d = mean.shape[1];
  let total = 0;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < d; k++) total -= (x.data[i * d + k] - mean.data[i * d + k]) ** 2;
    for (let j = 0; j < zDim; j++) {
      const zz = z.data[i * zDim + j];
      const e = eps.data[i * zDim + j];
      total += -0.5 * zz * zz - 0.5 * LOG_2PI - (-0.5 * e * e - 0.5 * LOG_2PI - q.data[i * 2 * zDim + zDim + j]);
    }
  }
  return { shape: [], data: Float64Array.of(total / n) };
}

describe('a small conv net with a VAE-style loss', () => {
  it('autodiff matches finite differences for every input, the image included', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 4, max: 7 }), fc.integer({ min: 1, max: 3 }), arbSeed, async (n, size, zDim, seed) => {
        const c = 3;
        const ho = Math.floor((size + 2 - 3) / 2) + 1;
        const inputs = [
          randomRef([n, 1, size, size], seed, 0, 1),
          randomRef([c, 1, 3, 3], seed + 1, -0.5, 0.5),
          randomRef([c], seed + 2, -0.1, 0.1),
          randomRef([2 * zDim, c * ho * ho], seed + 3, -0.3, 0.3),
          randomRef([2 * zDim], seed + 4, -0.1, 0.1),
          randomRef([size * size, zDim], seed + 5, -0.5, 0.5),
          randomRef([size * size], seed + 6, -0.1, 0.1),
          randomRef([n, zDim], seed + 7, -1, 1),
        ];
        await checkVjp(vaeLoss, vaeLossRef, inputs, seed, { what: 'vae loss', rtol: 2e-2, atol: 2e-3 });
      }),
      // Every case compiles new kernel variants, which SwiftShader does several times slower.
      { numRuns: SWIFTSHADER ? 2 : 10 },
    );
  });
});

describe('memory', () => {
  it('200 training-like steps keep live and pooled bytes flat after warm-up', async () => {
    const rt = T.runtime();
    const params = new T.ParameterSet([
      { name: 'conv.weight', shape: [4, 1, 3, 3], init: randomRef([4, 1, 3, 3], 1, -0.3, 0.3).data },
      { name: 'conv.bias', shape: [4] },
      { name: 'fc.weight', shape: [10, 4 * 4 * 4], init: randomRef([10, 64], 2, -0.1, 0.1).data },
      { name: 'fc.bias', shape: [10] },
    ]);
    const adam = new T.Adam(params, { lr: 1e-2 });
    const x = T.keep(T.randomUniform([8, 1, 8, 8], 3));
    const labels = T.keep(T.tensor([0, 1, 2, 3, 4, 5, 6, 7], [8], 'i32'));
    const step = () =>
      T.tidy(() => {
        const h = T.conv2d(x, params.get('conv.weight'), params.get('conv.bias'), { stride: 2, padding: 1, activation: 'relu' });
        const logits = T.linear(T.reshape(h, [8, -1]), params.get('fc.weight'), params.get('fc.bias'));
        const loss = T.crossEntropy(logits, labels);
        adam.step(T.gradients(loss));
        return loss;
      });
    const losses: number[] = [];
    let warm = rt.memory();
    for (let i = 0; i < 200; i++) {
      const loss = step();
      if (i % 20 === 0) losses.push(await loss.item());
      loss.dispose();
      if (i === 19) {
        await rt.sync();
        warm = rt.memory();
      }
    }
    await rt.sync();
    const end = rt.memory();
    expect(end.liveBytes).toBe(warm.liveBytes);
    expect(end.pooledBytes).toBe(warm.pooledBytes);
    expect(end.liveBuffers).toBe(warm.liveBuffers);
    // It is really training: the loss falls.
    expect(losses[losses.length - 1]).toBeLessThan(losses[0] * 0.5);
    adam.dispose();
    params.dispose();
  });

  it('the pool keeps at most poolLimitBytes when shapes keep changing, and results stay right', async () => {
    const rt = T.runtime();
    const limit = rt.poolLimitBytes;
    await rt.sync();
    rt.trimPool();
    rt.poolLimitBytes = 64 * 1024;
    try {
      for (let n = 1; n <= 40; n++) {
        // Intermediates of many sizes, released while their dispatches are still unsubmitted.
        const total = T.tidy(() => T.sum(T.scale(T.affine(T.tensor(new Float32Array(n * 700).fill(1), [n, 700]), 2, 1), 0.5)));
        expect(await total.item()).toBeCloseTo(n * 700 * 1.5, 0);
        total.dispose();
        expect(rt.memory().pooledBytes).toBeLessThanOrEqual(64 * 1024);
      }
    } finally {
      rt.poolLimitBytes = limit;
    }
  });
});
