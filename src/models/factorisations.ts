// The seven latent-variable classifiers of Li, Bradshaw & Sharma (2019). Each model is its factorisation of
// log p(x, y, z); all share the amortised posterior q(z|x,y). Training maximises the ELBO
//   log p(x, y, z) - log q(z|x, y),   z ~ q(z|x, y)   (one reparameterised sample),
// and classification applies Bayes' rule to importance-sampled estimates of log p(x, y).
import {
  Tensor, ParameterSet, Rng, runtime, add, concat, slice, reshape, broadcastTo, exp, mul, oneHot, tensor, randomNormal, dropout,
  logsumexp, addScalar, scale, transpose, sub, gather, mean, neg, compile, type CompiledFunction, type TracedFunction,
} from '../engine.js';
import { fmt } from '../autograd/tensor.js';
import { SpecList, Mlp, ConvFeatures, ImageDecoder } from './layers.js';
import { logGaussian, logStandardNormal, logCategorical, logImageLikelihood, type ImageLikelihood } from './distributions.js';

export const MODEL_NAMES = ['gfz', 'dfz', 'dfx', 'dbx', 'gfy', 'gbz', 'gby'] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

export const PRESETS = {
  /** The reference sizes (GPU). */
  paper: { channels: 64, hidden: 500, latent: 64 },
  /** For machines without a GPU. */
  compact: { channels: 16, hidden: 128, latent: 32 },
} as const;
export type PresetName = keyof typeof PRESETS;

export interface ModelConfig {
  model: ModelName;
  preset: PresetName | 'custom';
  channels: number;
  hidden: number;
  latent: number;
  likelihood: ImageLikelihood;
  /** Dropout on the conv feature vectors during training (0 = none, as in the reference code). */
  dropout: number;
  /** Seed of the parameter initialisation. */
  seed: number;
}

/**
 * How Li, Bradshaw & Sharma (2019) name and group the seven: in G(enerative) models y is an ancestor of x (x is
 * generated from the class), in D(iscriminative) ones x is an ancestor of y (p_D(x), where x is the root, is the data
 * distribution). F(ully connected) graphs link x and y directly; B(ottleneck) ones connect them only through z.
 * The last letter names the root.
 */
export const MODEL_STRUCTURE: Record<ModelName, { factorisation: string; family: 'generative' | 'discriminative'; graph: 'fully connected' | 'bottleneck' }> = {
  gfz: { factorisation: 'p(z) p(y|z) p(x|y,z)', family: 'generative', graph: 'fully connected' },
  gfy: { factorisation: 'p(y) p(z|y) p(x|y,z)', family: 'generative', graph: 'fully connected' },
  gbz: { factorisation: 'p(z) p(y|z) p(x|z)', family: 'generative', graph: 'bottleneck' },
  gby: { factorisation: 'p(y) p(z|y) p(x|z)', family: 'generative', graph: 'bottleneck' },
  dfz: { factorisation: 'p(z) p(x|z) p(y|x,z)', family: 'discriminative', graph: 'fully connected' },
  dfx: { factorisation: 'p_D(x) p(z|x) p(y|x,z)', family: 'discriminative', graph: 'fully connected' },
  dbx: { factorisation: 'p_D(x) p(z|x) p(y|z)', family: 'discriminative', graph: 'bottleneck' },
};

export function modelStructure(model: string): (typeof MODEL_STRUCTURE)[ModelName] {
  const s = MODEL_STRUCTURE[model as ModelName];
  if (!s) throw new Error(`unknown model '${model}': expected one of ${MODEL_NAMES.join(', ')}`);
  return s;
}

export const NUM_CLASSES = 10;

/** Fashion-MNIST's class names, by label. */
export const CLASS_NAMES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];
/** Names the Bayes-rule estimator `logits` computes, so results cached under another one are recomputed. */
export const LOGITS_ESTIMATOR = 'importance sampling, K draws per image shared by all classes';
/** The reference's estimator: fresh draws for every (class, sample, image). */
export const INDEPENDENT_ESTIMATOR = 'importance sampling, K independent draws per image and class';
/** 'shared': an image's K draws serve all ten classes (common random numbers); 'independent': the reference's. */
export type Estimator = 'shared' | 'independent';
export const ESTIMATORS: readonly Estimator[] = ['shared', 'independent'];
export const estimatorName = (e: Estimator) => (e === 'shared' ? LOGITS_ESTIMATOR : INDEPENDENT_ESTIMATOR);
const LOG_UNIFORM_PRIOR_Y = Math.log(1 / NUM_CLASSES);

