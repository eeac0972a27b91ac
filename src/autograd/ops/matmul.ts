// Matrix products and the dense layer. Gradients are matmuls themselves, with the transpose flags chosen
// so nothing is ever transposed in memory; a batch-broadcast operand's gradient is summed over the batch
// inside the kernel.
import { Tensor, record, fmt } from '../tensor.js';
import { matmulKernel, matmulRowSums, matmulShape, type Activation } from '../../kernels/matmul.js';
import { binaryKernel } from '../../kernels/elementwise.js';
import { sum } from './base.js';

/** A product whose operands are shaped like `like`, summing over the batch when `like` was broadcast. */
function productLike(like: Tensor, batch: number, a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  const likeBatch = like.rank === 3 ? like.shape[0] : 1;
  const out = matmulKernel(a, b, { transA, transB, reduceBatch: likeBatch === 1 && batch > 1 });
  if (out.rank === like.rank) return out;
  // Same elements, rank adjusted ([1, r, c] <-> [r, c]): a view of the storage.
  const shaped = new Tensor(out.sharedStorage, like.shape);
  out.dispose();
  return shaped;
}

/**
 * op(a) · op(b), where op transposes the last two axes when its flag is set. Operands are [rows, cols] or
 * [batch, rows, cols]; a batch of 1 (or a rank-2 operand) broadcasts over the other's batch.
 */
export function matmul(a: Tensor, b: Tensor, opts: { transA?: boolean; transB?: boolean } = {}): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  const { batch } = matmulShape('matmul', a, b, transA, transB);
  const out = matmulKernel(a, b, { transA, transB });
  return record(out, 'matmul', [a, b], (g, need) => [
    // dA = g · op(B)ᵀ, stored transposed when A is: (g · op(B)ᵀ)ᵀ = op(B) · gᵀ.
    need[0] ? (transA ? productLike(a, batch, b, g, transB, true) : productLike(a, batch, g, b, false, !transB)) : null,
    // dB = op(A)ᵀ · g, stored transposed when B is: (op(A)ᵀ · g)ᵀ = gᵀ · op(A).
    need[1] ? (transB ? productLike(b, batch, g, a, true, transA) : productLike(b, batch, a, g, !transA, false)) : null,
  ]);
}

/**
 * A dense layer: activation(x · weightᵀ + bias) with x [N, in], weight [out, in] (PyTorch layout) and bias
 * [out], computed by one fused kernel.
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null, activation: Activation = 'none'): Tensor {
  if (x.rank !== 2) throw new Error(`linear: x must be [N, in], got ${fmt(x.shape)}`);
  if (weight.rank !== 2) throw new Error(`linear: weight must be [out, in], got ${fmt(weight.shape)}`);
  if (x.shape[1] !== weight.shape[1]) {
    throw new Error(`linear: x ${fmt(x.shape)} has ${x.shape[1]} features but weight ${fmt(weight.shape)} expects ${weight.shape[1]}`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== weight.shape[0])) {
    throw new Error(`linear: bias must be [${weight.shape[0]}] to match weight ${fmt(weight.shape)}, got ${fmt(bias.shape)}`);
  }
  if (activation !== 'none' && activation !== 'relu' && activation !== 'sigmoid') {
    throw new Error(`linear: unknown activation '${activation}' (expected 'none', 'relu' or 'sigmoid')`);
  }
  const y = matmulKernel(x, weight, { transB: true, bias, activation });
  const parents = bias ? [x, weight, bias] : [x, weight];
  return record(
    y,
    'linear',
    parents,
    (g, need, ctx) => {
      // The activation's derivative from the saved output, unless the kernel that made g applied it already:
      // relu'(z) = [y > 0], sigmoid'(z) = y (1 - y).
      const gz = activation === 'none' || ctx.masked ? g : binaryKernel(activation === 'relu' ? 'reluGrad' : 'sigmoidGrad', g, y);
      // dx carries x's own activation derivative when x came from a fused layer; dW and db come from one product.
      const dx = need[0] ? matmulKernel(gz, weight, { gradMask: ctx.fold[0] }) : null;
      const both = bias && need[1] && need[2] ? matmulRowSums(gz, x, { transA: true }) : null;
      return [
        dx,
        both ? both.out : need[1] ? matmulKernel(gz, x, { transA: true }) : null,
        bias && need[2] ? (both ? both.rowSums : sum(gz, 0)) : null,
      ];
    },
    { gradActivation: activation === 'none' ? null : activation, foldsMask: [true, false, false] },
  );
}
