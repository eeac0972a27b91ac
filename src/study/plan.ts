// The study as a list of independent units of work, and their division into shares. A unit is one block of
// `batchSize` consecutive test (or training) images under one job — or, for an FGS sweep, under every eps of
// the sweep, which share one gradient — and writes one file. No unit reads another's output: a share of units
// can run on any machine, in any order, and the report is assembled from the files afterwards. Planning reads
// only the config and the checkpoints' bytes and metadata (no GPU), so every process derives the same plan.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { readMeta } from '../models/store.js';
import { estimatorName, type Estimator } from '../models/factorisations.js';
import type { AttackSpec, ClassifierVariant, NoiseConfig, StudyConfig } from './config.js';

export const digest = (data: string | Buffer) => createHash('sha256').update(data).digest('hex').slice(0, 16);
export const fingerprint = (v: unknown) => digest(JSON.stringify(v));

/** The classifier an attack faces: its noise and its Bayes-rule estimator. */
export interface Variant {
  noise: NoiseConfig;
  estimator: Estimator;
}

export const variantOf = (spec: ClassifierVariant | undefined, cfg: StudyConfig): Variant => ({ noise: spec?.noise ?? cfg.noise, estimator: spec?.estimator ?? cfg.estimator });

/** '' for the project's default classifier (fixed noise, shared draws); else e.g. 'fresh', 'eot20', 'indep', 'fresh-indep'. */
export function variantKey(v: Variant): string {
  const noise = v.noise.kind === 'fixed' ? '' : v.noise.kind === 'fresh' ? 'fresh' : `eot${v.noise.draws}`;
  return [noise, v.estimator === 'independent' ? 'indep' : ''].filter(Boolean).join('-');
}

export function describeVariant(v: Variant): string {
  const noise = v.noise.kind === 'fixed' ? 'fixed noise' : v.noise.kind === 'fresh' ? 'fresh noise' : `EOT over ${v.noise.draws} draws`;
  return `${noise}, ${v.estimator === 'shared' ? 'shared draws' : 'independent draws'}`;
}

/** One (model, attack, parameter) result of the report, e.g. `dfz-fgs-eps0.1`. */
export interface JobInfo {
  id: string;
  model: string;
  attack: AttackSpec['kind'];
  /** e.g. 'eps=0.1', 'p=2', 'FGS eps=0.05 crafted on dfz'. */
  setting: string;
  eps?: number;
  p?: number | 'inf';
  /** The detector penalty's weight (adaptive attacks). */
  lambda?: number;
  /** What a substitute attack crafts on the substitute. */
  method?: 'pgd' | 'mim' | 'cw';
  /** Test images attacked: the first `subset`. */
  subset: number;
  specIndex: number;
  variant: Variant;
}

export interface Unit {
  /** File stem under <out>/jobs/. */
  id: string;
  model: string;
  kind: 'clean-test' | 'clean-train' | 'attack' | 'substitute';
  /** Jobs whose results for this block the unit computes (attack units). */
  jobIds: string[];
  specIndex?: number;
  block: number;
  /** First image and number of images. */
  start: number;
  count: number;
  variant: Variant;
  /** Relative cost (classifier gradients per image, roughly), for even shares. */
  cost: number;
  /** Cached output is reused only when this matches. */
  fingerprint: string;
}

export interface PlannedModel {
  name: string;
  checkpoint: string;
  /** SHA-256 prefix of the checkpoint file. */
  weights: string;
  epoch: number;
  /** Attacked (false for a transfer attack's substitute only). */
  studied: boolean;
}

export interface StudyPlan {
  models: PlannedModel[];
  jobs: JobInfo[];
  units: Unit[];
  fingerprint: string;
}

/** The study's models and transfer substitutes, each checked to have a checkpoint of the right model and preset. */
export function planModels(cfg: StudyConfig): PlannedModel[] {
  const substitutes = cfg.attacks.flatMap((a) => (a.kind === 'transfer' ? [a.from] : []));
  return [...new Set([...cfg.models, ...substitutes])].map((name) => {
    const checkpoint = join(cfg.checkpoints, `${name}-${cfg.preset}.safetensors`);
    if (!existsSync(checkpoint)) throw new Error(`no checkpoint for model '${name}' at ${checkpoint}: train it with \`npx tsx src/cli.ts train --model ${name} --preset ${cfg.preset}\``);
    const meta = readMeta(checkpoint);
    if (meta.model.model !== name) throw new Error(`${checkpoint}: holds model '${meta.model.model}', expected '${name}'`);
    if (meta.model.preset !== cfg.preset) throw new Error(`${checkpoint}: holds preset '${meta.model.preset}', expected '${cfg.preset}'`);
    return { name, checkpoint, weights: digest(readFileSync(checkpoint)), epoch: meta.epoch, studied: cfg.models.includes(name) };
  });
}

