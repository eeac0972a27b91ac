// A speed peer: the GFZ and DFZ classifiers of src/models/factorisations.ts written in TensorFlow.js (tfjs-core
// ops), to time against this engine on the same Dawn adapter. Same networks, layer sizes and activations, same
// ELBO (one reparameterised sample, log-normal densities with their constants, Gaussian image log-likelihood
// -sum (x - mu)^2), and the same Bayes-rule logits (K samples per class, rows ordered (class, sample, image),
// logsumexp over samples minus log K). Randomly initialised; importOurWeights copies one of our models in, with
// which the peer's log-weights and gradients match ours to float rounding (bench:train checks this first).
//
// Layouts are TensorFlow's: images NHWC [N, 28, 28, 1] (the same bytes as NCHW [N, 1, 28, 28]), dense weights
// [in, out], conv filters [kh, kw, in, out], transposed-conv filters [kh, kw, out, in]. Convs and dense layers
// use tf.fused ops (bias + ReLU folded in when no gradient is being recorded, as tfjs-layers does).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { create, globals } from 'webgpu';

export type PeerModelName = 'gfz' | 'dfz';
export interface PeerConfig {
  model: PeerModelName;
  channels: number;
  hidden: number;
  latent: number;
  seed?: number;
}

export const NUM_CLASSES = 10;
const HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);

// ---------------------------------------------------------------- loading the WebGPU backend

export interface TfjsWebgpu {
  tf: typeof tf;
  /** The adapter the tfjs device runs on: vendor / architecture / device / description [dawn backend, feature level]. */
  adapter: string;
}

/**
 * Registers and selects TensorFlow.js's WebGPU backend on a Dawn instance with our runtime's backend: the OpenGL
 * path needs the compatibility feature level, which tfjs does not ask for, so requestAdapter is wrapped.
 * `navigator.gpu` must exist before @tensorflow/tfjs-backend-webgpu is imported (it registers itself only then).
 */
export async function loadTfjsWebgpu(backend: 'native' | 'opengl'): Promise<TfjsWebgpu> {
  for (const [k, v] of Object.entries(globals as Record<string, unknown>)) if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  const gpu = create(backend === 'opengl' ? ['backend=opengl'] : []);
  if (backend === 'opengl') {
    const requestAdapter = gpu.requestAdapter.bind(gpu);
    (gpu as { requestAdapter: GPU['requestAdapter'] }).requestAdapter = (o?: GPURequestAdapterOptions) =>
      requestAdapter({ ...(o ?? {}), featureLevel: 'compatibility' } as GPURequestAdapterOptions);
  }
  const prevNav = (globalThis as { navigator?: { userAgent?: string } }).navigator;
  Object.defineProperty(globalThis, 'navigator', { value: { userAgent: prevNav?.userAgent ?? `Node.js/${process.version}`, gpu }, configurable: true, writable: true });
  const probe = await gpu.requestAdapter({ powerPreference: 'high-performance' }).catch(() => null);
  if (!probe) throw new Error(`no WebGPU adapter for tfjs (dawn ${backend})`);
  const i = probe.info;
  const adapter = `${[i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' / ')} [dawn ${backend}, ${backend === 'opengl' ? 'compatibility' : 'core'}]`;
  await import('@tensorflow/tfjs-backend-webgpu');
  await registerGradients();
  tf.enableProdMode(); // no per-op debug checks
  if (!(await tf.setBackend('webgpu').catch(() => false))) throw new Error('tfjs webgpu backend failed to initialise');
  await tf.ready();
  return { tf, adapter };
}

/**
 * tfjs-core's Node build registers no kernel gradients (the @tensorflow/tfjs union package does, importing
 * tfjs-core/dist/register_all_gradients.js, and it is not a dependency here); that ESM file cannot be imported
 * by Node directly (extensionless imports). So it is bundled with esbuild (tsx's own dependency) into a temporary
 * module and imported once. The bundle carries a second copy of the ops it uses; tfjs keeps its engine and
 * kernel/gradient registries global precisely so that copies share them.
 */
