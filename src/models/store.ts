// Saving and loading trained classifiers: weights in `<name>.safetensors` with the run's metadata, the Adam
// state beside it in `<name>.optim.safetensors` (for --resume). Mismatches are refused with the reason.
import { existsSync } from 'node:fs';
import { Adam, runtime } from '../engine.js';
import { readSafetensors, writeSafetensors, CheckpointError, type NamedArray } from './checkpoint.js';
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

export const optimPath = (weightsPath: string) => weightsPath.replace(/\.safetensors$/, '.optim.safetensors');

export async function saveCheckpoint(path: string, model: LatentVariableClassifier, meta: Omit<CheckpointMeta, 'format' | 'model' | 'adapter' | 'savedAt'>, adam?: Adam): Promise<void> {
  const full: CheckpointMeta = { format: 'gencls-checkpoint-v1', model: model.config, adapter: runtime().description, savedAt: new Date().toISOString(), ...meta };
  const state = await model.params.state();
  const tensors: Record<string, NamedArray> = {};
  for (const slot of model.params.slots) tensors[slot.name] = { shape: [...slot.shape], data: state[slot.name] };
  // Optimiser state first: a crash between the two writes leaves the old weights with newer moments, which resume tolerates.
  if (adam) {
    const s = await adam.exportState();
    const moments: Record<string, NamedArray> = {};
    for (const slot of model.params.slots) {
      moments[`m.${slot.name}`] = { shape: [...slot.shape], data: s.m[slot.name] };
      moments[`v.${slot.name}`] = { shape: [...slot.shape], data: s.v[slot.name] };
    }
    writeSafetensors(optimPath(path), moments, { steps: JSON.stringify(s.steps) });
  }
  writeSafetensors(path, tensors, { gencls: JSON.stringify(full) });
}

export function readMeta(path: string): CheckpointMeta {
  const { metadata } = readSafetensors(path);
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(metadata.gencls ?? 'null');
  } catch {
    throw new CheckpointError(path, 'corrupt: metadata is not valid JSON');
  }
  if (!meta || meta.format !== 'gencls-checkpoint-v1') throw new CheckpointError(path, 'not a gencls checkpoint (no gencls-checkpoint-v1 metadata)');
  return meta;
}

/** Builds the model the checkpoint describes and loads its weights, checking every name and shape. */
export function loadModel(path: string, expect: { model?: string; preset?: string } = {}): { model: LatentVariableClassifier; meta: CheckpointMeta } {
  const { tensors } = readSafetensors(path);
  const meta = readMeta(path);
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

export function loadOptimizerState(path: string, model: LatentVariableClassifier, adam: Adam): void {
  const p = optimPath(path);
  if (!existsSync(p)) throw new CheckpointError(p, 'optimiser state missing: cannot resume exactly (delete the checkpoint to start over)');
  const { tensors, metadata } = readSafetensors(p);
  const m: Record<string, Float32Array> = {};
  const v: Record<string, Float32Array> = {};
  for (const slot of model.params.slots) {
    const mt = tensors[`m.${slot.name}`];
    const vt = tensors[`v.${slot.name}`];
    if (!mt || !vt) throw new CheckpointError(p, `missing moments for '${slot.name}'`);
    m[slot.name] = mt.data;
    v[slot.name] = vt.data;
  }
  adam.importState({ steps: JSON.parse(metadata.steps ?? '{}'), m, v });
}
