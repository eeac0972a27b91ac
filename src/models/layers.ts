// The networks the factorisations are built from, after the reference code (DeepBayes, Li et al. 2019):
// a conv feature stack, MLPs, and the deconvolutional image decoder. Parameter names and layouts follow
// PyTorch (Linear [out, in], Conv2d [out, in, kh, kw], ConvTranspose2d [in, out, kh, kw]) so a PyTorch module
// of the same architecture loads the checkpoints.
import { Tensor, reshape, linear, conv2d, convTranspose2d, type ParameterSpec, type ParameterSet } from '../engine.js';
import type { Rng } from '../autograd/rng.js';

export type Activation = 'none' | 'relu' | 'sigmoid';

/** Collects parameter specs while a model is declared; `ParameterSet` is built from them once. */
export class SpecList {
  readonly specs: ParameterSpec[] = [];
  constructor(private readonly rng: Rng) {}
  add(name: string, shape: number[], init: (rng: Rng, n: number) => Float32Array): string {
    this.specs.push({ name, shape, init: init(this.rng, shape.reduce((a, b) => a * b, 1)) });
    return name;
  }
}

// ---- initialisers (as in the reference: Glorot for dense and conv, a small uniform for deconvs, zero biases) ----

const uniform = (bound: number) => (rng: Rng, n: number) => Float32Array.from({ length: n }, () => (2 * rng.float() - 1) * bound);
const zeros = (_rng: Rng, n: number) => new Float32Array(n);

/** Normal(0, std) truncated at two standard deviations (Keras' glorot_normal). */
const truncatedNormal = (std: number) => (rng: Rng, n: number) =>
  Float32Array.from({ length: n }, () => {
    for (;;) {
      const u = 1 - rng.float();
      const v = rng.float();
      const g = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
      if (Math.abs(g) <= 2) return g * std;
    }
  });

export const glorotUniform = (fanIn: number, fanOut: number) => uniform(Math.sqrt(6 / (fanIn + fanOut)));
export const glorotNormal = (fanIn: number, fanOut: number) => truncatedNormal(Math.sqrt(2 / (fanIn + fanOut)));

// ---- layers ----

export class Dense {
  constructor(
    readonly weight: string,
    readonly bias: string,
    readonly activation: Activation,
  ) {}

  static declare(specs: SpecList, name: string, inDim: number, outDim: number, activation: Activation): Dense {
    return new Dense(
      specs.add(`${name}.weight`, [outDim, inDim], glorotUniform(inDim, outDim)),
      specs.add(`${name}.bias`, [outDim], zeros),
      activation,
    );
  }

  apply(p: ParameterSet, x: Tensor): Tensor {
    return linear(x, p.get(this.weight), p.get(this.bias), this.activation);
  }
}

export class Mlp {
  constructor(readonly layers: Dense[]) {}

  /** sizes [in, h1, ..., out]: ReLU between layers, `last` on the output. */
  static declare(specs: SpecList, name: string, sizes: number[], last: Activation = 'none'): Mlp {
    const layers = sizes.slice(1).map((out, i) => Dense.declare(specs, `${name}.${i}`, sizes[i], out, i === sizes.length - 2 ? last : 'relu'));
    return new Mlp(layers);
  }

  apply(p: ParameterSet, x: Tensor): Tensor {
    return this.layers.reduce((h, layer) => layer.apply(p, h), x);
  }
}

/** 3 x [conv 5x5, C channels, stride 2, padding 2, ReLU] (28 -> 14 -> 7 -> 4), flatten, dense H + ReLU. */
export class ConvFeatures {
  constructor(
    readonly convs: { weight: string; bias: string }[],
    readonly dense: Dense,
  ) {}

  static declare(specs: SpecList, name: string, channels: number, hidden: number, inChannels = 1): ConvFeatures {
    const convs = [0, 1, 2].map((i) => {
      const cin = i === 0 ? inChannels : channels;
      return {
        weight: specs.add(`${name}.conv.${i}.weight`, [channels, cin, 5, 5], glorotNormal(cin * 25, channels * 25)),
        bias: specs.add(`${name}.conv.${i}.bias`, [channels], zeros),
      };
    });
    return new ConvFeatures(convs, Dense.declare(specs, `${name}.fc`, channels * 16, hidden, 'relu'));
  }

  apply(p: ParameterSet, x: Tensor): Tensor {
    let h = x;
    for (const c of this.convs) h = conv2d(h, p.get(c.weight), p.get(c.bias), { stride: 2, padding: 2, activation: 'relu' });
    return this.dense.apply(p, reshape(h, [h.shape[0], -1]));
  }
}

/**
 * The image decoder: dense H + ReLU, dense 16C + ReLU, reshape C x 4 x 4, then transposed convs 5x5 stride 2
 * (4 -> 7 -> 14 -> 28; channels C, C, 1; output padding 0, 1, 1; no bias) with ReLU, ReLU, sigmoid.
 * Returns the Bernoulli/Gaussian mean image [N, 784].
 */
export class ImageDecoder {
  constructor(
    readonly mlp: Mlp,
    readonly deconvs: string[],
    readonly channels: number,
  ) {}

  static declare(specs: SpecList, name: string, inDim: number, channels: number, hidden: number): ImageDecoder {
    const mlp = Mlp.declare(specs, `${name}.fc`, [inDim, hidden, channels * 16], 'relu');
    // Reference init: uniform(+-1 / (k*k*out_channels)).
    const deconvs = [channels, channels, 1].map((out, i) =>
      specs.add(`${name}.deconv.${i}.weight`, [channels, out, 5, 5], uniform(1 / (25 * out))),
    );
    return new ImageDecoder(mlp, deconvs, channels);
  }

  apply(p: ParameterSet, input: Tensor): Tensor {
    const n = input.shape[0];
    let h = reshape(this.mlp.apply(p, input), [n, this.channels, 4, 4]);
    const outputPadding = [0, 1, 1];
    const activations: Activation[] = ['relu', 'relu', 'sigmoid'];
    this.deconvs.forEach((w, i) => {
      h = convTranspose2d(h, p.get(w), null, { stride: 2, padding: 2, outputPadding: outputPadding[i], activation: activations[i] });
    });
    return reshape(h, [n, 784]);
  }
}
