// The study's configuration: which models, which attacks with which budgets, which detectors, on how many test
// images. Defaults are sized by machine: the full 10,000-image test set on a native GPU adapter, a subset that
// finishes in minutes on Mesa's software renderer. A config file (JSON) overrides any field.
import { readFileSync } from 'node:fs';
import { MODEL_NAMES, ESTIMATORS, type Estimator } from '../models/factorisations.js';
import type { JacobianAugmentation } from '../models/substitute.js';

/** 'fixed': the same z draws on every call; 'fresh': new draws on every call; 'expectation': fresh, with attack gradients averaged over `draws` of them (EOT). */
export type NoiseConfig = { kind: 'fixed' } | { kind: 'fresh' } | { kind: 'expectation'; draws: number };

/** The classifier an attack faces, where it differs from the study's: its noise and its estimator. */
export interface ClassifierVariant {
  noise?: NoiseConfig;
  estimator?: Estimator;
}

export type AttackSpec = ClassifierVariant &
  (
    | { kind: 'fgs'; eps: number[]; subset?: number }
    | { kind: 'pgd'; norm: 'linf' | 'l2'; eps: number[]; iterations: number; stepSize: number; randomStart: boolean; subset?: number }
    | { kind: 'mim'; eps: number[]; iterations: number; stepSize: number; momentum: number; subset?: number }
    | { kind: 'deepfool'; p: (number | 'inf')[]; maxIterations: number; overshoot: number; subset?: number; variant?: 'box' | 'foolbox'; candidates?: number }
    | { kind: 'square'; norm: 'linf' | 'l2'; eps: number[]; queryBudget: number; subset?: number }
    | { kind: 'transfer'; from: string; eps: number[]; subset?: number }
    | { kind: 'cw'; iterations: number; lr: number; kappa: number; binarySearchSteps: number; initialConst: number; abortEarly?: boolean; subset?: number }
    | {
        kind: 'substitute';
        /** Victim-labelled training images the substitute is fitted to (the first n, at most detection.trainImages). */
        train: number;
        epochs: number;
        eps: number[];
        iterations: number;
        stepSize: number;
        /** CW crafted on the substitute too, when given. */
        cw?: { iterations: number; binarySearchSteps: number; initialConst: number };
        /** Papernot et al.'s Jacobian augmentation: `train` is then the seed set, doubled `rounds` times by victim queries. */
        augment?: JacobianAugmentation;
        subset?: number;
      }
    | { kind: 'hopskipjump'; queryBudget: number; subset?: number }
    | { kind: 'adaptive'; detector: 'marginal' | 'logit' | 'kl'; lambda: number[]; eps: number; iterations: number; stepSize: number; margin?: number; subset?: number }
  );

export interface StudyConfig {
  /** Model names; their checkpoints are `<checkpoints>/<model>-<preset>.safetensors`. */
  models: string[];
  preset: string;
  checkpoints: string;
  /** Test images attacked (the first n of the class-balanced test file), unless an attack sets its own subset. */
  subset: number;
  /** Importance samples per class in the Bayes-rule logits. */
  samples: number;
  /** The noise every attack faces unless it names its own. */
  noise: NoiseConfig;
  /** The Bayes-rule estimator: K draws shared by the ten classes, or independent per class (the reference's). */
  estimator: Estimator;
  batchSize: number;
  seed: number;
  attacks: AttackSpec[];
  detection: { trainImages: number; falsePositiveRate: number };
  /** Images shown per attack in the clean / adversarial / perturbation grid. */
  gridImages: number;
}

/**
 * The defaults. On a GPU: the full test set and the reference's budgets. On a software renderer: subsets sized so
 * the whole study finishes within 15 minutes on the slower of this project's CPU machines (docs/study.md has the
 * measurement), the new evaluation attacks (CW, the threat-model and estimator variants, the protocol checks) at a
 * few images each — their intervals say how little those few images show; the GPU configuration
 * (configs/full.json) runs them in full.
 */
