// Reductions along any axes and the softmax family, with their gradients.
import { Tensor, record, sizeOf, fmt, type Shape } from '../tensor.js';
import { rowReduceKernel, axisReduceKernel, rowNormalizeKernel, rowArgmaxKernel, type RowReduceOp } from '../../kernels/reduce.js';
import { normAxes } from '../../kernels/shape.js';
import { reshape, broadcastTo } from './shape.js';
import { mul, sub, exp, eq, scale, neg } from './elementwise.js';
import { oneHot } from './shape.js';

function reduceShape(x: Tensor, axes: number[], keepDims: boolean): number[] {
  return keepDims ? x.shape.map((d, k) => (axes.includes(k) ? 1 : d)) : x.shape.filter((_, k) => !axes.includes(k));
}

/**
 * A workgroup tree per row pays only for few, long rows; otherwise one invocation per output (serial over the row)
 * keeps every core busy without barriers.
 */
const treeWorthIt = (rows: number, len: number) => len >= 256 && rows < 1024;

/**
 * Reduces `axes` of x without permuting: with size-1 axes dropped and neighbours of the same kind merged, x is
 * [kept?, reduced, kept, reduced, ...]; each pass reduces the last reduced block as [outer, len, inner].
 * `scale` (a mean's 1/n) is applied by the last pass.
 */
function reduceAxes(op: RowReduceOp, x: Tensor, axes: number[], keepDims: boolean, scale = 1): Tensor {
  let blocks: { size: number; reduced: boolean }[] = [];
  const merge = () => {
    const merged: typeof blocks = [];
    for (const b of blocks) {
      const last = merged[merged.length - 1];
      if (last && last.reduced === b.reduced) last.size *= b.size;
      else merged.push({ ...b });
    }
    blocks = merged;
  };
  blocks = x.shape.map((size, k) => ({ size, reduced: axes.includes(k) })).filter((b) => b.size !== 1);
  merge();
  let y = x;
  for (;;) {
    const at = blocks.map((b) => b.reduced).lastIndexOf(true);
    if (at < 0) break;
    const outer = sizeOf(blocks.slice(0, at).map((b) => b.size));
    const inner = sizeOf(blocks.slice(at + 1).map((b) => b.size));
    const len = blocks[at].size;
    const passScale = blocks.slice(0, at).some((b) => b.reduced) ? 1 : scale;
    const next = inner === 1 && treeWorthIt(outer, len) ? rowReduceKernel(op, y, outer, len, passScale) : axisReduceKernel(op, y, outer, len, inner, passScale);
    if (y !== x) y.dispose();
    y = next;
    blocks.splice(at, 1);
    merge();
  }
  // Reducing only axes of size 1 (say the batch axis of a broadcast's gradient) changes nothing but the shape.
  if (y === x && scale !== 1) throw new Error(`internal: a mean over size-1 axes has scale ${scale}`);
  const shaped = new Tensor(y.sharedStorage, reduceShape(x, axes, keepDims), x.dtype, y === x ? x.byteOffset : 0);
  if (y !== x) y.dispose();
  return shaped;
}

/** Broadcasts a reduced gradient back over the reduced axes. */
function expandBack(g: Tensor, x: Tensor, axes: number[]): Tensor {
  return broadcastTo(reshape(g, reduceShape(x, axes, true)), x.shape);
}

export function sum(x: Tensor, axes?: number | number[], keepDims = false): Tensor {
  const ax = normAxes('sum', axes, x.rank);
  return record(reduceAxes('sum', x, ax, keepDims), 'sum', [x], (g) => [expandBack(g, x, ax)]);
}

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
