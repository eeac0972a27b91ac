// The black-box attacker's own model (Papernot et al.'s substitute, the reference's black-box setting): a plain CNN
// trained on images the victim labelled, whose gradients then craft attacks the victim never sees being made.
// Conv features as the latent-variable models' encoders use (3 x conv 5x5 stride 2), a dense layer, ten logits.
import { Tensor, ParameterSet, Adam, Rng, tensor, tidy, keep, crossEntropy, gradients, readAll, argmax, noGrad, softmax, oneHot, sum, mul, add, scale, sign, clamp } from '../engine.js';
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
 * Papernot et al. (2017)'s Jacobian-based dataset augmentation: after each round of training, every image x of
 * the set takes a step x + lambda * sign(d F_y(x) / dx) along the substitute's softmax output for the label the
 * victim gave it, and the victim labels the new points (one query each), doubling the set. `rounds` such
 * augmentations; the substitute trains `epochs` epochs on the set after each, continuing from its weights.
 */
export interface JacobianAugmentation {
  rounds: number;
  lambda: number;
}

/** The victim's labels of images [n * 784]: the black-box attacker's only access to it. */
export type LabelOracle = (images: Float32Array) => Promise<Int32Array>;

export interface SubstituteFit {
  model: Substitute;
  /** Agreement with the labels of the final training set. */
  trainAgreement: number;
  /** Images in the final training set. */
  images: number;
  /** Labels asked of the victim by augmentation (the seed set's labels not counted). */
  queries: number;
}

function checkConfig(images: Float32Array, labels: Int32Array, config: SubstituteConfig): void {
  const n = labels.length;
  if (images.length !== n * 784) throw new Error(`substitute: ${images.length} pixel values for ${n} labels (expected ${n * 784})`);
  for (const k of ['channels', 'hidden', 'epochs', 'batchSize'] as const) {
    if (!Number.isInteger(config[k]) || config[k] < 1) throw new Error(`substitute: ${k} must be a positive integer, got ${config[k]}`);
  }
  if (!(config.lr > 0)) throw new Error(`substitute: lr must be > 0, got ${config.lr}`);
  checkLabels(labels);
}

function checkLabels(labels: Int32Array): void {
  labels.forEach((l) => {
    if (!(l >= 0 && l < 10)) throw new Error(`substitute: labels must lie in [0, 10), got ${l}`);
  });
}

const toTensors = (images: Float32Array, labels: Int32Array, rows: number[]) => {
  const x = new Float32Array(rows.length * 784);
  rows.forEach((r, i) => x.set(images.subarray(r * 784, (r + 1) * 784), i * 784));
  return { x: tensor(x, [rows.length, 1, 28, 28]), y: tensor(Int32Array.from(rows, (r) => labels[r]), [rows.length], 'i32') };
};

const blocks = (n: number, size: number) => Array.from({ length: Math.ceil(n / size) }, (_, b) => Array.from({ length: Math.min(size, n - b * size) }, (_, i) => b * size + i));

/** A substitute, its optimiser and its data-order stream, trained epoch by epoch on whatever set it is given. */
class Fitter {
  readonly model: Substitute;
  private readonly adam: Adam;
  private readonly rng: Rng;

  constructor(readonly config: SubstituteConfig) {
    this.model = new Substitute(config);
    this.adam = new Adam(this.model.params, { lr: config.lr });
    this.rng = new Rng(config.seed + 1);
  }

