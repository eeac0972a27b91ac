// A trained classifier from a checkpoint's bytes: its run metadata and the model it describes, with every name
// and shape checked. No file system, so the browser page restores the checkpoints the CLI writes (store.ts reads
// and writes the files).
import { CheckpointError, decodeSafetensors } from './safetensors.js';
import { createModel, modelConfig, type LatentVariableClassifier, type ModelConfig } from './factorisations.js';

export interface EpochRecord {
  epoch: number;
  trainNegElbo: number;
  testNegElbo: number;
  testAccuracy: number;
  testSubset: number;
  seconds: number;
}

export interface TrainConfig {
  epochs: number;
  batchSize: number;
  lr: number;
  /** Seed of data order and sampling noise (the model config holds the initialisation seed). */
  seed: number;
  evalSubset: number;
  evalSamples: number;
  trainLimit: number;
  /**
   * Steps over which the weight of the bound's latent term rises linearly from 0 to 1 (KL warm-up; 0: none, the
   * bound from the first step). Checkpoints written before it existed read as 0.
   */
  klWarmup?: number;
}

export interface CheckpointMeta {
  format: 'gencls-checkpoint-v1';
  model: ModelConfig;
  train: TrainConfig;
  /** Epochs completed. */
  epoch: number;
  history: EpochRecord[];
  adapter: string;
  savedAt: string;
}

export function parseMeta(metadata: Record<string, string>, path: string): CheckpointMeta {
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(metadata.gencls ?? 'null');
  } catch {
    throw new CheckpointError(path, 'corrupt: metadata is not valid JSON');
  }
  if (!meta || meta.format !== 'gencls-checkpoint-v1') throw new CheckpointError(path, 'not a gencls checkpoint (no gencls-checkpoint-v1 metadata)');
  return meta;
}

/** Builds the model a checkpoint's bytes describe and loads its weights; `path` names the source in errors. */
export function restoreModel(bytes: Uint8Array, path: string, expect: { model?: string; preset?: string } = {}): { model: LatentVariableClassifier; meta: CheckpointMeta } {
  const { tensors, metadata } = decodeSafetensors(bytes, path);
  const meta = parseMeta(metadata, path);
  const cfg = modelConfig(meta.model.model, meta.model.preset === 'custom' ? 'compact' : meta.model.preset, meta.model);
  if (expect.model && expect.model !== cfg.model) throw new CheckpointError(path, `holds model '${cfg.model}', expected '${expect.model}'`);
  if (expect.preset && expect.preset !== cfg.preset) throw new CheckpointError(path, `holds preset '${cfg.preset}', expected '${expect.preset}'`);
  const model = createModel(cfg);
  const state: Record<string, Float32Array> = {};
  for (const slot of model.params.slots) {
    const t = tensors[slot.name];
    if (!t) throw new CheckpointError(path, `missing tensor '${slot.name}' for model ${cfg.model}/${cfg.preset}`);
    if (t.shape.join() !== slot.shape.join()) throw new CheckpointError(path, `tensor '${slot.name}' has shape [${t.shape}], model expects [${slot.shape}]`);
    state[slot.name] = t.data;
  }
  const extra = Object.keys(tensors).filter((n) => !model.params.has(n));
  if (extra.length) throw new CheckpointError(path, `unexpected tensors for model ${cfg.model}: ${extra.join(', ')}`);
  model.params.loadState(state);
  return { model, meta };
}
