// Shared test fixtures: an affine classifier with known decision boundaries, and untrained tiny checkpoints for
// study runs.
import { join } from 'node:path';
import * as T from './lib.js';
import type { Classifier } from '../src/attacks/classifier.js';
import { createModel, modelConfig } from '../src/models/factorisations.js';
import { saveCheckpoint } from '../src/models/store.js';

/** An affine classifier f(x) = W x + b on [N, 1, 1, D] images. */
export function affine(w: number[][], b: number[]): Classifier & { w: number[][]; b: number[] } {
  const c = w.length;
  const d = w[0].length;
  const W = T.keep(T.tensor(w.flat(), [c, d]));
  const B = T.keep(T.tensor(b, [c]));
  return { name: 'affine', numClasses: c, draws: 1, w, b, logits: (x) => T.linear(T.reshape(x, [x.shape[0], -1]), W, B) };
}

/** Untrained tiny models (2 channels, 8 hidden units, 2 latents) saved as `<dir>/<model>-custom.safetensors`. */
export async function tinyCheckpoints(dir: string, models: readonly string[], seed = 3): Promise<void> {
  for (const m of models) {
    const model = createModel(modelConfig(m, 'compact', { channels: 2, hidden: 8, latent: 2, seed, preset: 'custom' }));
    await saveCheckpoint(join(dir, `${m}-custom.safetensors`), model, { train: { epochs: 0, batchSize: 1, lr: 1, seed: 1, evalSubset: 1, evalSamples: 1, trainLimit: 1 }, epoch: 0, history: [] });
    model.params.dispose();
  }
}
