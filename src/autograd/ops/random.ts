// Random tensors and dropout from explicit seeds (draw them from an `Rng`): the same seed gives the same values
// on every run and every device layout. Dropout's backward recomputes its mask from the seed.
import { Tensor, record, assertShape, type Shape } from '../tensor.js';
import { assertSeed } from '../rng.js';
import { uniformKernel, normalKernel, dropoutKernel } from '../../kernels/random.js';
import { reshape } from './base.js';

/** Uniform values in [lo, hi) (bounds rounded to f32). */
export function randomUniform(shape: Shape, seed: number, lo = 0, hi = 1): Tensor {
  assertShape('randomUniform', shape);
  assertSeed('randomUniform', seed);
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(Math.fround(lo) < Math.fround(hi))) {
    throw new Error(`randomUniform: bounds [${lo}, ${hi}) must be finite with lo < hi`);
  }
  return uniformKernel(shape, { seed }, lo, hi);
}

/** Normal values with the given mean and standard deviation (Box-Muller). */
export function randomNormal(shape: Shape, seed: number, mean = 0, std = 1): Tensor {
  assertShape('randomNormal', shape);
  assertSeed('randomNormal', seed);
  if (!Number.isFinite(mean) || !Number.isFinite(std) || std < 0) {
    throw new Error(`randomNormal: mean ${mean} must be finite and std ${std} finite and non-negative`);
  }
  return normalKernel(shape, { seed }, mean, std);
}

/**
 * Inverted dropout: zeroes each element with probability `rate` and scales the rest by 1 / (1 - rate), so
 * the expectation is unchanged. With `training` false (or rate 0) it is the identity, returned as a view of x.
 * For a fixed seed the op is linear in x; its gradient applies the same mask and scale.
 */
export function dropout(x: Tensor, rate: number, seed: number, training = true): Tensor {
  if (x.dtype !== 'f32') throw new Error(`dropout: expected an f32 tensor, got ${x.dtype}`);
  if (typeof rate !== 'number' || !(rate >= 0 && rate < 1)) throw new Error(`dropout: rate must be in [0, 1), got ${rate}`);
  assertSeed('dropout', seed);
  if (!training || rate === 0) return reshape(x, x.shape);
  const key = { seed };
  return record(dropoutKernel(x, rate, key), 'dropout', [x], (g) => [dropoutKernel(g, rate, key)]);
}
