// Checkpoint files: the safetensors codec (safetensors.ts) over the file system. Files are written atomically
// (temporary file, then rename) so an interrupted save never leaves a torn checkpoint.
import { readFileSync, existsSync } from 'node:fs';
import { writeFileAtomic } from '../fsutil.js';
import { CheckpointError, decodeSafetensors, encodeSafetensors, type NamedArray } from './safetensors.js';

export * from './safetensors.js';

export function readSafetensors(path: string) {
  if (!existsSync(path)) throw new CheckpointError(path, 'no such checkpoint file');
  return decodeSafetensors(readFileSync(path), path);
}

export function writeSafetensors(path: string, tensors: Record<string, NamedArray>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}