export function modelConfig(model: string, preset: string, overrides: Partial<ModelConfig> = {}): ModelConfig {
  if (!(MODEL_NAMES as readonly string[]).includes(model)) throw new Error(`unknown model '${model}': expected one of ${MODEL_NAMES.join(', ')}`);
  if (!(preset in PRESETS)) throw new Error(`unknown preset '${preset}': expected one of ${Object.keys(PRESETS).join(', ')}`);
  const cfg: ModelConfig = { model: model as ModelName, preset: preset as PresetName, ...PRESETS[preset as PresetName], likelihood: 'gaussian', dropout: 0, seed: 0, ...overrides };
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) throw new Error(`dropout must be in [0, 1), got ${cfg.dropout}`);
  if (cfg.likelihood !== 'gaussian' && cfg.likelihood !== 'bernoulli') throw new Error(`likelihood must be 'gaussian' or 'bernoulli', got '${cfg.likelihood}'`);
  for (const k of ['channels', 'hidden', 'latent'] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) throw new Error(`${k} must be a positive integer, got ${cfg[k]}`);
  }
  return cfg;
}

/**
 * Rows (class hypotheses x samples x images) one pass of `logits` may hold: the largest activation per row, the
 * decoder's C x 14 x 14 feature map (or the 28 x 28 image), must fit the adapter's maxStorageBufferBindingSize.
 */
export function maxRowsPerPass(channels: number): number {
  const floatsPerRow = Math.max(784, channels * 196);
  return Math.max(1, Math.floor(runtime().limits.maxStorageBufferBindingSize / (4 * floatsPerRow)));
}

/**
 * How `logits` splits N images x K samples x 10 classes into passes of at most `maxRows` rows: all images per
 * pass when they fit, else as many as fit; then as many classes as fit beside them.
 */
export function passPlan(n: number, k: number, maxRows: number): { imagesPerPass: number; classesPerPass: number } {
  const imagesPerPass = Math.min(n, Math.floor(maxRows / k));
  return { imagesPerPass, classesPerPass: Math.max(1, Math.min(NUM_CLASSES, Math.floor(maxRows / (k * imagesPerPass)))) };
}

/**
 * The images of a batch are rows `indices` of a larger batch of `of` images (an attack's still-active subset).
 * The indices may be an i32 [m] tensor (so a compiled function takes them as an input); their values are then
 * the caller's to keep distinct and in range.
 */
export interface BatchRows {
  indices: number[] | Tensor;
  of: number;
}

/**
 * The noise [draws, 1, m, z] the selected rows would get in the full batch of `rows.of` images, so an image keeps
 * its z draws however the batch around it shrinks (fixed-noise attacks query subsets).
 */
function noiseForRows(rows: BatchRows, m: number, draws: number, z: number, seed: number): Tensor {
  const { indices } = rows;
  if (indices instanceof Tensor) {
    if (indices.dtype !== 'i32' || indices.rank !== 1 || indices.shape[0] !== m) throw new Error(`logits: rows must be i32 [${m}] indices, got ${indices.dtype} ${fmt(indices.shape)}`);
  } else if (indices.length !== m || indices.some((i) => !Number.isInteger(i) || i < 0 || i >= rows.of)) {
    throw new Error(`logits: rows must be ${m} distinct indices into a batch of ${rows.of}`);
  }
  const full = transpose(randomNormal([draws, rows.of, z], seed), [1, 0, 2]);
  const picked = gather(full, indices instanceof Tensor ? indices : tensor(indices, [m], 'i32'));
  return reshape(transpose(picked, [1, 0, 2]), [draws, 1, m, z]);
}

/** Repeats each row block R times: [N, ...] -> [R*N, ...] with row r*N + n = input row n. */
export function tileRows(t: Tensor, r: number): Tensor {
  if (r === 1) return t;
  const [n, ...rest] = t.shape;
  return reshape(broadcastTo(reshape(t, [1, n, ...rest]), [r, n, ...rest]), [r * n, ...rest]);
}

