// Log densities, each summed over the event (last) axis so every row gets one number.
import { Tensor, add, sub, mul, exp, square, sum, scale, addScalar, reshape, logSoftmax, log, clamp, affine } from '../engine.js';

const HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);

/** log N(z; mu, exp(logSig)^2), constants included (as in the reference). */
export function logGaussian(z: Tensor, mu: Tensor, logSig: Tensor): Tensor {
  const standardised = mul(sub(z, mu), exp(scale(logSig, -1)));
  return scale(sum(add(addScalar(logSig, HALF_LOG_2PI), scale(square(standardised), 0.5)), -1), -1);
}

/** log N(z; 0, I). */
export function logStandardNormal(z: Tensor): Tensor {
  return scale(sum(addScalar(scale(square(z), 0.5), HALF_LOG_2PI), -1), -1);
}

/** log Cat(y; softmax(logits)) for one-hot y. */
export function logCategorical(yOneHot: Tensor, logits: Tensor): Tensor {
  return sum(mul(yOneHot, logSoftmax(logits)), -1);
}

export type ImageLikelihood = 'gaussian' | 'bernoulli';

/**
 * log p(x | .) for images x [N, D] against decoder means [R*N, D] (R draws per image, image-fastest rows);
 * x broadcasts over the R draws instead of being copied. 'gaussian' is the reference's -sum (x - mu)^2
 * (fixed variance 1/2, constant dropped); 'bernoulli' clips the mean away from 0 and 1.
 */
export function logImageLikelihood(x: Tensor, mean: Tensor, kind: ImageLikelihood): Tensor {
  const [n, d] = x.shape;
  const m = reshape(mean, [mean.shape[0] / n, n, d]);
  let ll: Tensor;
  if (kind === 'gaussian') {
    ll = scale(sum(square(sub(m, x)), -1), -1);
  } else {
    const mc = clamp(m, 1e-6, 1 - 1e-6);
    ll = sum(add(mul(x, log(mc)), mul(affine(x, -1, 1), log(affine(mc, -1, 1)))), -1);
  }
  return reshape(ll, [mean.shape[0]]);
}