export function defaultConfig(gpu: boolean): StudyConfig {
  const n = (onGpu: number | undefined, onCpu: number) => (gpu ? onGpu : onCpu);
  const pgd = (eps: number[], iterations: number, subset: number | undefined, more: Partial<AttackSpec> = {}): AttackSpec =>
    ({ kind: 'pgd', norm: 'linf', eps, iterations, stepSize: 0.01, randomStart: true, subset, ...more }) as AttackSpec;
  const deepfoolL2 = (subset: number | undefined, more: Partial<AttackSpec>): AttackSpec => ({ kind: 'deepfool', p: [2], maxIterations: 50, overshoot: 0.02, subset, ...more }) as AttackSpec;
  const cw = (iterations: number, binarySearchSteps: number, initialConst: number, subset: number | undefined): AttackSpec => ({ kind: 'cw', iterations, lr: 0.01, kappa: 0, binarySearchSteps, initialConst, subset });
  const attacks: AttackSpec[] = [
    { kind: 'fgs', eps: [0.01, 0.02, 0.05, 0.1, 0.2, 0.3] },
    // The reference's settings on a GPU (PGD 40 steps of 0.01, MIM 100 steps); fewer steps and images on a CPU.
    pgd(gpu ? [0.02, 0.05, 0.1] : [0.05], gpu ? 40 : 10, n(undefined, 10)),
    { kind: 'mim', eps: gpu ? [0.02, 0.05, 0.1] : [0.05], iterations: gpu ? 100 : 10, stepSize: 0.01, momentum: 1, subset: n(undefined, 10) },
    { kind: 'deepfool', p: [2, 'inf'], maxIterations: 50, overshoot: 0.02, subset: n(1000, 5) },
    // Foolbox 3's DeepFool (every pixel in the step, distances padded by 1e-4), for comparison with library numbers.
    { kind: 'deepfool', p: gpu ? [2, 'inf'] : [2], maxIterations: 50, overshoot: 0.02, subset: n(1000, 2), variant: 'foolbox' },
    { kind: 'square', norm: 'linf', eps: [0.1], queryBudget: gpu ? 1000 : 100, subset: n(1000, 5) },
    { kind: 'transfer', from: 'dfz', eps: [0.05, 0.1, 0.2] },
    // Carlini-Wagner L2: the reference's setting (one search step, c as given), and a stronger one (a search over c).
    cw(gpu ? 1000 : 30, 1, 10, n(1000, 2)),
    cw(gpu ? 1000 : 30, gpu ? 6 : 2, 0.1, n(1000, 2)),
    // Protocol checks: PGD and CW with twice the iterations (converged?), PGD with the whole box as budget (always succeeds?).
    pgd([0.05], gpu ? 80 : 20, n(1000, 5)),
    cw(gpu ? 2000 : 60, 1, 10, n(1000, 2)),
    pgd([1], gpu ? 40 : 10, n(1000, 5), { stepSize: 0.1, randomStart: false }),
    // A hard-label attack: HopSkipJump (L2), which sees only the predicted class.
    { kind: 'hopskipjump', queryBudget: gpu ? 5000 : 300, subset: n(1000, 2) },
    // The reference's black-box setting: a plain CNN fitted to the victim's labels, PGD, MIM and CW crafted on it.
    { kind: 'substitute', train: gpu ? 10_000 : 400, epochs: gpu ? 20 : 10, eps: [0.05, 0.1], iterations: gpu ? 40 : 10, stepSize: 0.01, cw: { iterations: gpu ? 1000 : 30, binarySearchSteps: 1, initialConst: 10 }, subset: n(1000, 20) },
    // Detection-aware PGD against each detector, lambda swept (0: the same PGD without the penalty, on the same images).
    ...(['marginal', 'logit', 'kl'] as const).map((detector): AttackSpec => ({ kind: 'adaptive', detector, lambda: gpu ? [0, 0.1, 1, 10] : [0, 10], eps: 0.05, iterations: gpu ? 40 : 10, stepSize: 0.01, subset: n(1000, 3) })),
    // The classifier's randomness as a threat model: fresh draws on every call, and EOT over 20 draws per gradient.
    pgd([0.05], gpu ? 40 : 10, n(1000, 10), { noise: { kind: 'fresh' } }),
    pgd([0.05], gpu ? 40 : 10, n(1000, 2), { noise: { kind: 'expectation', draws: 20 } }),
    deepfoolL2(n(1000, 3), { noise: { kind: 'fresh' } }),
    ...(gpu ? [deepfoolL2(200, { noise: { kind: 'expectation', draws: 20 } })] : []),
    // The reference's estimator (independent draws per class) under the headline attacks, on the same images.
    { kind: 'fgs', eps: [0.01, 0.02, 0.05, 0.1, 0.2, 0.3], subset: n(undefined, 20), estimator: 'independent' },
    pgd(gpu ? [0.02, 0.05, 0.1] : [0.05], gpu ? 40 : 10, n(undefined, 10), { estimator: 'independent' }),
    deepfoolL2(n(1000, 3), { estimator: 'independent' }),
    // Papernot et al.'s substitute: a seed set (150 images in their setting) doubled by Jacobian augmentation, lambda 0.1.
    { kind: 'substitute', train: gpu ? 150 : 25, epochs: 10, eps: [0.05, 0.1], iterations: gpu ? 40 : 10, stepSize: 0.01, augment: { rounds: gpu ? 6 : 3, lambda: 0.1 }, subset: n(1000, 20) },
  ];
  return {
    models: ['dfz', 'gfz'],
    preset: 'compact',
    checkpoints: 'checkpoints',
    subset: gpu ? 10_000 : 100,
    samples: 10,
    noise: { kind: 'fixed' },
    estimator: 'shared',
    batchSize: 100,
    seed: 1,
    attacks: attacks.map((a) => Object.fromEntries(Object.entries(a).filter(([, v]) => v !== undefined)) as AttackSpec),
    detection: { trainImages: gpu ? 10_000 : 400, falsePositiveRate: 0.05 },
    gridImages: 6,
  };
}

