// Saving and loading trained classifiers: weights in `<name>.safetensors` with the run's metadata, the Adam
// state beside it in `<name>.optim.safetensors` (for --resume). Mismatches are refused with the reason.
import { existsSync, readFileSync } from 'node:fs';
import { Adam, runtime } from '../engine.js';
import { readSafetensors, writeSafetensors, CheckpointError, type NamedArray } from './checkpoint.js';
import { parseMeta, restoreModel, type CheckpointMeta } from './restore.js';
import type { LatentVariableClassifier } from './factorisations.js';

export type { CheckpointMeta, EpochRecord, TrainConfig } from './restore.js';

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
  return parseMeta(readSafetensors(path).metadata, path);
}

/** Builds the model the checkpoint describes and loads its weights, checking every name and shape. */
export function loadModel(path: string, expect: { model?: string; preset?: string } = {}): { model: LatentVariableClassifier; meta: CheckpointMeta } {
  if (!existsSync(path)) throw new CheckpointError(path, 'no such checkpoint file');
  return restoreModel(readFileSync(path), path, expect);
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