/** The jobs one attack spec makes for one model (none for a transfer attack onto its own substitute). */
export function jobsOf(model: string, spec: AttackSpec, specIndex: number, cfg: StudyConfig): JobInfo[] {
  const subset = Math.min(spec.subset ?? cfg.subset, cfg.subset);
  const variant = variantOf(spec, cfg);
  const key = variantKey(variant);
  // Jobs against another classifier than the study's name it in their id and setting.
  const tagged = key === variantKey(variantOf(undefined, cfg)) ? { id: '', setting: '' } : { id: `-${key || 'fixed'}`, setting: `; ${describeVariant(variant)}` };
  const job = (id: string, setting: string, extra: Partial<JobInfo>): JobInfo => ({ id: id + tagged.id, model, attack: spec.kind, setting: setting + tagged.setting, subset, specIndex, variant, ...extra });
  switch (spec.kind) {
    case 'fgs':
      return spec.eps.map((eps) => job(`${model}-fgs-eps${eps}`, `eps=${eps}`, { eps }));
    case 'pgd':
      return spec.eps.map((eps) => job(`${model}-pgd-${spec.norm}-eps${eps}-it${spec.iterations}`, `eps=${eps} ${spec.norm}, ${spec.iterations} it`, { eps }));
    case 'mim':
      return spec.eps.map((eps) => job(`${model}-mim-linf-eps${eps}-it${spec.iterations}`, `eps=${eps}, ${spec.iterations} it`, { eps }));
    case 'deepfool': {
      const foolbox = spec.variant === 'foolbox';
      const candidates = foolbox && spec.candidates !== undefined ? `, ${spec.candidates} candidates` : '';
      return spec.p.map((p) => job(`${model}-deepfool-p${p}${foolbox ? '-foolbox' : ''}`, `p=${p === 'inf' ? '∞' : p}${foolbox ? `, Foolbox 3${candidates}` : ''}`, { p }));
    }
    case 'square':
      return spec.eps.map((eps) => job(`${model}-square-${spec.norm}-eps${eps}`, `eps=${eps} ${spec.norm}, ${spec.queryBudget} queries`, { eps }));
    case 'cw':
      return [job(`${model}-cw-l2-bs${spec.binarySearchSteps}-it${spec.iterations}`, `kappa=${spec.kappa}, ${spec.iterations} it, ${spec.binarySearchSteps} search step${spec.binarySearchSteps > 1 ? 's' : ''} from c=${spec.initialConst}`, {})];
    case 'hopskipjump':
      return [job(`${model}-hopskipjump-l2-q${spec.queryBudget}`, `L2, hard-label, ${spec.queryBudget} queries`, {})];
    case 'substitute': {
      const a = spec.augment;
      const crafted = a
        ? `on a substitute CNN (${spec.train} victim-labelled seed images, ${a.rounds} rounds of Jacobian augmentation with lambda=${a.lambda}: ${spec.train * 2 ** a.rounds} images, ${spec.epochs} epoch${spec.epochs === 1 ? '' : 's'} a round)`
        : `on a substitute CNN (${spec.train} victim-labelled images, ${spec.epochs} epochs)`;
      const sub = `${model}-substitute${a ? `-jba${a.rounds}` : ''}`;
      return [
        ...spec.eps.flatMap((eps) => [
          job(`${sub}-pgd-eps${eps}-it${spec.iterations}`, `PGD eps=${eps} linf, ${spec.iterations} it, ${crafted}`, { eps, method: 'pgd' }),
          job(`${sub}-mim-eps${eps}-it${spec.iterations}`, `MIM eps=${eps}, ${spec.iterations} it, ${crafted}`, { eps, method: 'mim' }),
        ]),
        ...(spec.cw ? [job(`${sub}-cw-it${spec.cw.iterations}`, `CW L2, ${spec.cw.iterations} it, ${crafted}`, { method: 'cw' })] : []),
      ];
    }
    case 'adaptive':
      return spec.lambda.map((lambda) => job(`${model}-adaptive-${spec.detector}-eps${spec.eps}-it${spec.iterations}-lambda${lambda}`, `PGD eps=${spec.eps}, ${spec.iterations} it, against ${spec.detector}, lambda=${lambda}`, { eps: spec.eps, lambda }));
    case 'transfer':
      return model === spec.from ? [] : spec.eps.map((eps) => job(`${model}-transfer-from-${spec.from}-eps${eps}`, `FGS eps=${eps} crafted on ${spec.from}`, { eps }));
  }
}

