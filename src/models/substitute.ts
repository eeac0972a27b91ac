// The black-box attacker's own model (Papernot et al.'s substitute, the reference's black-box setting): a plain CNN
// trained on images the victim labelled, whose gradients then craft attacks the victim never sees being made.
// Conv features as the latent-variable models' encoders use (3 x conv 5x5 stride 2), a dense layer, ten logits.
import { Tensor, ParameterSet, Adam, Rng, tensor, tidy, crossEntropy, gradients, readAll, argmax, noGrad } from '../index.js';
import { SpecList, ConvFeatures, Dense } from './layers.js';

export interface SubstituteConfig {
  channels: number;
  hidden: number;
  epochs: number;
  batchSize: number;
  lr: number;
  seed: number;
}

export const SUBSTITUTE_DEFAULTS: SubstituteConfig = { channels: 16, hidden: 128, epochs: 10, batchSize: 50, lr: 1e-3, seed: 1 };

export class Substitute {
  readonly params: ParameterSet;
  private readonly features: ConvFeatures;
  private readonly head: Dense;

  constructor(readonly config: SubstituteConfig) {
    const specs = new SpecList(new Rng(config.seed));
    this.features = ConvFeatures.declare(specs, 'features', config.channels, config.hidden);
    this.head = Dense.declare(specs, 'head', config.hidden, 10, 'none');
    this.params = new ParameterSet(specs.specs);
  }

  /** Logits [N, 10] of images [N, 1, 28, 28]. */
  logits(x: Tensor): Tensor {
    return this.head.apply(this.params, this.features.apply(this.params, x));
  }
}

/**
 * Fits a substitute to the victim's labels of `images` ([n * 784] in [0, 1]) with Adam on the cross-entropy, in
 * a seeded order: the same data and config give the same weights. Returns it with its final training accuracy
 * (agreement with the labels it was fitted to).
 */
export async function trainSubstitute(images: Float32Array, labels: Int32Array, config: SubstituteConfig, onEpoch?: (epoch: number) => void): Promise<{ model: Substitute; trainAgreement: number }> {
  const n = labels.length;
  if (images.length !== n * 784) throw new Error(`substitute: ${images.length} pixel values for ${n} labels (expected ${n * 784})`);
  for (const k of ['channels', 'hidden', 'epochs', 'batchSize'] as const) {
    if (!Number.isInteger(config[k]) || config[k] < 1) throw new Error(`substitute: ${k} must be a positive integer, got ${config[k]}`);
  }
  if (!(config.lr > 0)) throw new Error(`substitute: lr must be > 0, got ${config.lr}`);
  labels.forEach((l) => {
    if (!(l >= 0 && l < 10)) throw new Error(`substitute: labels must lie in [0, 10), got ${l}`);
  });
  const model = new Substitute(config);
  const adam = new Adam(model.params, { lr: config.lr });
  const rng = new Rng(config.seed + 1);
  const batch = (rows: number[]) => {
    const x = new Float32Array(rows.length * 784);
    rows.forEach((r, i) => x.set(images.subarray(r * 784, (r + 1) * 784), i * 784));
    return { x: tensor(x, [rows.length, 1, 28, 28]), y: tensor(Int32Array.from(rows, (r) => labels[r]), [rows.length], 'i32') };
  };
  for (let epoch = 0; epoch < config.epochs; epoch++) {
    const order = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rng.float() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (let start = 0; start < n; start += config.batchSize) {
      tidy(() => {
        const { x, y } = batch(order.slice(start, start + config.batchSize));
        adam.step(gradients(crossEntropy(model.logits(x), y)));
      });
    }
    onEpoch?.(epoch + 1);
  }
  let agree = 0;
  for (let start = 0; start < n; start += 500) {
    const rows = Array.from({ length: Math.min(500, n - start) }, (_, i) => start + i);
    const pred = noGrad(() => tidy(() => argmax(model.logits(batch(rows).x))));
    const [p] = await readAll([pred]);
    pred.dispose();
    rows.forEach((r, i) => (agree += +(p[i] === labels[r])));
  }
  adam.dispose();
  return { model, trainAgreement: agree / n };
}
