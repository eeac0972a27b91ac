// An independent oracle: TensorFlow.js's CPU backend (NHWC, filters [kh, kw, in, out]) for conv2d and
// conv2dTranspose forward and both gradients, on random cases mapped to its layouts.
import { describe, it, beforeAll, expect } from 'vitest';
import fc from 'fast-check';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients.js';
import '@tensorflow/tfjs-backend-cpu';
import * as T from './lib.js';
import { useGpu, toGpu, expectClose, randomRef, arbSeed } from './helpers.js';
import type { Ref } from '../src/reference/tensor.js';

useGpu();
beforeAll(async () => {
  await tf.setBackend('cpu');
});

const TOL = { rtol: 1e-4, atol: 1e-4 };
const NUM_RUNS = { numRuns: 12 };
type Act = 'none' | 'relu' | 'sigmoid';

const nchwToNhwc = (r: Ref) => tf.transpose(tf.tensor4d(Float32Array.from(r.data), r.shape as [number, number, number, number]), [0, 2, 3, 1]);
/** PyTorch conv [out, in, kh, kw] and transposed-conv [in, out, kh, kw] weights both map to tfjs by (2, 3, 1, 0). */
const weightToTf = (r: Ref) => tf.transpose(tf.tensor4d(Float32Array.from(r.data), r.shape as [number, number, number, number]), [2, 3, 1, 0]);
const nhwcToNchw = (t: tf.Tensor) => tf.transpose(t, [0, 3, 1, 2]);
const tfActivation = (act: Act, t: tf.Tensor) => (act === 'relu' ? tf.relu(t) : act === 'sigmoid' ? tf.sigmoid(t) : t);

async function ours(
  f: (x: T.Tensor, w: T.Tensor, b: T.Tensor) => T.Tensor,
  x: Ref,
  w: Ref,
  b: Ref,
  dySeed: number,
): Promise<{ y: Float32Array; dy: Ref; grads: Float32Array[] }> {
  const [xt, wt, bt] = [toGpu(x).requireGrad(), toGpu(w).requireGrad(), toGpu(b).requireGrad()];
  const y = f(xt, wt, bt);
  const dy = randomRef(y.shape, dySeed);
  const g = T.gradients(y, toGpu(dy));
  const [yd, ...grads] = (await T.readAll([y, g.get(xt)!, g.get(wt)!, g.get(bt)!])) as Float32Array[];
  return { y: yd, dy, grads };
}

async function compare(
  what: string,
  mine: { y: Float32Array; grads: Float32Array[] },
  tfY: tf.Tensor,
  tfGrads: tf.Tensor[],
): Promise<void> {
  expectClose(mine.y, await nhwcToNchw(tfY).data(), TOL, `${what} forward`);
  const [dx, dw, db] = tfGrads;
  // (3, 2, 0, 1) maps tfjs filters [kh, kw, in, out] (transposed: [kh, kw, out, in]) back to the PyTorch layouts.
  expectClose(mine.grads[0], await nhwcToNchw(dx).data(), TOL, `${what} dx`);
  expectClose(mine.grads[1], await tf.transpose(dw, [3, 2, 0, 1]).data(), TOL, `${what} dweight`);
  expectClose(mine.grads[2], await db.data(), TOL, `${what} dbias`);
}