const draws = (spec: AttackSpec) => (spec.noise?.kind === 'expectation' ? spec.noise.draws : 1);

/** Classifier gradients per image, roughly: what makes shares even. */
function costPerImage(spec: AttackSpec, jobs: number): number {
  switch (spec.kind) {
    case 'fgs':
    case 'transfer':
      return draws(spec) + 0.3 * jobs;
    case 'pgd':
    case 'mim':
      return spec.iterations * draws(spec) + 0.3;
    case 'deepfool':
      // Most images cross within a few iterations; each needs a gradient per class.
      return 10 * Math.min(spec.maxIterations, 5) * draws(spec);
    case 'square':
      return 0.3 * spec.queryBudget * draws(spec);
    case 'cw':
      return spec.iterations * spec.binarySearchSteps * draws(spec);
    case 'adaptive':
      return spec.iterations * draws(spec);
    case 'substitute':
      return spec.cw ? spec.cw.iterations : spec.iterations;
    case 'hopskipjump':
      return 0.3 * spec.queryBudget * draws(spec);
  }
}

const CLEAN_COST = 0.3;

/** Splits images [0, n) into blocks of `size`. */
function blocks(n: number, size: number): { block: number; start: number; count: number }[] {
  return Array.from({ length: Math.ceil(n / size) }, (_, block) => ({ block, start: block * size, count: Math.min(size, n - block * size) }));
}

export function planStudy(cfg: StudyConfig, models = planModels(cfg)): StudyPlan {
  const weightsOf = new Map(models.map((m) => [m.name, m.weights]));
  const jobs: JobInfo[] = [];
  const units: Unit[] = [];
  // Every classifier some attack faces gets its own clean logits and detectors.
  const variants = [variantOf(undefined, cfg), ...cfg.attacks.map((a) => variantOf(a, cfg))].filter((v, i, all) => all.findIndex((w) => variantKey(w) === variantKey(v)) === i);
  for (const m of models.filter((m) => m.studied)) {
    // What every unit of this model depends on: its weights, the estimator and how it is seeded and batched.
    const baseOf = (v: Variant) => ({ model: m.name, weights: m.weights, estimator: estimatorName(v.estimator), samples: cfg.samples, noise: v.noise, seed: cfg.seed, batchSize: cfg.batchSize });
    for (const variant of variants) {
      const key = variantKey(variant);
      const own = key === variantKey(variantOf(undefined, cfg));
      // Another classifier needs clean logits only on the images its attacks use; the detectors stay the study's
      // own (fitted on training images), so only its clean test scores are its own.
      const attacked = Math.max(0, ...cfg.attacks.filter((a) => variantKey(variantOf(a, cfg)) === key).map((a) => Math.min(a.subset ?? cfg.subset, cfg.subset)));
      const sizes = own ? ([['clean-test', cfg.subset], ['clean-train', cfg.detection.trainImages]] as const) : ([['clean-test', attacked]] as const);
      for (const [kind, n] of sizes) {
        for (const b of blocks(n, cfg.batchSize)) {
          const id = `${m.name}${key ? `-${key}` : ''}-${kind}-b${b.block}`;
          units.push({ id, model: m.name, kind, jobIds: [], variant, ...b, cost: CLEAN_COST * b.count, fingerprint: fingerprint({ ...baseOf(variant), kind, ...b }) });
        }
      }
    }
    cfg.attacks.forEach((spec, specIndex) => {
      const variant = variantOf(spec, cfg);
      const base = baseOf(variant);
      const specJobs = jobsOf(m.name, spec, specIndex, cfg);
      if (specJobs.length === 0) return;
      jobs.push(...specJobs);
      const substitute = spec.kind === 'transfer' ? { substitute: weightsOf.get(spec.from) } : {};
      if (spec.kind === 'substitute') {
        // The substitute itself: fitted once per model, read by every unit that crafts on it.
        const b = { block: 0, start: 0, count: spec.train };
        units.push({ id: `${m.name}-substitute-s${specIndex}`, model: m.name, kind: 'substitute', jobIds: [], specIndex, variant, ...b, cost: 0.05 * spec.epochs * spec.train * (spec.augment ? 2 ** (spec.augment.rounds + 1) - 1 : 1), fingerprint: fingerprint({ ...base, spec, kind: 'substitute', trainImages: cfg.detection.trainImages, subset: cfg.subset }) });
      }
      // An FGS sweep's settings share one gradient per block, so they form one unit; other settings are units of their own.
      const groups = spec.kind === 'fgs' || spec.kind === 'transfer' ? [specJobs] : specJobs.map((j) => [j]);
      for (const group of groups) {
        for (const b of blocks(group[0].subset, cfg.batchSize)) {
          const id = group.length > 1 ? `${m.name}-${spec.kind}-s${specIndex}-b${b.block}` : `${group[0].id}-b${b.block}`;
          const grid = Math.max(0, Math.min(b.count, cfg.gridImages - b.start));
          units.push({
            id,
            model: m.name,
            kind: 'attack',
            jobIds: group.map((j) => j.id),
            specIndex,
            variant,
            ...b,
            cost: costPerImage(spec, group.length) * b.count,
            fingerprint: fingerprint({ ...base, ...substitute, spec, jobs: group.map((j) => j.id), ...b, grid }),
          });
        }
      }
    });
  }
  const ids = new Set<string>();
  for (const u of units) {
    if (ids.has(u.id)) throw new Error(`config: two attacks produce the same results '${u.id}' (an attack listed twice?)`);
    ids.add(u.id);
  }
  return { models, jobs, units, fingerprint: fingerprint(units.map((u) => u.fingerprint)) };
}