async function registerGradients(): Promise<void> {
  if (tf.getGradient('Neg')) return;
  const { build } = await import('esbuild');
  const entry = createRequire(import.meta.url).resolve('@tensorflow/tfjs-core/dist/register_all_gradients.js');
  const out = await build({ entryPoints: [entry], bundle: true, format: 'esm', platform: 'node', write: false, logLevel: 'error' });
  const dir = mkdtempSync(join(tmpdir(), 'tfjs-gradients-'));
  try {
    const file = join(dir, 'register_all_gradients.mjs');
    writeFileSync(file, out.outputFiles[0].text);
    await import(pathToFileURL(file).href);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (!tf.getGradient('Neg')) throw new Error('tfjs gradients did not register');
}

// ---------------------------------------------------------------- parameters and layers

let modelCount = 0;

/** Seeded initialisers (tfjs draws them on the host; done once). */
class Params {
  private readonly prefix = `peer${modelCount++}`;
  readonly variables: tf.Variable[] = [];
  private seed: number;
  constructor(seed: number) {
    this.seed = seed * 1000 + 1;
  }
  private add(name: string, init: tf.Tensor): tf.Variable {
    const v = tf.variable(init, true, `${this.prefix}_${name}`);
    init.dispose();
    this.variables.push(v);
    return v;
  }
  uniform(name: string, shape: number[], bound: number): tf.Variable {
    return this.add(name, tf.randomUniform(shape, -bound, bound, 'float32', this.seed++));
  }
  truncatedNormal(name: string, shape: number[], std: number): tf.Variable {
    return this.add(name, tf.truncatedNormal(shape, 0, std, 'float32', this.seed++));
  }
  zeros(name: string, shape: number[]): tf.Variable {
    return this.add(name, tf.zeros(shape));
  }
}

type Act = 'linear' | 'relu';

class Dense {
  readonly w: tf.Variable;
  readonly b: tf.Variable;
  constructor(p: Params, name: string, inDim: number, outDim: number, readonly activation: Act) {
    this.w = p.uniform(`${name}_w`, [inDim, outDim], Math.sqrt(6 / (inDim + outDim))); // Glorot uniform
    this.b = p.zeros(`${name}_b`, [outDim]);
  }
  apply(x: tf.Tensor2D): tf.Tensor2D {
    return tf.fused.matMul({ a: x, b: this.w as tf.Tensor2D, bias: this.b, activation: this.activation }) as tf.Tensor2D;
  }
}

/** sizes [in, h1, ..., out]: ReLU between layers, `last` on the output. */
class Mlp {
  readonly layers: Dense[];
  constructor(p: Params, name: string, sizes: number[], last: Act = 'linear') {
    this.layers = sizes.slice(1).map((out, i) => new Dense(p, `${name}_${i}`, sizes[i], out, i === sizes.length - 2 ? last : 'relu'));
  }
  apply(x: tf.Tensor2D): tf.Tensor2D {
    return this.layers.reduce((h, l) => l.apply(h), x);
  }
}

/** 3 x [conv 5x5, C channels, stride 2, padding 2, ReLU] (28 -> 14 -> 7 -> 4), flatten, dense H + ReLU. */
class ConvFeatures {
  readonly convs: { f: tf.Variable; b: tf.Variable }[];
  readonly dense: Dense;
  constructor(p: Params, name: string, channels: number, hidden: number) {
    this.convs = [0, 1, 2].map((i) => {
      const cin = i === 0 ? 1 : channels;
      const std = Math.sqrt(2 / (cin * 25 + channels * 25)); // Glorot normal, truncated at 2 std
      return { f: p.truncatedNormal(`${name}_conv${i}_f`, [5, 5, cin, channels], std), b: p.zeros(`${name}_conv${i}_b`, [channels]) };
    });
    this.dense = new Dense(p, `${name}_fc`, channels * 16, hidden, 'relu');
  }
  apply(x: tf.Tensor4D): tf.Tensor2D {
    let h = x;
    for (const c of this.convs) h = tf.fused.conv2d({ x: h, filter: c.f as tf.Tensor4D, strides: 2, pad: 2, bias: c.b, activation: 'relu' });
    return this.dense.apply(tf.reshape(h, [h.shape[0], -1]));
  }
}

/**
 * Dense H + ReLU, dense 16C + ReLU, reshape 4 x 4 x C, transposed convs 5x5 stride 2 (4 -> 7 -> 14 -> 28;
 * channels C, C, 1; no bias) with ReLU, ReLU, sigmoid. Output padding is expressed through the output shape.
 * Returns the mean image [N, 784].
 */
class ImageDecoder {
  readonly mlp: Mlp;
  readonly deconvs: tf.Variable[];
  constructor(p: Params, name: string, inDim: number, readonly channels: number, hidden: number) {
    this.mlp = new Mlp(p, `${name}_fc`, [inDim, hidden, channels * 16], 'relu');
    this.deconvs = [channels, channels, 1].map((out, i) => p.uniform(`${name}_deconv${i}`, [5, 5, out, channels], 1 / (25 * out)));
  }
  apply(input: tf.Tensor2D): tf.Tensor2D {
    const n = input.shape[0];
    const c = this.channels;
    let h = tf.reshape(this.mlp.apply(input), [n, 4, 4, c]) as tf.Tensor4D;
    const sizes = [7, 14, 28];
    const outChannels = [c, c, 1];
    this.deconvs.forEach((f, i) => {
      const y = tf.conv2dTranspose(h, f as tf.Tensor4D, [n, sizes[i], sizes[i], outChannels[i]], 2, 2);
      h = i < 2 ? tf.relu(y) : tf.sigmoid(y);
    });
    return tf.reshape(h, [n, 784]);
  }
}

// ---------------------------------------------------------------- densities

/** log N(z; mu, exp(logSig)^2), constants included, summed over the last axis. */
function logGaussian(z: tf.Tensor, mu: tf.Tensor, logSig: tf.Tensor): tf.Tensor {
  const standardised = tf.mul(tf.sub(z, mu), tf.exp(tf.neg(logSig)));
  return tf.neg(tf.sum(tf.add(tf.add(logSig, HALF_LOG_2PI), tf.mul(tf.square(standardised), 0.5)), -1));
}

function logStandardNormal(z: tf.Tensor): tf.Tensor {
  return tf.neg(tf.sum(tf.add(tf.mul(tf.square(z), 0.5), HALF_LOG_2PI), -1));
}

function logCategorical(yOneHot: tf.Tensor, logits: tf.Tensor): tf.Tensor {
  return tf.sum(tf.mul(yOneHot, tf.logSoftmax(logits)), -1);
}

/** -sum (x - mu)^2 of images x [N, 784] against means [R*N, 784] (x broadcast over the R draws): [R*N]. */
function logImageLikelihood(x: tf.Tensor2D, mean: tf.Tensor2D): tf.Tensor {
  const [n, d] = x.shape;
  const m = tf.reshape(mean, [mean.shape[0] / n, n, d]);
  return tf.reshape(tf.neg(tf.sum(tf.square(tf.sub(m, x)), -1)), [mean.shape[0]]);
}

/** Repeats the row block R times: row r*N + n = input row n. */
const tileRows = (t: tf.Tensor2D, r: number): tf.Tensor2D => (r === 1 ? t : tf.tile(t, [r, 1]));

function splitGaussian(out: tf.Tensor2D): { mu: tf.Tensor2D; logSig: tf.Tensor2D } {
  const z = out.shape[1] / 2;
  const [mu, logSig] = tf.split(out, [z, z], 1) as [tf.Tensor2D, tf.Tensor2D];
  return { mu, logSig };
}

// ---------------------------------------------------------------- the classifiers

export interface PeerLogitsOptions {
  samples?: number;
  seed: number;
  /** The batch is `replicas` copies of the same images: the copies share noise draws (as ours). */
  replicas?: number;
  /** Rows per pass through the networks; classes are chunked beyond it (as ours). */
  maxRows?: number;
  /** Standard-normal draws of the given shape (default tf.randomNormal with the seed); lets a check share our draws. */
  drawNoise?: (shape: number[], seed: number) => tf.Tensor;
}

export class PeerClassifier {
  readonly params: Params;
  readonly encoderFeatures: ConvFeatures;
  readonly encoderHead: Mlp;
  // GFZ: p(z) p(y|z) p(x|y,z).
  private pYgivenZ?: Mlp;
  private pXgivenYZ?: ImageDecoder;
  // DFZ: p(z) p(x|z) p(y|x,z).
  private pXgivenZ?: ImageDecoder;
  private pYgivenXZ?: { features: ConvFeatures; head: Mlp };

  constructor(readonly config: PeerConfig) {
    const { channels: C, hidden: H, latent: Z } = config;
    const p = (this.params = new Params(config.seed ?? 0));
    // q(z|x,y): conv features of x, concat one-hot y, dense H + ReLU, dense 2Z -> (mu, log sigma).
    this.encoderFeatures = new ConvFeatures(p, 'encoder', C, H);
    this.encoderHead = new Mlp(p, 'encoder_head', [H + NUM_CLASSES, H, 2 * Z]);
    if (config.model === 'gfz') {
      this.pYgivenZ = new Mlp(p, 'p_y_z', [Z, H, NUM_CLASSES]);
      this.pXgivenYZ = new ImageDecoder(p, 'p_x_yz', Z + NUM_CLASSES, C, H);
    } else {
      this.pXgivenZ = new ImageDecoder(p, 'p_x_z', Z, C, H);
      this.pYgivenXZ = { features: new ConvFeatures(p, 'p_y_xz', C, H), head: new Mlp(p, 'p_y_xz_head', [H + Z, H, NUM_CLASSES]) };
    }
  }

  get variables(): tf.Variable[] {
    return this.params.variables;
  }

  get numel(): number {
    return this.variables.reduce((s, v) => s + v.size, 0);
  }

  dispose(): void {
    for (const v of this.variables) v.dispose();
  }

  /** log p(x, y, z) per row; x [N, 784], y and z [R*N, .], `features` per image (x-conditioned factors). */
  private logJoint(x: tf.Tensor2D, y: tf.Tensor2D, z: tf.Tensor2D, features: tf.Tensor2D | null): tf.Tensor {
    const logPz = logStandardNormal(z);
    if (this.config.model === 'gfz') {
      const logPyGivenZ = logCategorical(y, this.pYgivenZ!.apply(z));
      const logPxGivenYZ = logImageLikelihood(x, this.pXgivenYZ!.apply(tf.concat([z, y], 1)));
      return tf.add(tf.add(logPz, logPyGivenZ), logPxGivenYZ);
    }
    const logPxGivenZ = logImageLikelihood(x, this.pXgivenZ!.apply(z));
    const logPyGivenXZ = logCategorical(y, this.pYgivenXZ!.head.apply(tf.concat([features!, z], 1)));
    return tf.add(tf.add(logPz, logPxGivenZ), logPyGivenXZ);
  }

  /**
   * log p(x, y, z) - log q(z|x, y) for R = y.shape[0] / N label draws per image, z ~ q(z|x, y) reparameterised.
   * x: [N, 28, 28, 1]; y: one-hot [R*N, 10], rows r*N + n; noise: standard normals [R*N, Z] (else drawn).
   */
  logWeights(x: tf.Tensor4D, y: tf.Tensor2D, seed: number, noise?: tf.Tensor2D): tf.Tensor1D {
    const n = x.shape[0];
    const r = y.shape[0] / n;
    const q = splitGaussian(this.encoderHead.apply(tf.concat([tileRows(this.encoderFeatures.apply(x), r), y], 1)));
    const eps = noise ?? tf.randomNormal(q.mu.shape, 0, 1, 'float32', seed);
    const z = tf.add(q.mu, tf.mul(tf.exp(q.logSig), eps)) as tf.Tensor2D;
    const features = this.pYgivenXZ ? tileRows(this.pYgivenXZ.features.apply(x), r) : null;
    const logP = this.logJoint(tf.reshape(x, [n, 784]) as tf.Tensor2D, y, z, features);
    return tf.sub(logP, logGaussian(z, q.mu, q.logSig)) as tf.Tensor1D;
  }

  /** The ELBO of each (image, label) pair with one z sample: [N]. */
  elbo(x: tf.Tensor4D, labels: tf.Tensor1D, seed: number): tf.Tensor1D {
    return this.logWeights(x, tf.cast(tf.oneHot(labels, NUM_CLASSES), 'float32') as tf.Tensor2D, seed);
  }

  /** One Adam step on the mean negative ELBO; returns the loss (the caller disposes it). */
  trainStep(optimizer: tf.Optimizer, x: tf.Tensor4D, labels: tf.Tensor1D, seed: number): tf.Scalar {
    return optimizer.minimize(() => tf.neg(tf.mean(this.elbo(x, labels, seed))) as tf.Scalar, true, this.variables)!;
  }

  /**
   * Bayes' rule logits [N, 10]: log p(x, y=c) ~ logsumexp_k [log p(x, c, z_k) - log q(z_k|x, c)] - log K, all
   * classes and samples of a chunk through the networks as one batch, rows (class, sample, image).
   */
  logits(x: tf.Tensor4D, opts: PeerLogitsOptions): tf.Tensor2D {
    const k = opts.samples ?? 10;
    const n = x.shape[0];
    const replicas = opts.replicas ?? 1;
    const maxRows = opts.maxRows ?? 10_000;
    const classesPerChunk = Math.max(1, Math.min(NUM_CLASSES, Math.floor(maxRows / (k * n))));
    const perCopy = n / replicas;
    const zDim = this.config.latent;
    // K draws per image, shared by the ten classes and by the copies of a replicated batch (as ours).
    const shape = [k, 1, perCopy, zDim];
    const drawn = opts.drawNoise ? opts.drawNoise(shape, opts.seed) : tf.randomNormal(shape, 0, 1, 'float32', opts.seed);
    const noise = tf.reshape(tf.broadcastTo(tf.reshape(drawn, [1, k, 1, perCopy * zDim]), [NUM_CLASSES, k, replicas, perCopy * zDim]), [NUM_CLASSES * k * n, zDim]) as tf.Tensor2D;
    const chunks: tf.Tensor2D[] = [];
    for (let c0 = 0; c0 < NUM_CLASSES; c0 += classesPerChunk) {
      const classes = Math.min(classesPerChunk, NUM_CLASSES - c0);
      const rows = classes * k * n;
      const labels = Int32Array.from({ length: rows }, (_, row) => c0 + Math.floor(row / (k * n)));
      const y = tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), NUM_CLASSES), 'float32') as tf.Tensor2D;
      const chunkNoise = classes === NUM_CLASSES ? noise : tf.slice(noise, [c0 * k * n, 0], [rows, zDim]);
      const w = tf.reshape(this.logWeights(x, y, opts.seed, chunkNoise), [classes, k, n]);
      chunks.push(tf.logSumExp(w, 1));
    }
    const perClass = chunks.length === 1 ? chunks[0] : tf.concat(chunks, 0);
    return tf.transpose(tf.sub(perClass, Math.log(k))) as tf.Tensor2D;
  }
}