function splitGaussian(out: Tensor): { mu: Tensor; logSig: Tensor } {
  const z = out.shape[1] / 2;
  return { mu: slice(out, [0, 0], [out.shape[0], z]), logSig: slice(out, [0, z], [out.shape[0], z]) };
}

/** Everything a factorisation's log p(x, y, z) may need, for R draws per image (rows r*N + n). */
export interface JointInputs {
  /** Images [N, 784] (broadcast over draws by the image likelihood). */
  x: Tensor;
  /** One-hot labels [R*N, 10]. */
  y: Tensor;
  /** Latent samples [R*N, Z]. */
  z: Tensor;
  /** Per-image features of x-conditioned networks, tiled to [R*N, H]. */
  features: Record<string, Tensor>;
}

export interface EvalOptions {
  /** Seed of the reparameterisation noise (and dropout); the same seed reproduces the same z draws. */
  seed: number;
  training?: boolean;
  /** Standard-normal noise [rows, Z] to use instead of drawing it from the seed. */
  noise?: Tensor;
  /**
   * Weight beta of the bound's latent term log p(z|.) - log q(z|x,y) (a KL warm-up while training); 1, the default,
   * is the bound itself. A tensor [1] holding beta lets a compiled training step take it anew every step.
   */
  klWeight?: number | Tensor;
}

export abstract class LatentVariableClassifier {
  abstract readonly factorisation: string;
  readonly params: ParameterSet;
  protected readonly encoderFeatures: ConvFeatures;
  protected readonly encoderHead: Mlp;

  constructor(readonly config: ModelConfig) {
    const specs = new SpecList(new Rng(config.seed));
    const { channels: C, hidden: H, latent: Z } = config;
    // q(z|x,y): conv features of x, concat one-hot y, dense H + ReLU, dense 2Z -> (mu, log sigma).
    this.encoderFeatures = ConvFeatures.declare(specs, 'encoder', C, H);
    this.encoderHead = Mlp.declare(specs, 'encoder.head', [H + NUM_CLASSES, H, 2 * Z]);
    // Subclass networks are `declare`d fields, so assigning them here survives field initialisation.
    this.declareNetworks(specs);
    this.params = new ParameterSet(specs.specs);
  }

  private readonly compiledFunctions = new Map<string, CompiledFunction>();

  /**
   * The compiled function this model keeps under `key` (made by `build` on first use): training steps,
   * evaluation and attack gradients are traced once per shape and replayed (src/autograd/compile.ts).
   */
  compiled(key: string, build: () => TracedFunction, maxTraces = 4): CompiledFunction {
    let f = this.compiledFunctions.get(key);
    if (!f) this.compiledFunctions.set(key, (f = compile(build(), { name: `${this.config.model} ${key}`, maxTraces })));
    return f;
  }

  /** Frees the compiled functions (their arenas) and the parameters. */
  dispose(): void {
    for (const f of this.compiledFunctions.values()) f.dispose();
    this.compiledFunctions.clear();
    this.params.dispose();
  }

  /** Declares the factorisation's own networks. */
  protected abstract declareNetworks(specs: SpecList): void;

  /** log p(x, y, z) per row. */
  protected abstract logJoint(inputs: JointInputs): Tensor;

  /** The latent factor's log-density log p(z | its parents) per row, the part of log p(x, y, z) a KL warm-up weighs. */
  protected abstract logLatent(inputs: JointInputs): Tensor;

  /** Per-image features of x-conditioned factors (computed once per image, then tiled over draws). */
  protected features(_x: Tensor, _training: boolean, _seed: number): Record<string, Tensor> {
    return {};
  }

  protected convFeatures(net: ConvFeatures, x: Tensor, training: boolean, seed: number): Tensor {
    return dropout(net.apply(this.params, x), this.config.dropout, seed, training);
  }

