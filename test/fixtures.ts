// Shared test fixtures: an affine classifier with known decision boundaries; affine and two-layer ReLU classifiers
// with their float64 twins (logits, exact input gradients, distance to a kink), eager and seeded; random matrices
// and images with many pixels at 0 and 1; and untrained tiny checkpoints for study runs.
import { join } from 'node:path';
import * as T from './lib.js';
import type { Classifier } from '../src/attacks/classifier.js';
import { createModel, modelConfig, type LatentVariableClassifier } from '../src/models/factorisations.js';
import { randomRef } from './helpers.js';
import { saveCheckpoint } from '../src/models/store.js';

/** An affine classifier f(x) = W x + b on [N, 1, 1, D] images. */
export function affine(w: number[][], b: number[]): Classifier & { w: number[][]; b: number[] } {
  const c = w.length;
  const d = w[0].length;
  const W = T.keep(T.tensor(w.flat(), [c, d]));
  const B = T.keep(T.tensor(b, [c]));
  return { name: 'affine', numClasses: c, draws: 1, w, b, logits: (x) => T.linear(T.reshape(x, [x.shape[0], -1]), W, B) };
}

/**
 * A classifier on [N, 1, 1, D] images in two forms, eager (`clf`) and seeded (`compiled`, so attacks trace their
 * steps once per batch and replay them), with its float64 twin: logits, the gradient of every logit
 * (grads[k][e] = d f_k / d x_e), and how far x is from a kink of the piecewise-linear map relative to the
 * pre-activations (Infinity if affine).
 */
export interface PiecewiseLinearModel {
  clf: Classifier;
  compiled: Classifier;
  logits(x: number[]): number[];
  grads(x: number[]): number[][];
  kink(x: number[]): number;
}

export const matVec = (w: number[][], x: number[], b: number[]) => w.map((row, k) => row.reduce((s, v, e) => s + v * x[e], b[k]));
export const maxAbs = (v: number[]) => Math.max(0, ...v.map(Math.abs));
export const argmaxOf = (v: number[]) => v.indexOf(Math.max(...v));
export const randomMatrix = (rows: number, cols: number, seed: number, lo: number, hi: number) =>
  Array.from({ length: rows }, (_, k) => Array.from(randomRef([cols], seed + 31 * k, lo, hi).data));
/** n images of d pixels, about a quarter of them at 0 and a quarter at 1. */
export const imagesAtBounds = (n: number, d: number, seed: number) => Array.from(randomRef([n * d], seed, -0.5, 1.5).data, (v) => Math.min(1, Math.max(0, v)));

/** The same deterministic logits as a classifier with explicit seeds (which it ignores). */
function withSeeds(name: string, c: number, logits: (x: T.Tensor) => T.Tensor): [Classifier, Classifier] {
  const eager: Classifier = { name, numClasses: c, draws: 1, logits: (x) => logits(x) };
  // DeepFool's compiled step needs only the seeded logits; `model` keeps compiled functions for other attacks.
  const model = null as unknown as LatentVariableClassifier;
  const seeded = { model, key: name, nextSeed: () => 1, logits: (x: T.Tensor) => logits(x), logitsOfDraws: (x: T.Tensor) => logits(x) };
  return [eager, { ...eager, seeded }];
}

/** f(x) = W x + b. */
export function affineModel(w: number[][], b: number[]): PiecewiseLinearModel {
  const [W, B] = [T.keep(T.tensor(w.flat(), [w.length, w[0].length])), T.keep(T.tensor(b, [b.length]))];
  const [clf, compiled] = withSeeds('affine', w.length, (x) => T.linear(T.reshape(x, [x.shape[0], -1]), W, B));
  return { clf, compiled, logits: (x) => matVec(w, x, b), grads: () => w, kink: () => Infinity };
}

/** f(x) = W2 relu(W1 x + b1) + b2; relu' is taken as 0 at 0, as the engine's reluGrad does. */
export function reluModel(w1: number[][], b1: number[], w2: number[][], b2: number[]): PiecewiseLinearModel {
  const [W1, B1, W2, B2] = [T.tensor(w1.flat(), [w1.length, w1[0].length]), T.tensor(b1, [b1.length]), T.tensor(w2.flat(), [w2.length, w2[0].length]), T.tensor(b2, [b2.length])].map(T.keep);
  const [clf, compiled] = withSeeds('relu2', w2.length, (x) => T.linear(T.linear(T.reshape(x, [x.shape[0], -1]), W1, B1, 'relu'), W2, B2));
  return {
    clf,
    compiled,
    logits: (x) => matVec(w2, matVec(w1, x, b1).map((h) => Math.max(h, 0)), b2),
    grads: (x) => {
      const on = matVec(w1, x, b1).map((h) => (h > 0 ? 1 : 0));
      return w2.map((row) => w1[0].map((_, e) => row.reduce((s, v, j) => s + v * on[j] * w1[j][e], 0)));
    },
    kink: (x) => {
      const h = matVec(w1, x, b1);
      return Math.min(...h.map(Math.abs)) / (1 + maxAbs(h));
    },
  };
}

/** Untrained tiny models (2 channels, 8 hidden units, 2 latents) saved as `<dir>/<model>-custom.safetensors`. */
export async function tinyCheckpoints(dir: string, models: readonly string[], seed = 3): Promise<void> {
  for (const m of models) {
    const model = createModel(modelConfig(m, 'compact', { channels: 2, hidden: 8, latent: 2, seed, preset: 'custom' }));
    await saveCheckpoint(join(dir, `${m}-custom.safetensors`), model, { train: { epochs: 0, batchSize: 1, lr: 1, seed: 1, evalSubset: 1, evalSamples: 1, trainLimit: 1 }, epoch: 0, history: [] });
    model.params.dispose();
  }
}
