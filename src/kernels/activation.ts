// The activations kernels fuse and the numerically stable forms they use, written once for every kernel:
// elementwise maps, matmul's epilogue (on vec4 accumulators) and conv's (on scalars).
import type { Tensor } from '../backend/tensor.js';

export type Activation = 'none' | 'relu' | 'sigmoid';
export const ACTIVATIONS: readonly Activation[] = ['none', 'relu', 'sigmoid'];

type Scalar = 'f32' | 'vec4<f32>';

/** 1 / (1 + exp(-x)) without overflow: exp of a non-positive argument only. */
const sigmoidFn = (name: string, T: Scalar) => `fn ${name}(x: ${T}) -> ${T} {
  let e = exp(-abs(x));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= ${T}(0.0));
}`;

/** stableSigmoid, stableTanh and log1p on f32, for the elementwise maps. */
export const STABLE_WGSL = /* wgsl */ `
${sigmoidFn('stableSigmoid', 'f32')}
fn stableTanh(x: f32) -> f32 {
  let t = exp(-2.0 * abs(x));
  return sign(x) * (1.0 - t) / (1.0 + t);
}
// log(1 + t) accurate for small t (Goldberg's trick; WGSL has no log1p).
fn log1p(t: f32) -> f32 {
  let u = 1.0 + t;
  if (u == 1.0) { return t; }
  return log(u) * t / (u - 1.0);
}
`;

/** `fn activate(x: T) -> T` for a fused epilogue on scalars (f32) or vec4 accumulators. */
export function activationWgsl(act: Activation, T: Scalar = 'f32'): string {
  if (!ACTIVATIONS.includes(act)) throw new Error(`unknown activation '${act}': expected ${ACTIVATIONS.join(', ')}`);
  const sigmoid = T === 'f32' ? 'sigmoidScalar' : 'sigmoidVec4';
  const expr = act === 'relu' ? `max(x, ${T}(0.0))` : act === 'sigmoid' ? `${sigmoid}(x)` : 'x';
  return `${act === 'sigmoid' ? sigmoidFn(sigmoid, T) + '\n' : ''}fn activate(x: ${T}) -> ${T} { return ${expr}; }`;
}

/**
 * A fused activation's derivative, applied by the kernel that produces the gradient of its output y (the next
 * layer's input gradient) instead of by a pass of its own: relu'(z) = [y > 0], sigmoid'(z) = y (1 - y).
 */
export interface GradMask {
  activation: Exclude<Activation, 'none'>;
  /** The activation's output, the same shape as the gradient being produced. */
  y: Tensor;
}

/** `fn gradMask(g: T, y: T) -> T` for `act` ('none' passes g through). */
export function gradMaskWgsl(act: Activation, T: Scalar = 'f32'): string {
  if (!ACTIVATIONS.includes(act)) throw new Error(`unknown activation '${act}': expected ${ACTIVATIONS.join(', ')}`);
  const expr = act === 'relu' ? `select(${T}(0.0), g, y > ${T}(0.0))` : act === 'sigmoid' ? `g * y * (${T}(1.0) - y)` : 'g';
  return `fn gradMask(g: ${T}, y: ${T}) -> ${T} { return ${expr}; }`;
}