  /**
   * log p(x, y, z) - log q(z|x, y) for R = y.shape[0] / N label draws per image, z ~ q(z|x, y).
   * x: [N, 1, 28, 28] in [0, 1]; y: one-hot [R*N, 10] with rows r*N + n.
   */
  logWeights(x: Tensor, y: Tensor, opts: EvalOptions): Tensor {
    const n = x.shape[0];
    const r = y.shape[0] / n;
    const training = opts.training ?? false;
    const seeds = new Rng(opts.seed);
    const q = splitGaussian(this.encoderHead.apply(this.params, concat([tileRows(this.convFeatures(this.encoderFeatures, x, training, seeds.nextSeed()), r), y], 1)));
    const noiseSeed = seeds.nextSeed();
    const eps = opts.noise ?? randomNormal(q.mu.shape, noiseSeed);
    const z = add(q.mu, mul(exp(q.logSig), eps));
    const perImage = this.features(x, training, seeds.nextSeed());
    const features = Object.fromEntries(Object.entries(perImage).map(([k, t]) => [k, tileRows(t, r)]));
    const inputs = { x: reshape(x, [n, 784]), y, z, features };
    const logQ = logGaussian(z, q.mu, q.logSig);
    const w = sub(this.logJoint(inputs), logQ);
    const beta = opts.klWeight ?? 1;
    if (beta instanceof Tensor) {
      if (beta.size !== 1 || beta.dtype !== 'f32') throw new Error(`klWeight must be a number or an f32 tensor of one element, got ${beta.dtype} ${fmt(beta.shape)}`);
      return sub(w, mul(sub(this.logLatent(inputs), logQ), addScalar(scale(reshape(beta, [1]), -1), 1)));
    }
    if (beta === 1) return w;
    if (!(beta >= 0 && beta <= 1)) throw new Error(`klWeight must lie in [0, 1], got ${beta}`);
    return sub(w, scale(sub(this.logLatent(inputs), logQ), 1 - beta));
  }

  /** The ELBO of each (image, label) pair with one z sample: [N]. */
  elbo(x: Tensor, labels: Tensor, opts: EvalOptions): Tensor {
    return this.logWeights(x, oneHot(labels, NUM_CLASSES), opts);
  }

  /**
   * The training loss, -mean ELBO over the batch: []. The sign is taken inside the mean, where it joins the
   * reduction's prologue instead of costing a pass of its own.
   */
  negElbo(x: Tensor, labels: Tensor, opts: EvalOptions): Tensor {
    return mean(neg(this.elbo(x, labels, opts)));
  }