describe('conv2d against TensorFlow.js (CPU backend)', () => {
  it("forward and gradients for symmetric padding and 'same'", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          n: fc.integer({ min: 1, max: 3 }),
          cin: fc.integer({ min: 1, max: 4 }),
          cout: fc.integer({ min: 1, max: 20 }),
          size: fc.tuple(fc.integer({ min: 5, max: 12 }), fc.integer({ min: 5, max: 12 })),
          kernel: fc.tuple(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 5 })),
          stride: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
          padding: fc.oneof(fc.integer({ min: 0, max: 2 }), fc.constant('same' as const)),
          activation: fc.constantFrom<Act>('none', 'relu', 'sigmoid'),
          seed: arbSeed,
        }),
        async (c) => {
          const x = randomRef([c.n, c.cin, ...c.size], c.seed);
          const w = randomRef([c.cout, c.cin, ...c.kernel], c.seed + 1);
          const b = randomRef([c.cout], c.seed + 2);
          const mine = await ours((xt, wt, bt) => T.conv2d(xt, wt, bt, { stride: c.stride, padding: c.padding, activation: c.activation }), x, w, b, c.seed + 3);
          const pad = c.padding === 'same' ? 'same' : ([[0, 0], [c.padding, c.padding], [c.padding, c.padding], [0, 0]] as tf.backend_util.ExplicitPadding);
          const f = (xt: tf.Tensor, wt: tf.Tensor, bt: tf.Tensor) => tfActivation(c.activation, tf.add(tf.conv2d(xt as tf.Tensor4D, wt as tf.Tensor4D, c.stride, pad), bt));
          const args = [nchwToNhwc(x), weightToTf(w), tf.tensor1d(Float32Array.from(b.data))];
          const tfY = f(args[0], args[1], args[2]);
          expect([...tfY.shape]).toEqual([c.n, mine.dy.shape[2], mine.dy.shape[3], c.cout]);
          const grads = tf.grads(f)(args, nchwToNhwc(mine.dy));
          await compare(`conv2d ${JSON.stringify(c)}`, mine, tfY, grads);
        },
      ),
      NUM_RUNS,
    );
  });
});

describe('convTranspose2d against TensorFlow.js (CPU backend)', () => {
  it('forward and gradients with output padding (explicit output shape)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          n: fc.integer({ min: 1, max: 3 }),
          cin: fc.integer({ min: 1, max: 20 }),
          cout: fc.integer({ min: 1, max: 4 }),
          size: fc.tuple(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 8 })),
          kernel: fc.tuple(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 5 })),
          stride: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
          padding: fc.integer({ min: 0, max: 2 }),
          outputPadding: fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 })),
          activation: fc.constantFrom<Act>('none', 'relu', 'sigmoid'),
          seed: arbSeed,
        }),
        async (raw) => {
          const c = { ...raw, outputPadding: [raw.outputPadding[0] % raw.stride[0], raw.outputPadding[1] % raw.stride[1]] as [number, number] };
          const out = [0, 1].map((d) => (c.size[d] - 1) * c.stride[d] - 2 * c.padding + c.kernel[d] + c.outputPadding[d]);
          // tfjs needs the padded output to cover the kernel (its forward conv must be valid).
          fc.pre(out.every((o, d) => o >= 1 && o + 2 * c.padding >= c.kernel[d]));
          const x = randomRef([c.n, c.cin, ...c.size], c.seed);
          const w = randomRef([c.cin, c.cout, ...c.kernel], c.seed + 1);
          const b = randomRef([c.cout], c.seed + 2);
          const opts = { stride: c.stride, padding: c.padding, outputPadding: c.outputPadding, activation: c.activation };
          const mine = await ours((xt, wt, bt) => T.convTranspose2d(xt, wt, bt, opts), x, w, b, c.seed + 3);
          // PyTorch's output padding is the extra far-side rows of the adjoint conv, so it only shows in tfjs's outputShape.
          const outputShape: [number, number, number, number] = [c.n, out[0], out[1], c.cout];
          const pad = [[0, 0], [c.padding, c.padding], [c.padding, c.padding], [0, 0]] as tf.backend_util.ExplicitPadding;
          const f = (xt: tf.Tensor, wt: tf.Tensor, bt: tf.Tensor) => tfActivation(c.activation, tf.add(tf.conv2dTranspose(xt as tf.Tensor4D, wt as tf.Tensor4D, outputShape, c.stride, pad), bt));
          const args = [nchwToNhwc(x), weightToTf(w), tf.tensor1d(Float32Array.from(b.data))];
          const tfY = f(args[0], args[1], args[2]);
          const grads = tf.grads(f)(args, nchwToNhwc(mine.dy));
          await compare(`convTranspose2d ${JSON.stringify(c)}`, mine, tfY, grads);
        },
      ),
      NUM_RUNS,
    );
  });
});
