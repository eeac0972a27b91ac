import { type Ref, refBroadcastShape, unravel, atBroadcast } from './tensor.js';

const sigmoid = (x: number) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));

export const refUnaryFns = {
  neg: (x: number) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  square: (x: number) => x * x,
  abs: Math.abs,
  sign: Math.sign,
  relu: (x: number) => Math.max(x, 0),
  sigmoid,
  softplus: (x: number) => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x))),
  tanh: Math.tanh,
} as const;

export const refBinaryFns = {
  add: (x: number, y: number) => x + y,
  sub: (x: number, y: number) => x - y,
  mul: (x: number, y: number) => x * y,
  div: (x: number, y: number) => x / y,
  maximum: Math.max,
  minimum: Math.min,
} as const;

export function refMap(x: Ref, f: (v: number) => number): Ref {
  return { shape: [...x.shape], data: x.data.map(f) };
}

export function refZip(a: Ref, b: Ref, f: (x: number, y: number) => number): Ref {
  const shape = refBroadcastShape(a.shape, b.shape);
  const n = shape.reduce((p, d) => p * d, 1);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const idx = unravel(i, shape);
    data[i] = f(atBroadcast(a, idx), atBroadcast(b, idx));
  }
  return { shape, data };
}

export const refClamp = (x: Ref, lo: number, hi: number): Ref => refMap(x, (v) => Math.min(Math.max(v, lo), hi));