  /**
   * Bayes' rule logits: log p(x, y=c) ~ logsumexp_k [log p(x, c, z_k) - log q(z_k|x, c)] - log K, with K samples
   * per class; all classes and samples go through the networks as one batch unless that would exceed `maxRows`
   * (default: what the adapter binds, `maxRowsPerPass`): then passes take fewer classes, or fewer images. [N, 10].
   * The K standard-normal draws eps_k of an image are shared by its ten class hypotheses (z_k = mu_c + sigma_c eps_k):
   * each class's estimate is distributed as before, but Bayes' rule compares classes, and common random numbers
   * make the estimates' errors move together, so fewer images are misclassified by sampling noise alone.
   * `estimator: 'independent'` draws K for every class instead (the reference's estimator).
   */
  logits(x: Tensor, opts: EvalOptions & { samples?: number; maxRows?: number; replicas?: number; rows?: BatchRows; estimator?: Estimator }): Tensor {
    const k = opts.samples ?? 10;
    if (!Number.isInteger(k) || k < 1) throw new Error(`samples (K) must be a positive integer, got ${k}`);
    const n = x.shape[0];
    const replicas = opts.replicas ?? 1;
    if (!Number.isInteger(replicas) || replicas < 1 || n % replicas !== 0) throw new Error(`replicas must divide the batch of ${n}, got ${replicas}`);
    const maxRows = opts.maxRows ?? maxRowsPerPass(this.config.channels);
    if (!Number.isInteger(maxRows) || maxRows < k) throw new Error(`maxRows must be an integer of at least K = ${k}, got ${maxRows}`);
    const { imagesPerPass, classesPerPass } = passPlan(n, k, maxRows);
    // K draws per image, broadcast over the classes (and over `replicas` copies of the same images, DeepFool's
    // per-class gradients), drawn once so passes never change the result. Laid out (class, sample, image, z).
    const perCopy = n / replicas;
    const z = this.config.latent;
    const estimator = opts.estimator ?? 'shared';
    if (!ESTIMATORS.includes(estimator)) throw new Error(`logits: estimator must be one of ${ESTIMATORS.join(', ')}, got '${estimator}'`);
    const perClass = estimator === 'independent' ? NUM_CLASSES : 1;
    const drawn = opts.rows ? noiseForRows(opts.rows, perCopy, perClass * k, z, opts.seed) : randomNormal([perClass * k, 1, perCopy, z], opts.seed);
    const noise = reshape(broadcastTo(reshape(drawn, [perClass, k, 1, perCopy * z]), [NUM_CLASSES, k, replicas, perCopy * z]), [NUM_CLASSES, k, n, z]);
    const imageBlocks: Tensor[] = [];
    for (let i0 = 0; i0 < n; i0 += imagesPerPass) {
      const images = Math.min(imagesPerPass, n - i0);
      const xBlock = images === n ? x : slice(x, [i0, ...x.shape.slice(1).map(() => 0)], [images, ...x.shape.slice(1)]);
      const classBlocks: Tensor[] = [];
      for (let c0 = 0; c0 < NUM_CLASSES; c0 += classesPerPass) {
        const classes = Math.min(classesPerPass, NUM_CLASSES - c0);
        const rows = classes * k * images;
        const labels = Array.from({ length: rows }, (_, row) => c0 + Math.floor(row / (k * images)));
        const y = oneHot(tensor(labels, [rows], 'i32'), NUM_CLASSES);
        const passNoise = classes === NUM_CLASSES && images === n ? noise : slice(noise, [c0, 0, i0, 0], [classes, k, images, z]);
        const w = reshape(this.logWeights(xBlock, y, { seed: opts.seed, noise: reshape(passNoise, [rows, z]) }), [classes, k, images]);
        classBlocks.push(logsumexp(w, 1));
      }
      imageBlocks.push(classBlocks.length === 1 ? classBlocks[0] : concat(classBlocks, 0));
    }
    const logJointPerClass = imageBlocks.length === 1 ? imageBlocks[0] : concat(imageBlocks, 1);
    return transpose(addScalar(logJointPerClass, -Math.log(k)));
  }
}

// ---------------------------------------------------------------------------------------------------------
// The factorisations. "p_D(x)" marks the discriminative ones, whose p(x) is the data distribution (no term).

/** GFZ: p(z) p(y|z) p(x|y,z). */
export class GFZ extends LatentVariableClassifier {
  readonly factorisation = MODEL_STRUCTURE.gfz.factorisation;
  declare private pYgivenZ: Mlp;
  declare private pXgivenYZ: ImageDecoder;
  protected declareNetworks(s: SpecList): void {
    const { channels: C, hidden: H, latent: Z } = this.config;
    this.pYgivenZ = Mlp.declare(s, 'p_y_z', [Z, H, NUM_CLASSES]);
    this.pXgivenYZ = ImageDecoder.declare(s, 'p_x_yz', Z + NUM_CLASSES, C, H);
  }
  protected logLatent({ z }: JointInputs): Tensor {
    return logStandardNormal(z);
  }
  protected logJoint(inputs: JointInputs): Tensor {
    const { x, y, z } = inputs;
    const p = this.params;
    const logPz = this.logLatent(inputs);
    const logPyGivenZ = logCategorical(y, this.pYgivenZ.apply(p, z));
    const logPxGivenYZ = logImageLikelihood(x, this.pXgivenYZ.apply(p, concat([z, y], 1)), this.config.likelihood);
    return add(add(logPz, logPyGivenZ), logPxGivenYZ);
  }
}

