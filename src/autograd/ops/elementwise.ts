// Elementwise ops, each forward beside its vector-Jacobian product. Binary ops broadcast; `sumTo` undoes it.
import { Tensor, record } from '../tensor.js';
import { unaryKernel, binaryKernel, type UnaryOp, type BinaryOp } from '../../kernels/elementwise.js';
import { sumTo } from './base.js';

const un = (op: UnaryOp, x: Tensor, a = 0, b = 0) => {
  if (x.dtype !== 'f32') throw new Error(`${op}: expected an f32 tensor, got ${x.dtype}`);
  return unaryKernel(op, x, a, b);
};
const bin = (op: BinaryOp, x: Tensor, y: Tensor, a = 0, b = 0) => {
  if (x.dtype !== 'f32' || y.dtype !== 'f32') throw new Error(`${op}: expected f32 tensors, got ${x.dtype} and ${y.dtype}`);
  return binaryKernel(op, x, y, a, b);
};

// ---- binary ----
export const add = (a: Tensor, b: Tensor): Tensor =>
  record(bin('add', a, b), 'add', [a, b], (g) => [sumTo(g, a.shape), sumTo(g, b.shape)]);
export const sub = (a: Tensor, b: Tensor): Tensor =>
  record(bin('sub', a, b), 'sub', [a, b], (g) => [sumTo(g, a.shape), sumTo(neg(g), b.shape)]);
export const mul = (a: Tensor, b: Tensor): Tensor =>
  record(bin('mul', a, b), 'mul', [a, b], (g) => [sumTo(mul(g, b), a.shape), sumTo(mul(g, a), b.shape)]);
export const div = (a: Tensor, b: Tensor): Tensor =>
  record(bin('div', a, b), 'div', [a, b], (g) => [sumTo(div(g, b), a.shape), sumTo(neg(div(mul(g, a), square(b))), b.shape)]);
/** Ties send the gradient to `a`. */
export const maximum = (a: Tensor, b: Tensor): Tensor =>
  record(bin('maximum', a, b), 'maximum', [a, b], (g) => [sumTo(mul(g, ge(a, b)), a.shape), sumTo(mul(g, gt(b, a)), b.shape)]);
/** Ties send the gradient to `a`. */
export const minimum = (a: Tensor, b: Tensor): Tensor =>
  record(bin('minimum', a, b), 'minimum', [a, b], (g) => [sumTo(mul(g, ge(b, a)), a.shape), sumTo(mul(g, gt(a, b)), b.shape)]);

// ---- comparisons (0/1 masks, not differentiable) ----
export const ge = (a: Tensor, b: Tensor): Tensor => bin('ge', a, b);
export const gt = (a: Tensor, b: Tensor): Tensor => bin('gt', a, b);
export const eq = (a: Tensor, b: Tensor): Tensor => bin('eq', a, b);

// ---- unary ----
export const neg = (x: Tensor): Tensor => record(un('neg', x), 'neg', [x], (g) => [neg(g)]);
export const exp = (x: Tensor): Tensor => {
  const y = un('exp', x);
  return record(y, 'exp', [x], (g) => [mul(g, y)]);
};
export const log = (x: Tensor): Tensor => record(un('log', x), 'log', [x], (g) => [div(g, x)]);
export const sqrt = (x: Tensor): Tensor => {
  const y = un('sqrt', x);
  return record(y, 'sqrt', [x], (g) => [bin('sqrtGrad', g, y)]);
};
export const square = (x: Tensor): Tensor => record(un('square', x), 'square', [x], (g) => [scale(mul(g, x), 2)]);
export const abs = (x: Tensor): Tensor => record(un('abs', x), 'abs', [x], (g) => [mul(g, sign(x))]);
export const sign = (x: Tensor): Tensor => un('sign', x);
export const relu = (x: Tensor): Tensor => record(un('relu', x), 'relu', [x], (g) => [bin('reluGrad', g, x)]);
export const sigmoid = (x: Tensor): Tensor => {
  const y = un('sigmoid', x);
  return record(y, 'sigmoid', [x], (g) => [bin('sigmoidGrad', g, y)]);
};
export const softplus = (x: Tensor): Tensor => record(un('softplus', x), 'softplus', [x], (g) => [bin('softplusGrad', g, x)]);
export const tanh = (x: Tensor): Tensor => {
  const y = un('tanh', x);
  return record(y, 'tanh', [x], (g) => [bin('tanhGrad', g, y)]);
};
export const clamp = (x: Tensor, lo: number, hi: number): Tensor => {
  if (Number.isNaN(lo) || Number.isNaN(hi) || lo > hi) throw new Error(`clamp: invalid bounds [${lo}, ${hi}]`);
  return record(un('clamp', x, lo, hi), 'clamp', [x], (g) => [bin('clampGrad', g, x, lo, hi)]);
};
/** x * a + b for scalars a, b. */
export const affine = (x: Tensor, a: number, b: number): Tensor => {
  if (!Number.isFinite(a) || !Number.isFinite(b)) throw new Error(`affine: scale ${a} and shift ${b} must be finite`);
  return record(un('affine', x, a, b), 'affine', [x], (g) => [scale(g, a)]);
};
export const scale = (x: Tensor, a: number): Tensor => affine(x, a, 0);
export const addScalar = (x: Tensor, b: number): Tensor => affine(x, 1, b);
/** |x|^p for p > 0 (used by L_p norms); the gradient is taken as 0 at x = 0. */
export const powAbs = (x: Tensor, p: number): Tensor => {
  if (!(p > 0) || !Number.isFinite(p)) throw new Error(`powAbs: exponent must be a finite number > 0, got ${p}`);
  return record(un('powAbs', x, p), 'powAbs', [x], (g) => [bin('powAbsGrad', g, x, p)]);
};