const ATTACK_KINDS = ['fgs', 'pgd', 'mim', 'deepfool', 'square', 'transfer', 'cw', 'adaptive', 'substitute', 'hopskipjump'];

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
  const checkVariant = (v: ClassifierVariant, where: string) => {
    if (v.noise !== undefined) {
      if (v.noise.kind === 'expectation') posInt(v.noise.draws, `${where}noise.draws`);
      else if (v.noise.kind !== 'fixed' && v.noise.kind !== 'fresh') fail(`${where}noise.kind must be 'fixed', 'fresh' or 'expectation', got ${JSON.stringify((v.noise as { kind: unknown }).kind)}`);
    }
    if (v.estimator !== undefined && !ESTIMATORS.includes(v.estimator)) fail(`${where}estimator must be one of ${ESTIMATORS.join(', ')}, got ${JSON.stringify(v.estimator)}`);
  };
  if (cfg.noise === undefined) fail('noise must be given');
  if (cfg.estimator === undefined) fail('estimator must be given');
  checkVariant(cfg, '');
  for (const [i, a] of cfg.attacks.entries()) {
    const where = `attacks[${i}] (${a.kind})`;
    if (!ATTACK_KINDS.includes(a.kind)) fail(`${where}: unknown attack (expected one of ${ATTACK_KINDS.join(', ')})`);
    if (a.subset !== undefined) posInt(a.subset, `${where}.subset`);
    checkVariant(a, `${where}.`);
    if ('eps' in a && Array.isArray(a.eps)) for (const e of a.eps) if (!(e >= 0) || !Number.isFinite(e)) fail(`${where}: eps must be finite and >= 0, got ${e}`);
    if (a.kind === 'deepfool') {
      for (const p of a.p) if (p !== 'inf' && !(typeof p === 'number' && p > 1)) fail(`${where}: p must be > 1 or 'inf', got ${p}`);
      if (a.variant !== undefined && a.variant !== 'box' && a.variant !== 'foolbox') fail(`${where}: variant must be 'box' or 'foolbox', got ${JSON.stringify(a.variant)}`);
      if (a.variant === 'foolbox') for (const p of a.p) if (p !== 2 && p !== 'inf') fail(`${where}: the foolbox variant takes p = 2 or 'inf', got ${p}`);
    }
    if (a.kind === 'transfer' && !(MODEL_NAMES as readonly string[]).includes(a.from)) fail(`${where}: unknown substitute model '${a.from}'`);
    if (a.kind === 'pgd' || a.kind === 'mim') posInt(a.iterations, `${where}.iterations`);
    if (a.kind === 'square') posInt(a.queryBudget, `${where}.queryBudget`);
    if (a.kind === 'hopskipjump') posInt(a.queryBudget, `${where}.queryBudget`);
    if (a.kind === 'substitute') {
      posInt(a.train, `${where}.train`);
      posInt(a.epochs, `${where}.epochs`);
      posInt(a.iterations, `${where}.iterations`);
      if (a.augment !== undefined) {
        if (!Number.isInteger(a.augment.rounds) || a.augment.rounds < 1 || a.augment.rounds > 10) fail(`${where}.augment.rounds must be an integer in [1, 10], got ${a.augment.rounds}`);
        if (!(a.augment.lambda > 0 && a.augment.lambda <= 1)) fail(`${where}.augment.lambda must lie in (0, 1], got ${a.augment.lambda}`);
      }
      if (a.train > cfg.detection.trainImages) fail(`${where}: train (${a.train}) exceeds detection.trainImages (${cfg.detection.trainImages}), whose victim logits label the substitute's data`);
    }
    if (a.kind === 'adaptive') {
      if (!['marginal', 'logit', 'kl'].includes(a.detector)) fail(`${where}: unknown detector ${JSON.stringify(a.detector)} (expected marginal, logit or kl)`);
      if (!Array.isArray(a.lambda) || a.lambda.length === 0 || a.lambda.some((l) => !(l >= 0 && Number.isFinite(l)))) fail(`${where}: lambda must be a non-empty list of finite numbers >= 0, got ${JSON.stringify(a.lambda)}`);
      if (!(a.eps >= 0 && Number.isFinite(a.eps))) fail(`${where}: eps must be finite and >= 0, got ${a.eps}`);
      posInt(a.iterations, `${where}.iterations`);
    }
    if (a.kind === 'cw') {
      posInt(a.iterations, `${where}.iterations`);
      posInt(a.binarySearchSteps, `${where}.binarySearchSteps`);
      if (!(a.kappa >= 0 && Number.isFinite(a.kappa))) fail(`${where}: kappa must be a finite number >= 0, got ${a.kappa}`);
      if (!(a.initialConst > 0 && Number.isFinite(a.initialConst))) fail(`${where}: initialConst (c) must be a finite number > 0, got ${a.initialConst}`);
      if (!(a.lr > 0 && Number.isFinite(a.lr))) fail(`${where}: lr must be a finite number > 0, got ${a.lr}`);
    }
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