/** DFZ: p(z) p(x|z) p(y|x,z). */
export class DFZ extends LatentVariableClassifier {
  readonly factorisation = MODEL_STRUCTURE.dfz.factorisation;
  declare private pXgivenZ: ImageDecoder;
  declare private pYgivenXZ: { features: ConvFeatures; head: Mlp };
  protected declareNetworks(s: SpecList): void {
    const { channels: C, hidden: H, latent: Z } = this.config;
    this.pXgivenZ = ImageDecoder.declare(s, 'p_x_z', Z, C, H);
    this.pYgivenXZ = { features: ConvFeatures.declare(s, 'p_y_xz', C, H), head: Mlp.declare(s, 'p_y_xz.head', [H + Z, H, NUM_CLASSES]) };
  }
  protected override features(x: Tensor, training: boolean, seed: number) {
    return { y: this.convFeatures(this.pYgivenXZ.features, x, training, seed) };
  }
  protected logLatent({ z }: JointInputs): Tensor {
    return logStandardNormal(z);
  }
  protected logJoint(inputs: JointInputs): Tensor {
    const { x, y, z, features } = inputs;
    const p = this.params;
    const logPz = this.logLatent(inputs);
    const logPxGivenZ = logImageLikelihood(x, this.pXgivenZ.apply(p, z), this.config.likelihood);
    const logPyGivenXZ = logCategorical(y, this.pYgivenXZ.head.apply(p, concat([features.y, z], 1)));
    return add(add(logPz, logPxGivenZ), logPyGivenXZ);
  }
}

/** Shared by DFX and DBX: p(z|x) as a Gaussian from the conv stack. */
function declareZgivenX(s: SpecList, cfg: ModelConfig) {
  return { features: ConvFeatures.declare(s, 'p_z_x', cfg.channels, cfg.hidden), head: Mlp.declare(s, 'p_z_x.head', [cfg.hidden, cfg.hidden, 2 * cfg.latent]) };
}

/** DFX: p_D(x) p(z|x) p(y|x,z). */
export class DFX extends LatentVariableClassifier {
  readonly factorisation = MODEL_STRUCTURE.dfx.factorisation;
  declare private pZgivenX: { features: ConvFeatures; head: Mlp };
  declare private pYgivenXZ: { features: ConvFeatures; head: Mlp };
  protected declareNetworks(s: SpecList): void {
    const { channels: C, hidden: H, latent: Z } = this.config;
    this.pZgivenX = declareZgivenX(s, this.config);
    this.pYgivenXZ = { features: ConvFeatures.declare(s, 'p_y_xz', C, H), head: Mlp.declare(s, 'p_y_xz.head', [H + Z, H, NUM_CLASSES]) };
  }
  protected override features(x: Tensor, training: boolean, seed: number) {
    const seeds = new Rng(seed);
    return {
      z: this.pZgivenX.head.apply(this.params, this.convFeatures(this.pZgivenX.features, x, training, seeds.nextSeed())),
      y: this.convFeatures(this.pYgivenXZ.features, x, training, seeds.nextSeed()),
    };
  }
  protected logLatent({ z, features }: JointInputs): Tensor {
    const pz = splitGaussian(features.z);
    return logGaussian(z, pz.mu, pz.logSig);
  }
  protected logJoint(inputs: JointInputs): Tensor {
    const { y, z, features } = inputs;
    const logPzGivenX = this.logLatent(inputs);
    const logPyGivenXZ = logCategorical(y, this.pYgivenXZ.head.apply(this.params, concat([features.y, z], 1)));
    return add(logPzGivenX, logPyGivenXZ);
  }
}

/** DBX: p_D(x) p(z|x) p(y|z). */
export class DBX extends LatentVariableClassifier {
  readonly factorisation = MODEL_STRUCTURE.dbx.factorisation;
  declare private pZgivenX: { features: ConvFeatures; head: Mlp };
  declare private pYgivenZ: Mlp;
  protected declareNetworks(s: SpecList): void {
    this.pZgivenX = declareZgivenX(s, this.config);
    this.pYgivenZ = Mlp.declare(s, 'p_y_z', [this.config.latent, this.config.hidden, NUM_CLASSES]);
  }
  protected override features(x: Tensor, training: boolean, seed: number) {
    return { z: this.pZgivenX.head.apply(this.params, this.convFeatures(this.pZgivenX.features, x, training, seed)) };
  }
  protected logLatent({ z, features }: JointInputs): Tensor {
    const pz = splitGaussian(features.z);
    return logGaussian(z, pz.mu, pz.logSig);
  }
  protected logJoint(inputs: JointInputs): Tensor {
    return add(this.logLatent(inputs), logCategorical(inputs.y, this.pYgivenZ.apply(this.params, inputs.z)));
  }
}

