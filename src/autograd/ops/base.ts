// The ops every gradient leans on: reshape, broadcastTo, sum and sumTo (the one unbroadcast), whose
// vector-Jacobian products are each other. Below the other op families, which import them, so no op module
// imports another in a circle.
import { Tensor, record, sizeOf, assertShape, fmt, type Shape } from '../tensor.js';
import { rowReduceKernel, axisReduceKernel, type RowReduceOp } from '../../kernels/reduce.js';
import { broadcastToKernel, reshapeKernel, normAxes } from '../../kernels/shape.js';

/** Same data, new shape; one dimension may be -1. Shares storage with x, or stays deferred (no copy). */
export function reshape(x: Tensor, shape: Shape): Tensor {
  const known = shape.filter((d) => d !== -1);
  const infer = shape.length - known.length;
  if (infer > 1) throw new Error(`reshape: at most one -1 allowed in ${fmt(shape)}`);
  const resolved = shape.map((d) => (d === -1 ? x.size / sizeOf(known) : d));
  assertShape('reshape', resolved);
  if (sizeOf(resolved) !== x.size) throw new Error(`reshape: cannot reshape ${fmt(x.shape)} (${x.size} elements) to ${fmt(shape)}`);
  // Same values, so the same activation derivative: a masked gradient passes through as the parent's.
  return record(reshapeKernel(x, resolved), 'reshape', [x], (g) => [reshape(g, x.shape)], { gradActivation: x.gradActivation, maskTransparent: x.gradActivation !== null });
}

export function broadcastTo(x: Tensor, shape: Shape): Tensor {
  const lead = shape.length - x.rank;
  if (lead < 0 || x.shape.some((d, k) => d !== 1 && d !== shape[lead + k])) {
    throw new Error(`broadcastTo: ${fmt(x.shape)} cannot be broadcast to ${fmt(shape)}`);
  }
  return record(broadcastToKernel(x, shape), 'broadcastTo', [x], (g) => [sumTo(g, x.shape)]);
}

export function reduceShape(x: Tensor, axes: number[], keepDims: boolean): number[] {
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
export function reduceAxes(op: RowReduceOp, x: Tensor, axes: number[], keepDims: boolean, scale = 1): Tensor {
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
  if (y === x) return reshapeKernel(x, reduceShape(x, axes, keepDims));
  const shaped = new Tensor(y.sharedStorage, reduceShape(x, axes, keepDims), x.dtype);
  y.dispose();
  return shaped;
}

/** Broadcasts a reduced gradient back over the reduced axes. */
export function expandBack(g: Tensor, x: Tensor, axes: number[]): Tensor {
  return broadcastTo(reshape(g, reduceShape(x, axes, true)), x.shape);
}

export function sum(x: Tensor, axes?: number | number[], keepDims = false): Tensor {
  const ax = normAxes('sum', axes, x.rank);
  return record(reduceAxes('sum', x, ax, keepDims), 'sum', [x], (g) => [expandBack(g, x, ax)]);
}

/** Sums a broadcast gradient back down to `shape` (the single unbroadcast helper for every binary op). */
export function sumTo(g: Tensor, shape: Shape): Tensor {
  if (g.rank === shape.length && g.shape.every((d, k) => d === shape[k])) return g;
  const lead = g.rank - shape.length;
  const axes = g.shape.map((d, k) => k).filter((k) => k < lead || (shape[k - lead] === 1 && g.shape[k] !== 1));
  const s = axes.length ? sum(g, axes, true) : g;
  return reshape(s, shape);
}