  fit(images: Float32Array, labels: Int32Array, onEpoch?: (epoch: number) => void): void {
    const n = labels.length;
    for (let epoch = 0; epoch < this.config.epochs; epoch++) {
      const order = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(this.rng.float() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      for (let start = 0; start < n; start += this.config.batchSize) {
        tidy(() => {
          const { x, y } = toTensors(images, labels, order.slice(start, start + this.config.batchSize));
          this.adam.step(gradients(crossEntropy(this.model.logits(x), y)));
        });
      }
      onEpoch?.(epoch + 1);
    }
  }

  async agreement(images: Float32Array, labels: Int32Array): Promise<number> {
    let agree = 0;
    for (const rows of blocks(labels.length, 500)) {
      const pred = noGrad(() => tidy(() => argmax(this.model.logits(toTensors(images, labels, rows).x))));
      const [p] = await readAll([pred]);
      pred.dispose();
      rows.forEach((r, i) => (agree += +(p[i] === labels[r])));
    }
    return agree / labels.length;
  }

  /** Every image moved by lambda * sign of the gradient of the substitute's probability of its label, clipped to [0, 1]. */
  async jacobianStep(images: Float32Array, labels: Int32Array, lambda: number): Promise<Float32Array> {
    const out = new Float32Array(images.length);
    for (const rows of blocks(labels.length, 100)) {
      const moved = tidy(() => {
        const { x, y } = toTensors(images, labels, rows);
        const xv = x.requireGrad();
        const p = sum(mul(softmax(this.model.logits(xv)), oneHot(y, 10)));
        const g = gradients(p, null, [xv]).get(xv)!;
        return keep(noGrad(() => clamp(add(xv, scale(sign(g), lambda)), 0, 1)));
      });
      const [v] = await readAll([moved]);
      moved.dispose();
      out.set(v, rows[0] * 784);
    }
    return out;
  }

  dispose(): void {
    this.adam.dispose();
  }
}

/**
 * Fits a substitute to the victim's labels of `images` ([n * 784] in [0, 1]) with Adam on the cross-entropy, in
 * a seeded order: the same data and config give the same weights. Returns it with its final training accuracy
 * (agreement with the labels it was fitted to).
 */
export async function trainSubstitute(images: Float32Array, labels: Int32Array, config: SubstituteConfig, onEpoch?: (epoch: number) => void): Promise<{ model: Substitute; trainAgreement: number }> {
  checkConfig(images, labels, config);
  const fitter = new Fitter(config);
  fitter.fit(images, labels, onEpoch);
  const trainAgreement = await fitter.agreement(images, labels);
  fitter.dispose();
  return { model: fitter.model, trainAgreement };
}

/**
 * Papernot et al.'s substitute training: fitted to the victim's labels of a small seed set, which Jacobian
 * augmentation grows by asking the victim (`oracle`) to label points where the substitute's output changes most.
 * Seeded like trainSubstitute; the oracle's answers are the only other input.
 */
export async function trainAugmentedSubstitute(
  seedImages: Float32Array,
  seedLabels: Int32Array,
  oracle: LabelOracle,
  config: SubstituteConfig,
  augment: JacobianAugmentation,
  onRound?: (round: number, images: number, epoch: number) => void,
): Promise<SubstituteFit> {
  checkConfig(seedImages, seedLabels, config);
  if (!Number.isInteger(augment.rounds) || augment.rounds < 0) throw new Error(`substitute: augmentation rounds must be an integer >= 0, got ${augment.rounds}`);
  if (!(augment.lambda > 0 && augment.lambda <= 1)) throw new Error(`substitute: augmentation lambda must lie in (0, 1], got ${augment.lambda}`);
  const fitter = new Fitter(config);
  let images = seedImages;
  let labels = seedLabels;
  let queries = 0;
  for (let round = 0; ; round++) {
    fitter.fit(images, labels, (e) => onRound?.(round, labels.length, e));
    if (round === augment.rounds) break;
    const moved = await fitter.jacobianStep(images, labels, augment.lambda);
    const answers = await oracle(moved);
    if (answers.length !== labels.length) throw new Error(`substitute: the oracle labelled ${answers.length} of ${labels.length} images`);
    checkLabels(answers);
    queries += answers.length;
    const grown = new Float32Array(images.length * 2);
    grown.set(images);
    grown.set(moved, images.length);
    const grownLabels = new Int32Array(labels.length * 2);
    grownLabels.set(labels);
    grownLabels.set(answers, labels.length);
    [images, labels] = [grown, grownLabels];
  }
  const trainAgreement = await fitter.agreement(images, labels);
  fitter.dispose();
  return { model: fitter.model, trainAgreement, images: labels.length, queries };
}