/** GFY: p(y) p(z|y) p(x|y,z), with p(y) uniform. */
export class GFY extends LatentVariableClassifier {
  readonly factorisation = MODEL_STRUCTURE.gfy.factorisation;
  declare private pZgivenY: Mlp;
  declare private pXgivenYZ: ImageDecoder;
  protected declareNetworks(s: SpecList): void {
    const { channels: C, hidden: H, latent: Z } = this.config;
    this.pZgivenY = Mlp.declare(s, 'p_z_y', [NUM_CLASSES, H, 2 * Z]);
    this.pXgivenYZ = ImageDecoder.declare(s, 'p_x_yz', Z + NUM_CLASSES, C, H);
  }
  protected logLatent({ y, z }: JointInputs): Tensor {
    const pz = splitGaussian(this.pZgivenY.apply(this.params, y));
    return logGaussian(z, pz.mu, pz.logSig);
  }
  protected logJoint(inputs: JointInputs): Tensor {
    const { x, y, z } = inputs;
    const logPzGivenY = addScalar(this.logLatent(inputs), LOG_UNIFORM_PRIOR_Y);
    return add(logPzGivenY, logImageLikelihood(x, this.pXgivenYZ.apply(this.params, concat([z, y], 1)), this.config.likelihood));
  }
}

/** GBZ: p(z) p(y|z) p(x|z). */
export class GBZ extends LatentVariableClassifier {
  readonly factorisation = MODEL_STRUCTURE.gbz.factorisation;
  declare private pYgivenZ: Mlp;
  declare private pXgivenZ: ImageDecoder;
  protected declareNetworks(s: SpecList): void {
    const { channels: C, hidden: H, latent: Z } = this.config;
    // The reference gives GBZ's p(y|z) two hidden layers.
    this.pYgivenZ = Mlp.declare(s, 'p_y_z', [Z, H, H, NUM_CLASSES]);
    this.pXgivenZ = ImageDecoder.declare(s, 'p_x_z', Z, C, H);
  }
  protected logLatent({ z }: JointInputs): Tensor {
    return logStandardNormal(z);
  }
  protected logJoint(inputs: JointInputs): Tensor {
    const { x, y, z } = inputs;
    const p = this.params;
    const logPz = this.logLatent(inputs);
    return add(add(logPz, logCategorical(y, this.pYgivenZ.apply(p, z))), logImageLikelihood(x, this.pXgivenZ.apply(p, z), this.config.likelihood));
  }
}

/** GBY: p(y) p(z|y) p(x|z), with p(y) uniform. */
export class GBY extends LatentVariableClassifier {
  readonly factorisation = MODEL_STRUCTURE.gby.factorisation;
  declare private pZgivenY: Mlp;
  declare private pXgivenZ: ImageDecoder;
  protected declareNetworks(s: SpecList): void {
    const { channels: C, hidden: H, latent: Z } = this.config;
    this.pZgivenY = Mlp.declare(s, 'p_z_y', [NUM_CLASSES, H, 2 * Z]);
    this.pXgivenZ = ImageDecoder.declare(s, 'p_x_z', Z, C, H);
  }
  protected logLatent({ y, z }: JointInputs): Tensor {
    const pz = splitGaussian(this.pZgivenY.apply(this.params, y));
    return logGaussian(z, pz.mu, pz.logSig);
  }
  protected logJoint(inputs: JointInputs): Tensor {
    const { x, z } = inputs;
    const logPzGivenY = addScalar(this.logLatent(inputs), LOG_UNIFORM_PRIOR_Y);
    return add(logPzGivenY, logImageLikelihood(x, this.pXgivenZ.apply(this.params, z), this.config.likelihood));
  }
}

const CLASSES: Record<ModelName, new (cfg: ModelConfig) => LatentVariableClassifier> = { gfz: GFZ, dfz: DFZ, dfx: DFX, dbx: DBX, gfy: GFY, gbz: GBZ, gby: GBY };

export function createModel(cfg: ModelConfig): LatentVariableClassifier {
  return new CLASSES[cfg.model](cfg);
}
