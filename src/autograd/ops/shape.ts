// Creation and shape ops with their gradients. Reshape shares storage; the rest copy on the GPU.
import { Tensor, record, runtime, assertShape, sizeOf, fmt, type Shape, type DType } from '../tensor.js';
import { fillKernel } from '../../kernels/elementwise.js';
import {
  permuteKernel,
  sliceKernel,
  padKernel,
  concatKernel,
  gatherRowsKernel,
  scatterAddRowsKernel,
  oneHotKernel,
  normAxes,
} from '../../kernels/shape.js';
import { reshape, broadcastTo } from './base.js';

export { reshape, broadcastTo };

/** Uploads host values as a tensor. */
export function tensor(values: ArrayLike<number>, shape: Shape, dtype: DType = 'f32'): Tensor {
  assertShape('tensor', shape);
  if (values.length !== sizeOf(shape)) throw new Error(`tensor: ${values.length} values do not fill shape ${fmt(shape)} (${sizeOf(shape)} elements)`);
  const data = dtype === 'i32' ? Int32Array.from(values) : Float32Array.from(values);
  const t = Tensor.empty(shape, dtype);
  runtime().write(t.buffer, data);
  return t;
}

export function scalar(value: number): Tensor {
  return full([], value);
}

export function full(shape: Shape, value: number): Tensor {
  assertShape('full', shape);
  if (Number.isNaN(value)) throw new Error('full: fill value is NaN');
  return fillKernel(shape, value);
}

export const zeros = (shape: Shape): Tensor => full(shape, 0);
export const ones = (shape: Shape): Tensor => full(shape, 1);

/** Permutes axes (default: reverses them). */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  const p = perm ?? [...Array(x.rank).keys()].reverse();
  if (p.length !== x.rank || normAxes('transpose', p, x.rank).some((a, i) => a !== i)) {
    throw new Error(`transpose: [${p.join(', ')}] is not a permutation of the ${x.rank} axes of ${fmt(x.shape)}`);
  }
  const inverse = new Array<number>(p.length);
  p.forEach((a, i) => (inverse[a] = i));
  return record(permuteKernel(x, p), 'transpose', [x], (g) => [transpose(g, inverse)]);
}

/** x[begin : begin + size] per axis; a size of -1 runs to the end. */
export function slice(x: Tensor, begin: readonly number[], size?: readonly number[]): Tensor {
  if (begin.length !== x.rank) throw new Error(`slice: begin has ${begin.length} entries for rank-${x.rank} tensor ${fmt(x.shape)}`);
  const sz = x.shape.map((d, k) => (size?.[k] === undefined || size[k] === -1 ? d - begin[k] : size[k]));
  sz.forEach((s, k) => {
    if (!Number.isInteger(begin[k]) || begin[k] < 0 || s <= 0 || begin[k] + s > x.shape[k]) {
      throw new Error(`slice: begin [${begin.join(', ')}] size [${sz.join(', ')}] is out of bounds for ${fmt(x.shape)}`);
    }
  });
  return record(sliceKernel(x, begin, sz), 'slice', [x], (g) => [padKernel(g, x.shape, begin)]);
}

export function concat(xs: Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error('concat: no tensors given');
  const rank = xs[0].rank;
  const [ax] = normAxes('concat', axis, rank);
  for (const t of xs) {
    if (t.rank !== rank || t.shape.some((d, k) => k !== ax && d !== xs[0].shape[k])) {
      throw new Error(`concat: shapes ${xs.map((t) => fmt(t.shape)).join(', ')} differ outside axis ${ax}`);
    }
  }
  const shape = [...xs[0].shape];
  shape[ax] = xs.reduce((a, t) => a + t.shape[ax], 0);
  const starts: number[] = [];
  let start = 0;
  for (const t of xs) {
    starts.push(start);
    start += t.shape[ax];
  }
  return record(concatKernel(xs, ax, shape, starts), 'concat', xs, (g) =>
    xs.map((t, i) => slice(g, shape.map((_, k) => (k === ax ? starts[i] : 0)), t.shape)),
  );
}

/** Rows of x (axis 0) picked by i32 indices: out.shape = [...indices.shape, ...x.shape.slice(1)]. */
export function gather(x: Tensor, indices: Tensor): Tensor {
  if (x.rank < 1) throw new Error('gather: x must have at least one axis');
  return record(gatherRowsKernel(x, indices), 'gather', [x], (g) => [scatterAddRowsKernel(g, indices, x.shape[0])]);
}

export function oneHot(labels: Tensor, depth: number): Tensor {
  if (!Number.isInteger(depth) || depth <= 0) throw new Error(`oneHot: depth must be a positive integer, got ${depth}`);
  return oneHotKernel(labels, depth);
}
