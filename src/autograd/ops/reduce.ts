// Reductions along any axes and the softmax family, with their gradients.
import { Tensor, record, sizeOf, fmt } from '../tensor.js';
import { rowNormalizeKernel, rowNormalizeGradKernel, rowArgmaxKernel } from '../../kernels/reduce.js';
import { normAxes } from '../../kernels/shape.js';
import { reshape, sum, sumTo, reduceAxes, reduceShape, expandBack } from './base.js';
import { mul, sub, exp, eq, scale, neg } from './elementwise.js';
import { oneHot } from './shape.js';

export { sum, sumTo };

export function mean(x: Tensor, axes?: number | number[], keepDims = false): Tensor {
  const ax = normAxes('mean', axes, x.rank);
  const n = sizeOf(ax.map((k) => x.shape[k]));
  return record(reduceAxes('sum', x, ax, keepDims, 1 / n), 'mean', [x], (g) => [scale(expandBack(g, x, ax), 1 / n)]);
}

/** Max along axes; the gradient goes to every position equal to the max. */
export function max(x: Tensor, axes?: number | number[], keepDims = false): Tensor {
  const ax = normAxes('max', axes, x.rank);
  const y = reduceAxes('max', x, ax, keepDims);
  return record(y, 'max', [x], (g) => [mul(expandBack(g, x, ax), eq(x, reshape(y, reduceShape(x, ax, true))))]);
}

/** log sum exp along axes, computed in one stable online pass. */
export function logsumexp(x: Tensor, axes?: number | number[], keepDims = false): Tensor {
  const ax = normAxes('logsumexp', axes, x.rank);
  const y = reduceAxes('logsumexp', x, ax, keepDims);
  return record(y, 'logsumexp', [x], (g) => [mul(expandBack(g, x, ax), exp(sub(x, reshape(y, reduceShape(x, ax, true)))))]);
}

function lastAxis(op: string, x: Tensor, axis: number): number {
  const [a] = normAxes(op, axis, x.rank);
  if (a !== x.rank - 1) throw new Error(`${op}: only the last axis is supported (got axis ${axis} of ${fmt(x.shape)}); transpose first`);
  return a;
}

export function softmax(x: Tensor, axis = -1): Tensor {
  lastAxis('softmax', x, axis);
  const cols = x.shape[x.rank - 1];
  const y = rowNormalizeKernel('softmax', x, x.size / cols, cols);
  // dy/dx^T g = y * (g - sum(g * y))
  return record(y, 'softmax', [x], (g) => [rowNormalizeGradKernel('softmax', g, y, x.size / cols, cols) ?? mul(y, sub(g, sum(mul(g, y), -1, true)))]);
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  lastAxis('logSoftmax', x, axis);
  const cols = x.shape[x.rank - 1];
  const y = rowNormalizeKernel('logSoftmax', x, x.size / cols, cols);
  // g - softmax(x) * sum(g)
  return record(y, 'logSoftmax', [x], (g) => [rowNormalizeGradKernel('logSoftmax', g, y, x.size / cols, cols) ?? sub(g, mul(exp(y), sum(g, -1, true)))]);
}

/** Index of the largest entry along the last axis (first on ties), as i32; not differentiable. */
export function argmax(x: Tensor): Tensor {
  if (x.rank < 1) throw new Error('argmax: needs at least one axis');
  const cols = x.shape[x.rank - 1];
  const y = rowArgmaxKernel(x, x.size / cols, cols);
  const shaped = new Tensor(y.sharedStorage, x.shape.slice(0, -1), 'i32');
  y.dispose();
  return shaped;
}

/** Mean cross-entropy of softmax(logits) [N, C] against i32 labels [N]. */
export function crossEntropy(logits: Tensor, labels: Tensor, reduction: 'mean' | 'none' = 'mean'): Tensor {
  if (logits.rank !== 2) throw new Error(`crossEntropy: logits must be [N, C], got ${fmt(logits.shape)}`);
  if (labels.dtype !== 'i32' || labels.rank !== 1 || labels.shape[0] !== logits.shape[0]) {
    throw new Error(`crossEntropy: labels must be i32 [${logits.shape[0]}], got ${labels.dtype} ${fmt(labels.shape)}`);
  }
  const perRow = neg(sum(mul(logSoftmax(logits), oneHot(labels, logits.shape[1])), -1));
  return reduction === 'mean' ? mean(perRow) : perRow;
}
