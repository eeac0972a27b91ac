// The study's configuration: which models, which attacks with which budgets, which detectors, on how many test
// images. Defaults are sized by machine: the full 10,000-image test set on a native GPU adapter, a subset that
// finishes in minutes on Mesa's software renderer. A config file (JSON) overrides any field.
import { readFileSync } from 'node:fs';
import { MODEL_NAMES } from '../models/factorisations.js';

export type AttackSpec =
  | { kind: 'fgs'; eps: number[]; subset?: number }
  | { kind: 'pgd'; norm: 'linf' | 'l2'; eps: number[]; iterations: number; stepSize: number; randomStart: boolean; subset?: number }
  | { kind: 'mim'; eps: number[]; iterations: number; stepSize: number; momentum: number; subset?: number }
  | { kind: 'deepfool'; p: (number | 'inf')[]; maxIterations: number; overshoot: number; subset?: number }
  | { kind: 'square'; norm: 'linf' | 'l2'; eps: number[]; queryBudget: number; subset?: number }
  | { kind: 'transfer'; from: string; eps: number[]; subset?: number };

export interface StudyConfig {
  /** Model names; their checkpoints are `<checkpoints>/<model>-<preset>.safetensors`. */
  models: string[];
  preset: string;
  checkpoints: string;
  /** Test images attacked (the first n of the class-balanced test file), unless an attack sets its own subset. */
  subset: number;
  /** Importance samples per class in the Bayes-rule logits. */
  samples: number;
  /** 'fixed': the same z draws through an attack; 'expectation': gradients averaged over `draws` fresh draws. */
  noise: { kind: 'fixed' } | { kind: 'expectation'; draws: number };
  batchSize: number;
  seed: number;
  attacks: AttackSpec[];
  detection: { trainImages: number; falsePositiveRate: number };
  /** Images shown per attack in the clean / adversarial / perturbation grid. */
  gridImages: number;
}

export function defaultConfig(gpu: boolean): StudyConfig {
  return {
    models: ['dfz', 'gfz'],
    preset: 'compact',
    checkpoints: 'checkpoints',
    subset: gpu ? 10_000 : 300,
    samples: 10,
    noise: { kind: 'fixed' },
    batchSize: 100,
    seed: 1,
    attacks: [
      { kind: 'fgs', eps: [0.01, 0.02, 0.05, 0.1, 0.2, 0.3] },
      // The reference's settings on a GPU (PGD 40 steps of 0.01, MIM 100 steps); fewer steps and images on a CPU.
      { kind: 'pgd', norm: 'linf', eps: gpu ? [0.02, 0.05, 0.1] : [0.05], iterations: gpu ? 40 : 10, stepSize: 0.01, randomStart: true, subset: gpu ? undefined : 60 },
      { kind: 'mim', eps: gpu ? [0.02, 0.05, 0.1] : [0.05], iterations: gpu ? 100 : 10, stepSize: 0.01, momentum: 1, subset: gpu ? undefined : 60 },
      { kind: 'deepfool', p: [2, 'inf'], maxIterations: 50, overshoot: 0.02, subset: gpu ? 1000 : 50 },
      { kind: 'square', norm: 'linf', eps: [0.1], queryBudget: gpu ? 1000 : 100, subset: gpu ? 1000 : 40 },
      { kind: 'transfer', from: 'dfz', eps: [0.05, 0.1, 0.2] },
    ],
    detection: { trainImages: gpu ? 10_000 : 1000, falsePositiveRate: 0.05 },
    gridImages: 6,
  };
}

const ATTACK_KINDS = ['fgs', 'pgd', 'mim', 'deepfool', 'square', 'transfer'];

/** Validates a config, naming the first bad field. */
export function checkConfig(cfg: StudyConfig): StudyConfig {
  const fail = (msg: string): never => {
    throw new Error(`config: ${msg}`);
  };
  if (!Array.isArray(cfg.models) || cfg.models.length === 0) fail('models must be a non-empty list');
  for (const m of cfg.models) if (!(MODEL_NAMES as readonly string[]).includes(m)) fail(`unknown model '${m}' (expected one of ${MODEL_NAMES.join(', ')})`);
  const posInt = (v: unknown, name: string) => (!Number.isInteger(v) || (v as number) < 1) && fail(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
  posInt(cfg.subset, 'subset');
  if (cfg.subset > 10_000) fail(`subset ${cfg.subset} exceeds the 10,000 test images`);
  posInt(cfg.samples, 'samples');
  posInt(cfg.batchSize, 'batchSize');
  posInt(cfg.detection.trainImages, 'detection.trainImages');
  if (!(cfg.detection.falsePositiveRate > 0 && cfg.detection.falsePositiveRate < 1)) fail(`detection.falsePositiveRate must be in (0, 1), got ${cfg.detection.falsePositiveRate}`);
  if (cfg.noise.kind === 'expectation') posInt(cfg.noise.draws, 'noise.draws');
  else if (cfg.noise.kind !== 'fixed') fail(`noise.kind must be 'fixed' or 'expectation'`);
  for (const [i, a] of cfg.attacks.entries()) {
    const where = `attacks[${i}] (${a.kind})`;
    if (!ATTACK_KINDS.includes(a.kind)) fail(`${where}: unknown attack (expected one of ${ATTACK_KINDS.join(', ')})`);
    if (a.subset !== undefined) posInt(a.subset, `${where}.subset`);
    if ('eps' in a) for (const e of a.eps) if (!(e >= 0) || !Number.isFinite(e)) fail(`${where}: eps must be finite and >= 0, got ${e}`);
    if (a.kind === 'deepfool') for (const p of a.p) if (p !== 'inf' && !(typeof p === 'number' && p > 1)) fail(`${where}: p must be > 1 or 'inf', got ${p}`);
    if (a.kind === 'transfer' && !(MODEL_NAMES as readonly string[]).includes(a.from)) fail(`${where}: unknown substitute model '${a.from}'`);
    if (a.kind === 'pgd' || a.kind === 'mim') posInt(a.iterations, `${where}.iterations`);
    if (a.kind === 'square') posInt(a.queryBudget, `${where}.queryBudget`);
  }
  return cfg;
}

/** Defaults overlaid with a JSON file's fields (attacks replace the list wholesale). */
export function loadConfig(path: string | undefined, gpu: boolean): StudyConfig {
  const base = defaultConfig(gpu);
  if (!path) return checkConfig(base);
  let user: Partial<StudyConfig>;
  try {
    user = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`config ${path}: ${(e as Error).message}`);
  }
  return checkConfig({ ...base, ...user, detection: { ...base.detection, ...(user.detection ?? {}) } });
}
