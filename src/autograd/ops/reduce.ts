// Reductions along any axes and the softmax family, with their gradients.
import { Tensor, record, sizeOf, fmt, type Shape } from '../tensor.js';
import { rowReduceKernel, rowNormalizeKernel, rowArgmaxKernel, type RowReduceOp } from '../../kernels/reduce.js';
import { permuteKernel, normAxes } from '../../kernels/shape.js';
import { reshape, broadcastTo } from './shape.js';
import { mul, sub, exp, eq, scale, neg } from './elementwise.js';
import { oneHot } from './shape.js';

/** Views x as [kept, reduced] rows, permuting only when the reduced axes are not already trailing. */
function asRows(x: Tensor, axes: number[]): { rows: Tensor; nRows: number; nCols: number; keptShape: number[] } {
  const kept = [...Array(x.rank).keys()].filter((k) => !axes.includes(k));
  const nRows = sizeOf(kept.map((k) => x.shape[k]));
  const nCols = sizeOf(axes.map((k) => x.shape[k]));
  const trailing = axes.every((a, i) => a === x.rank - axes.length + i);
  const rows = trailing ? x : permuteKernel(x, [...kept, ...axes]);
  return { rows, nRows, nCols, keptShape: kept.map((k) => x.shape[k]) };
}

function reduceShape(x: Tensor, axes: number[], keepDims: boolean): number[] {
  return keepDims ? x.shape.map((d, k) => (axes.includes(k) ? 1 : d)) : x.shape.filter((_, k) => !axes.includes(k));
}

function rowReduce(op: RowReduceOp, x: Tensor, axes: number[], keepDims: boolean, scale = 1): Tensor {
  // Reducing only axes of size 1 (say the batch axis of a broadcast's gradient) changes nothing but the shape.
  if (axes.every((k) => x.shape[k] === 1) && scale === 1) return new Tensor(x.sharedStorage, reduceShape(x, axes, keepDims), x.dtype, x.byteOffset);
  const { rows, nRows, nCols } = asRows(x, axes);
  const y = rowReduceKernel(op, rows, nRows, nCols, scale);
  if (rows !== x) rows.dispose();
  const shaped = new Tensor(y.sharedStorage, reduceShape(x, axes, keepDims));
  y.dispose();
  return shaped;
}

/** Broadcasts a reduced gradient back over the reduced axes. */
function expandBack(g: Tensor, x: Tensor, axes: number[]): Tensor {
  return broadcastTo(reshape(g, reduceShape(x, axes, true)), x.shape);
}

export function sum(x: Tensor, axes?: number | number[], keepDims = false): Tensor {
  const ax = normAxes('sum', axes, x.rank);
  return record(rowReduce('sum', x, ax, keepDims), 'sum', [x], (g) => [expandBack(g, x, ax)]);
}

export function mean(x: Tensor, axes?: number | number[], keepDims = false): Tensor {
  const ax = normAxes('mean', axes, x.rank);
  const n = sizeOf(ax.map((k) => x.shape[k]));
  return record(rowReduce('sum', x, ax, keepDims, 1 / n), 'mean', [x], (g) => [scale(expandBack(g, x, ax), 1 / n)]);
}

/** Max along axes; the gradient goes to every position equal to the max. */
export function max(x: Tensor, axes?: number | number[], keepDims = false): Tensor {
  const ax = normAxes('max', axes, x.rank);
  const y = rowReduce('max', x, ax, keepDims);
  return record(y, 'max', [x], (g) => [mul(expandBack(g, x, ax), eq(x, reshape(y, reduceShape(x, ax, true))))]);
}

/** log sum exp along axes, computed in one stable online pass. */
export function logsumexp(x: Tensor, axes?: number | number[], keepDims = false): Tensor {
  const ax = normAxes('logsumexp', axes, x.rank);
  const y = rowReduce('logsumexp', x, ax, keepDims);
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
  return record(y, 'softmax', [x], (g) => [mul(y, sub(g, sum(mul(g, y), -1, true)))]);
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  lastAxis('logSoftmax', x, axis);
  const cols = x.shape[x.rank - 1];
  const y = rowNormalizeKernel('logSoftmax', x, x.size / cols, cols);
  // g - softmax(x) * sum(g)
  return record(y, 'logSoftmax', [x], (g) => [sub(g, mul(exp(y), sum(g, -1, true)))]);
}

/** Sums a broadcast gradient back down to `shape` (the single unbroadcast helper for every binary op). */
export function sumTo(g: Tensor, shape: Shape): Tensor {
  if (g.rank === shape.length && g.shape.every((d, k) => d === shape[k])) return g;
  const lead = g.rank - shape.length;
  const axes = g.shape.map((d, k) => k).filter((k) => k < lead || (shape[k - lead] === 1 && g.shape[k] !== 1));
  const s = axes.length ? sum(g, axes, true) : g;
  return reshape(s, shape);
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