export function createPeerModel(config: PeerConfig): PeerClassifier {
  return new PeerClassifier(config);
}

/**
 * Copies our model's weights into a peer of the same config, for checking the two compute the same thing. Ours
 * are in PyTorch layouts (Linear [out, in], Conv2d [out, in, kh, kw], ConvTranspose2d [in, out, kh, kw]) and
 * flatten / reshape feature maps channel-major (c*16 + s), the peer position-major (s*C + c): the dense layer
 * after a conv stack (`<net>.fc.weight`) and the decoder's last dense layer (`<net>.fc.1.*`) are permuted to
 * match. Both models declare their parameters in the same order, so slots pair up by position.
 */
export function importOurWeights(peer: PeerClassifier, slots: readonly { name: string; shape: readonly number[] }[], state: Record<string, Float32Array>): void {
  if (slots.length !== peer.variables.length) throw new Error(`importOurWeights: ${slots.length} parameters, the peer has ${peer.variables.length}`);
  const C = peer.config.channels;
  tf.tidy(() => {
    slots.forEach((slot, i) => {
      let t: tf.Tensor = tf.tensor(state[slot.name], [...slot.shape]);
      const [d0, d1] = slot.shape;
      if (/\.fc\.weight$/.test(slot.name)) {
        // [H, 16C] with inputs c*16 + s  ->  [16C, H] with inputs s*C + c
        t = tf.transpose(tf.reshape(tf.transpose(tf.reshape(t, [d0, C, 16]), [0, 2, 1]), [d0, 16 * C]));
      } else if (/\.fc\.1\.weight$/.test(slot.name)) {
        // [16C, H] with outputs c*16 + s  ->  [H, 16C] with outputs s*C + c
        t = tf.reshape(tf.transpose(tf.reshape(tf.transpose(t), [d1, C, 16]), [0, 2, 1]), [d1, 16 * C]);
      } else if (/\.fc\.1\.bias$/.test(slot.name)) {
        t = tf.reshape(tf.transpose(tf.reshape(t, [C, 16])), [16 * C]);
      } else if (slot.shape.length === 2) {
        t = tf.transpose(t);
      } else if (slot.shape.length === 4) {
        t = tf.transpose(t, [2, 3, 1, 0]); // [out, in, kh, kw] -> [kh, kw, in, out]; [in, out, kh, kw] -> [kh, kw, out, in]
      }
      const v = peer.variables[i];
      if (t.shape.join() !== v.shape.join()) throw new Error(`importOurWeights: ${slot.name} maps to [${t.shape}], the peer's parameter ${i} is [${v.shape}]`);
      v.assign(t);
    });
  });
}