/** One of N disjoint shares of a study, numbered from 1. */
export interface Shard {
  index: number;
  count: number;
}

/**
 * Deals the units into `count` shares of nearly equal cost: longest first, each to the share with the least work
 * so far (ties to the lower share). Deterministic, so every process agrees on who does what.
 */
export function assignShares(units: Unit[], count: number): number[] {
  const order = units.map((u, i) => i).sort((a, b) => units[b].cost - units[a].cost || a - b);
  const load = new Array<number>(count).fill(0);
  const share = new Array<number>(units.length);
  for (const i of order) {
    let best = 0;
    for (let s = 1; s < count; s++) if (load[s] < load[best]) best = s;
    share[i] = best + 1;
    load[best] += units[i].cost;
  }
  return share;
}

export function unitsOfShard(plan: StudyPlan, shard: Shard): Unit[] {
  const share = assignShares(plan.units, shard.count);
  return plan.units.filter((_, i) => share[i] === shard.index);
}

/**
 * A share from `I/N`, or from a scheduler's environment: `slurm` (a job array's SLURM_ARRAY_TASK_ID, counted
 * from SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT tasks) or `k8s:N` (an Indexed Job's JOB_COMPLETION_INDEX,
 * from 0, of N completions).
 */
export function parseShard(text: string, env: Record<string, string | undefined> = process.env): Shard {
  const int = (v: string | undefined, what: string): number => {
    if (v === undefined || !/^\d+$/.test(v.trim())) throw new Error(`--shard ${text}: ${what} must be a non-negative integer, got ${v === undefined ? 'nothing (is it set?)' : JSON.stringify(v)}`);
    return Number(v);
  };
  let shard: Shard;
  if (text === 'slurm') {
    const id = int(env.SLURM_ARRAY_TASK_ID, 'SLURM_ARRAY_TASK_ID');
    const min = env.SLURM_ARRAY_TASK_MIN === undefined ? 0 : int(env.SLURM_ARRAY_TASK_MIN, 'SLURM_ARRAY_TASK_MIN');
    const count = int(env.SLURM_ARRAY_TASK_COUNT, 'SLURM_ARRAY_TASK_COUNT');
    shard = { index: id - min + 1, count };
    if (env.SLURM_ARRAY_TASK_STEP !== undefined && env.SLURM_ARRAY_TASK_STEP !== '1') {
      throw new Error(`--shard slurm: the job array must be contiguous (--array=0-${count - 1}), got step ${env.SLURM_ARRAY_TASK_STEP}`);
    }
  } else if (text.startsWith('k8s:')) {
    shard = { index: int(env.JOB_COMPLETION_INDEX, 'JOB_COMPLETION_INDEX') + 1, count: int(text.slice(4), 'the completion count') };
  } else {
    const m = /^(\d+)\/(\d+)$/.exec(text);
    if (!m) throw new Error(`--shard: expected I/N (e.g. 2/8), 'slurm' or 'k8s:N', got '${text}'`);
    shard = { index: Number(m[1]), count: Number(m[2]) };
  }
  if (!(shard.count >= 1 && shard.index >= 1 && shard.index <= shard.count)) {
    throw new Error(`--shard ${text}: share ${shard.index} of ${shard.count} does not exist (shares are numbered 1 to N)`);
  }
  return shard;
}
