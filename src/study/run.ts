// The study runner: computes units of the plan (src/study/plan.ts) — all of them, or one share — each written
// atomically to <out>/jobs/<unit>.json, and assembles the report's results from those files. A unit whose file
// holds the current fingerprint is never recomputed, so an interrupted run, or a share killed midway, loses at
// most the unit in progress; shares run as separate processes on separate machines write into one directory.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Tensor, tensor, tidy, noGrad, readAll, argmax, runtime } from '../index.js';
import { loadFashionMnist, resolveDataDir, type FashionMnistSplit } from '../data/idx.js';
import { loadModel } from '../models/store.js';
import { batchTensors } from '../models/train.js';
import { modelStructure, type LatentVariableClassifier } from '../models/factorisations.js';
import { bayesClassifier, type Classifier, type NoiseMode } from '../attacks/classifier.js';
import { fgsDirection, fgsStep, iterativeAttack, perturbationNorms } from '../attacks/gradient.js';
import { deepfool } from '../attacks/deepfool.js';
import { squareAttack } from '../attacks/square.js';
import { cw } from '../attacks/cw.js';
import { hopSkipJump } from '../attacks/hopskipjump.js';
import { adaptivePgd } from '../attacks/adaptive.js';
import { Substitute, trainSubstitute, trainAugmentedSubstitute, SUBSTITUTE_DEFAULTS, type JacobianAugmentation } from '../models/substitute.js';
import { fitDetectors, detectionReport, type Detectors, type DetectionReport } from '../attacks/detection.js';
import { writeFileAtomic } from '../fsutil.js';
import { Progress } from '../progress.js';
import { attackMetrics, type AttackMetrics, type ImageResults } from './metrics.js';
import { planStudy, unitsOfShard, assignShares, fingerprint, digest, variantKey, variantOf, describeVariant, type JobInfo, type Shard, type StudyPlan, type Unit } from './plan.js';
import type { AttackSpec, NoiseConfig, StudyConfig } from './config.js';

export interface JobResult {
  id: string;
  model: string;
  attack: AttackSpec['kind'];
  /** e.g. 'eps=0.1', 'p=2', 'FGS eps=0.05 crafted on dfz'. */
  setting: string;
  eps?: number;
  p?: number | 'inf';
  /** Adaptive attacks: the detector attacked and the penalty's weight. */
  detector?: string;
  lambda?: number;
  results: ImageResults;
  metrics: AttackMetrics;
  detection: DetectionReport;
  /** First few clean and adversarial images (784 values each) for the figure grid. */
  grid: { clean: number[][]; adversarial: number[][] };
  /** Index of its attack in the configuration. */
  spec: number;
  /** The classifier attacked: '' for the study's own, else its variant key ('fresh', 'eot20', 'indep', ...). */
  variant: string;
  /** Its noise and estimator in words. */
  classifier: string;
  /** Compute time of its units (a unit shared by an FGS sweep counts evenly towards each of its settings). */
  seconds: number;
  fingerprint: string;
}

export interface ModelSummary {
  model: string;
  factorisation: string;
  checkpoint: string;
  epoch: number;
  cleanAccuracy: number;
  cleanCount: number;
  detectors: Detectors;
  /** Clean accuracy as the other classifiers some attack faces (another noise or estimator), on the same images. */
  variants?: { key: string; classifier: string; cleanAccuracy: number; cleanCount: number }[];
  /** The black-box attacker's substitute CNN: how often it agrees with this model, on its training and test images. */
  substitutes?: { trainImages: number; epochs: number; trainAgreement: number; testAgreement: number; testImages: number; augment?: JacobianAugmentation & { images: number; queries: number } }[];
}

export interface StudyResult {
  config: StudyConfig;
  adapter: string;
  noiseMode: string;
  models: ModelSummary[];
  jobs: JobResult[];
  seconds: number;
}

export interface RunOptions {
  out: string;
  dataDir?: string;
  log: (s: string) => void;
}

/** What a unit's file holds for one job and block. */
interface AttackBlock {
  adversarialPredictions: number[];
  logits: number[];
  l2: number[];
  linf: number[];
  xNorm: number[];
  queries?: number[];
  grid: { clean: number[][]; adversarial: number[][] };
}

interface UnitFile {
  id: string;
  fingerprint: string;
  seconds: number;
  /** The adapter it was computed on (shares may run on different machines). */
  adapter: string;
  /** Clean units: logits [count, 10]. */
  logits?: number[];
  /** Attack units: per job. */
  jobs?: Record<string, AttackBlock>;
  /** Substitute units: the fitted weights, and how often it agrees with the victim. */
  substitute?: { trainAgreement: number; testAgreement: number; testImages: number; state: Record<string, number[]>; images?: number; queries?: number };
}

/**
 * The noise of a unit's classifier. Fixed noise is the study's seed everywhere (an image's draws follow its place
 * in its block); fresh draws come from a stream seeded per unit, so a unit's result does not depend on which other
 * units ran before it in the process.
 */
export function noiseMode(noise: NoiseConfig, cfg: StudyConfig, unitId: string): NoiseMode {
  if (noise.kind === 'fixed') return { kind: 'fixed', seed: cfg.seed };
  const seed = parseInt(digest(`${cfg.seed}/${unitId}`).slice(0, 8), 16);
  return noise.kind === 'fresh' ? { kind: 'fresh', seed } : { kind: 'expectation', seed, draws: noise.draws };
}

export function describeNoise(cfg: StudyConfig): string {
  const { noise } = cfg;
  return noise.kind === 'fixed'
    ? `fixed noise: every classifier call reuses the same z draws (seed ${cfg.seed})`
    : noise.kind === 'fresh'
      ? `fresh noise: every classifier call, in the attacks and in the final evaluation, draws anew (seed ${cfg.seed})`
      : `expectation over noise (EOT): fresh draws on every call, attack gradients averaged over ${noise.draws} of them (seed ${cfg.seed})`;
}

/**
 * The study hands every classifier call images from one block of `blockSize` consecutive images (its batches start
 * at multiples of it), and under fixed noise an image's z draws follow its place in that block: its clean logits,
 * an attack's queries on any subset, and its adversarial logits all see the same draws, whatever the batch size.
 */
export function inBlocks(clf: Classifier, blockSize: number): Classifier {
  return {
    ...clf,
    logits: (x, draw, replicas = 1, rows) => {
      const indices = rows?.indices ?? Array.from({ length: x.shape[0] / replicas }, (_, i) => i);
      return clf.logits(x, draw, replicas, { indices, of: blockSize });
    },
  };
}

const unitPath = (out: string, id: string) => join(out, 'jobs', `${id}.json`);

function readJson<T>(path: string): T | null {
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return null; // a stale or foreign file is recomputed
  }
}

function readUnit(out: string, unit: Unit): UnitFile | null {
  const file = readJson<UnitFile>(unitPath(out, unit.id));
  return file?.fingerprint === unit.fingerprint ? file : null;
}

/** argmax per row of logits [n, 10] (the first class on ties, as the GPU's argmax). */
function predictedClasses(logits: ArrayLike<number>): number[] {
  return Array.from({ length: logits.length / 10 }, (_, i) => {
    let best = 0;
    for (let c = 1; c < 10; c++) if (logits[i * 10 + c] > logits[i * 10 + best]) best = c;
    return best;
  });
}

const range = (start: number, count: number) => Array.from({ length: count }, (_, i) => start + i);

/** Adversarial images per job of an attack unit, for one block. */
async function craft(
  unit: Unit,
  spec: AttackSpec,
  jobs: JobInfo[],
  clf: Classifier,
  classifierOf: ClassifierFactory,
  x: Tensor,
  y: Tensor,
  cfg: StudyConfig,
  progress: (status: string) => void,
  ctx: UnitContext,
): Promise<{ adversarial: Tensor; queries?: ArrayLike<number> }[]> {
  const seed = cfg.seed * 1_000_003 + unit.block;
  switch (spec.kind) {
    case 'fgs':
    case 'transfer': {
      // Every eps of the sweep steps along the same sign of the gradient (the substitute's, for transfer).
      const direction = await fgsDirection(spec.kind === 'fgs' ? clf : classifierOf(spec.from, unit, 'substitute'), x, y);
      const out = jobs.map((j) => ({ adversarial: fgsStep(x, direction, j.eps!) }));
      direction.dispose();
      return out;
    }
    case 'pgd':
    case 'mim':
      return [
        {
          adversarial: await iterativeAttack(clf, x, y, {
            eps: jobs[0].eps!,
            norm: spec.kind === 'pgd' ? spec.norm : 'linf',
            stepSize: spec.stepSize,
            iterations: spec.iterations,
            randomStart: spec.kind === 'pgd' ? spec.randomStart : false,
            momentum: spec.kind === 'mim' ? spec.momentum : 0,
            seed,
          }),
        },
      ];
    case 'deepfool': {
      const p = jobs[0].p!;
      const onIteration = (it: number, active: number) => progress(`iteration ${it}/${spec.maxIterations}, ${active} images not yet flipped`);
      const variant = spec.variant === 'foolbox' ? { variant: 'foolbox' as const, ...(spec.candidates !== undefined ? { candidates: spec.candidates } : {}) } : {};
      return [{ adversarial: (await deepfool(clf, x, { p: p === 'inf' ? Infinity : p, maxIterations: spec.maxIterations, overshoot: spec.overshoot, onIteration, ...variant })).adversarial }];
    }
    case 'square': {
      const r = await squareAttack(clf, x, y, { norm: spec.norm, eps: jobs[0].eps!, queryBudget: spec.queryBudget, seed });
      return [{ adversarial: r.adversarial, queries: r.queries }];
    }
    case 'hopskipjump': {
      const r = await hopSkipJump(clf, x, y, { queryBudget: spec.queryBudget, seed, onIteration: (it, active) => progress(`iteration ${it}, ${active} images still querying`) });
      return [{ adversarial: r.adversarial, queries: r.queries }];
    }
    case 'substitute': {
      const sub = await ctx.substituteOf(unit.model, unit.specIndex!);
      const subClf: Classifier = { name: 'substitute', numClasses: 10, draws: 1, logits: (xs) => sub.logits(xs) };
      const job = jobs[0];
      if (job.method === 'cw') {
        const o = spec.cw!;
        return [{ adversarial: (await cw(subClf, x, y, { ...o, lr: 0.01, kappa: 0, onIteration: (st, it) => progress(`CW on the substitute, iteration ${it + 1}/${o.iterations}`) })).adversarial }];
      }
      const adversarial = await iterativeAttack(subClf, x, y, { eps: job.eps!, norm: 'linf', stepSize: spec.stepSize, iterations: spec.iterations, randomStart: job.method === 'pgd', momentum: job.method === 'mim' ? 1 : 0, seed });
      return [{ adversarial }];
    }
    case 'adaptive': {
      const detectors = await ctx.detectorsOf(unit.model);
      const lambda = jobs[0].lambda!;
      const adversarial = await adaptivePgd(clf, x, y, detectors, {
        detector: spec.detector, lambda, eps: spec.eps, iterations: spec.iterations, stepSize: spec.stepSize, margin: spec.margin, seed,
        onIteration: (it) => progress(`iteration ${it}/${spec.iterations}`),
      });
      return [{ adversarial }];
    }
    case 'cw': {
      const { iterations, lr, kappa, binarySearchSteps, initialConst, abortEarly } = spec;
      const r = await cw(clf, x, y, { iterations, lr, kappa, binarySearchSteps, initialConst, abortEarly, onIteration: (step, it) => progress(`search step ${step + 1}/${binarySearchSteps}, iteration ${it + 1}/${iterations}`) });
      return [{ adversarial: r.adversarial }];
    }
  }
}

/** What a unit may need beyond its own block: the fitted detectors, for attacks on them. */
interface UnitContext {
  detectorsOf: (model: string) => Promise<Detectors>;
  substituteOf: (model: string, specIndex: number) => Promise<Substitute>;
  /** Another unit's output: its file, or computed (and written) here. */
  outputOf: (unit: Unit) => Promise<UnitFile>;
  /** The study's own classifier's clean logits [n, 10] of the first n images of a split, from those units. */
  cleanLogitsOf: (model: string, kind: 'clean-test' | 'clean-train', n: number) => Promise<Float32Array>;
}

/** A unit's classifier of a model (its own, or a transfer substitute), with the unit's variant and noise stream. */
type ClassifierFactory = (model: string, unit: Unit, role?: 'substitute') => Classifier;

async function computeUnit(
  unit: Unit,
  plan: StudyPlan,
  cfg: StudyConfig,
  data: { test: FashionMnistSplit; train: FashionMnistSplit },
  classifierOf: ClassifierFactory,
  progress: (status: string) => void,
  ctx: UnitContext,
): Promise<UnitFile> {
  const started = performance.now();
  const clf = classifierOf(unit.model, unit);
  const rows = range(unit.start, unit.count);
  if (unit.kind === 'substitute') {
    const spec = cfg.attacks[unit.specIndex!] as Extract<AttackSpec, { kind: 'substitute' }>;
    // The victim labels the substitute's training images: its clean predictions on them, which the detector units already computed.
    const victimTrain = Int32Array.from(predictedClasses(await ctx.cleanLogitsOf(unit.model, 'clean-train', unit.count)));
    const seedImages = data.train.images.subarray(0, unit.count * 784);
    const subConfig = { ...SUBSTITUTE_DEFAULTS, epochs: spec.epochs, seed: cfg.seed };
    // Jacobian augmentation asks the victim (the unit's classifier) to label each new point: one query per image.
    const oracle = async (images: Float32Array) => {
      const labels: number[] = [];
      for (let start = 0; start < images.length / 784; start += cfg.batchSize) {
        const count = Math.min(cfg.batchSize, images.length / 784 - start);
        const x = tensor(images.subarray(start * 784, (start + count) * 784), [count, 1, 28, 28]);
        const l = noGrad(() => tidy(() => clf.logits(x, 0)));
        const [v] = await readAll([l]);
        l.dispose();
        x.dispose();
        labels.push(...predictedClasses(v));
      }
      return Int32Array.from(labels);
    };
    const fit = spec.augment
      ? await trainAugmentedSubstitute(seedImages, victimTrain, oracle, subConfig, spec.augment, (round, images, e) =>
          progress(`training the substitute, augmentation round ${round}/${spec.augment!.rounds} (${images} images), epoch ${e}/${spec.epochs}`),
        )
      : { ...(await trainSubstitute(seedImages, victimTrain, subConfig, (e) => progress(`training the substitute, epoch ${e}/${spec.epochs}`))), images: unit.count, queries: 0 };
    const { model, trainAgreement } = fit;
    const victimTest = predictedClasses(await ctx.cleanLogitsOf(unit.model, 'clean-test', cfg.subset));
    let agree = 0;
    for (let start = 0; start < cfg.subset; start += cfg.batchSize) {
      const rows = range(start, Math.min(cfg.batchSize, cfg.subset - start));
      const pred = noGrad(() => tidy(() => argmax(model.logits(batchTensors(data.test, rows).x))));
      const [p] = await readAll([pred]);
      pred.dispose();
      rows.forEach((r, i) => (agree += +(p[i] === victimTest[r])));
    }
    const state = await model.params.state();
    model.params.dispose();
    return {
      id: unit.id, fingerprint: unit.fingerprint, seconds: (performance.now() - started) / 1000, adapter: runtime().description,
      substitute: { trainAgreement, testAgreement: agree / cfg.subset, testImages: cfg.subset, state: Object.fromEntries(Object.entries(state).map(([k, v]) => [k, Array.from(v)])), images: fit.images, queries: fit.queries },
    };
  }
  if (unit.kind !== 'attack') {
    const split = unit.kind === 'clean-test' ? data.test : data.train;
    const l = noGrad(() => tidy(() => clf.logits(batchTensors(split, rows).x, 0)));
    const logits = Array.from(await l.data());
    l.dispose();
    return { id: unit.id, fingerprint: unit.fingerprint, seconds: (performance.now() - started) / 1000, adapter: runtime().description, logits };
  }
  const spec = cfg.attacks[unit.specIndex!];
  const jobs = unit.jobIds.map((id) => plan.jobs.find((j) => j.id === id)!);
  const { x, y } = batchTensors(data.test, rows);
  const crafted = await craft(unit, spec, jobs, clf, classifierOf, x, y, cfg, progress, ctx);
  const out: Record<string, AttackBlock> = {};
  const gridRows = Math.max(0, Math.min(unit.count, cfg.gridImages - unit.start));
  for (const [k, job] of jobs.entries()) {
    const { adversarial, queries } = crafted[k];
    const logits = noGrad(() => tidy(() => clf.logits(adversarial, 0)));
    const pred = argmax(logits);
    const [l, p] = await readAll([logits, pred]);
    const norms = await perturbationNorms(x, adversarial);
    const grid: AttackBlock['grid'] = { clean: [], adversarial: [] };
    if (gridRows > 0) {
      const [xs, as] = await readAll([x, adversarial]);
      for (let i = 0; i < gridRows; i++) {
        grid.clean.push(Array.from(xs.subarray(i * 784, (i + 1) * 784)));
        grid.adversarial.push(Array.from(as.subarray(i * 784, (i + 1) * 784)));
      }
    }
    out[job.id] = {
      adversarialPredictions: Array.from(p),
      logits: Array.from(l),
      l2: Array.from(norms.l2),
      linf: Array.from(norms.linf),
      xNorm: Array.from(norms.x2),
      ...(queries ? { queries: Array.from(queries) } : {}),
      grid,
    };
    for (const t of [adversarial, logits, pred]) t.dispose();
  }
  x.dispose();
  y.dispose();
  return { id: unit.id, fingerprint: unit.fingerprint, seconds: (performance.now() - started) / 1000, adapter: runtime().description, jobs: out };
}

/** Computes the given units of the plan that have no current file; returns how many were computed and reused. */
export async function runUnits(cfg: StudyConfig, plan: StudyPlan, units: Unit[], opts: RunOptions & { label?: string }): Promise<{ computed: number; cached: number }> {
  const pending = units.filter((u) => !readUnit(opts.out, u));
  const cached = units.length - pending.length;
  opts.log(`${opts.label ?? 'study'}: ${units.length} units of work, ${cached} already done, ${pending.length} to compute`);
  if (pending.length === 0) return { computed: 0, cached };
  const dir = resolveDataDir(opts.dataDir);
  const data = { test: loadFashionMnist({ dir, split: 'test' }), train: loadFashionMnist({ dir, split: 'train' }) };
  // Load only the models this share attacks, and the substitutes its transfer units craft on.
  const needed = new Set(pending.flatMap((u) => {
    const spec = u.specIndex === undefined ? undefined : cfg.attacks[u.specIndex];
    return spec?.kind === 'transfer' ? [u.model, spec.from] : [u.model];
  }));
  const loaded = new Map<string, LatentVariableClassifier>();
  for (const m of plan.models.filter((m) => needed.has(m.name))) loaded.set(m.name, loadModel(m.checkpoint, { model: m.name, preset: cfg.preset }).model);
  const classifierOf: ClassifierFactory = (model, unit, role) =>
    inBlocks(bayesClassifier(loaded.get(model)!, { samples: cfg.samples, noise: noiseMode(unit.variant.noise, cfg, role ? `${unit.id}/${role}` : unit.id), estimator: unit.variant.estimator }), cfg.batchSize);
  // Attacks on the detectors need them fitted: from the clean training units' files, computing (and writing) any
  // that are missing, so a share that holds such an attack does not wait on another share.
  const fitted = new Map<string, Detectors>();
  const substitutes = new Map<string, Substitute>();
  const ctx: UnitContext = {
    outputOf: async (u) => {
      let file = readUnit(opts.out, u);
      if (!file) {
        file = await computeUnit(u, plan, cfg, data, classifierOf, () => {}, ctx);
        writeFileAtomic(unitPath(opts.out, u.id), JSON.stringify(file));
      }
      return file;
    },
    cleanLogitsOf: async (model, kind, n) => {
      const own = variantKey(variantOf(undefined, cfg));
      const out = new Float32Array(n * 10);
      for (const u of plan.units.filter((u) => u.model === model && u.kind === kind && variantKey(u.variant) === own && u.start < n)) {
        out.set((await ctx.outputOf(u)).logits!.slice(0, (n - u.start) * 10), u.start * 10);
      }
      return out;
    },
    detectorsOf: async (model) => {
      if (!fitted.has(model)) {
        const logits = await ctx.cleanLogitsOf(model, 'clean-train', cfg.detection.trainImages);
        fitted.set(model, fitDetectors({ logits, labels: data.train.labels.subarray(0, cfg.detection.trainImages), numClasses: 10 }, { falsePositiveRate: cfg.detection.falsePositiveRate }));
      }
      return fitted.get(model)!;
    },
    substituteOf: async (model, specIndex) => {
      const key = `${model}/${specIndex}`;
      if (!substitutes.has(key)) {
        const unit = plan.units.find((u) => u.kind === 'substitute' && u.model === model && u.specIndex === specIndex)!;
        const file = await ctx.outputOf(unit);
        const spec = cfg.attacks[specIndex] as Extract<AttackSpec, { kind: 'substitute' }>;
        const sub = new Substitute({ ...SUBSTITUTE_DEFAULTS, epochs: spec.epochs, seed: cfg.seed });
        sub.params.loadState(Object.fromEntries(Object.entries(file.substitute!.state).map(([k, v]) => [k, Float32Array.from(v)])));
        substitutes.set(key, sub);
      }
      return substitutes.get(key)!;
    },
  };
  try {
    // The bar counts estimated work (gradient-equivalents), not images: a DeepFool image costs fifty FGS ones, and
    // an ETA from images would be off by that much.
    const work = (u: Unit) => Math.max(1, Math.round(u.cost));
    const images = pending.reduce((a, u) => a + u.count, 0);
    const bar = new Progress({ total: pending.reduce((a, u) => a + work(u), 0), label: opts.label ?? 'study', unit: 'grad' });
    let done = 0;
    for (const unit of pending) {
      bar.setStatus(`${done}/${images} img, ${unit.id}`);
      // Iterative attacks report inside the block: DeepFool and CW may iterate for minutes on one.
      const within = (status: string) => bar.setStatus(`${done}/${images} img, ${unit.id}: ${status}`);
      writeFileAtomic(unitPath(opts.out, unit.id), JSON.stringify(await computeUnit(unit, plan, cfg, data, classifierOf, within, ctx)));
      done += unit.count;
      bar.tick(work(unit), `${done}/${images} img`);
    }
    bar.finish();
  } finally {
    for (const model of loaded.values()) model.dispose();
    for (const sub of substitutes.values()) sub.params.dispose();
  }
  return { computed: pending.length, cached };
}

const shardRecordPath = (out: string, shard: Shard) => join(out, 'jobs', `shard-${shard.index}-of-${shard.count}.json`);

/** Runs one share of the study; the last share to finish finds every unit present and says so. */
export async function runShare(cfg: StudyConfig, shard: Shard, opts: RunOptions): Promise<{ computed: number; cached: number; units: number; missing: number }> {
  const plan = planStudy(cfg);
  const units = unitsOfShard(plan, shard);
  const r = await runUnits(cfg, plan, units, { ...opts, label: `share ${shard.index}/${shard.count}` });
  writeFileAtomic(shardRecordPath(opts.out, shard), JSON.stringify({ plan: plan.fingerprint, units: units.map((u) => u.id), finishedAt: new Date().toISOString() }));
  const missing = plan.units.filter((u) => !readUnit(opts.out, u)).length;
  return { ...r, units: units.length, missing };
}

/** Units of the study are missing: names how many, and which shares (of the share counts seen so far) owe them. */
export class IncompleteStudyError extends Error {
  constructor(readonly missing: string[], detail: string) {
    super(`the study is incomplete: ${missing.length} units of work have no results yet (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''})${detail}`);
  }
}

/** The shares that have finished in <out>, with the plan each ran. */
function shardRecords(out: string): { index: number; count: number; plan: string }[] {
  if (!existsSync(join(out, 'jobs'))) return [];
  return readdirSync(join(out, 'jobs')).flatMap((f) => {
    const m = /^shard-(\d+)-of-(\d+)\.json$/.exec(f);
    const rec = m ? readJson<{ plan: string }>(join(out, 'jobs', f)) : null;
    return m && rec ? [{ index: Number(m[1]), count: Number(m[2]), plan: rec.plan }] : [];
  });
}

/** Fingerprints of the plans finished shares ran. */
export function shardPlans(out: string): Set<string> {
  return new Set(shardRecords(out).map((r) => r.plan));
}

function describeMissing(plan: StudyPlan, missing: Set<string>, out: string): string {
  const records = shardRecords(out).filter((r) => r.plan === plan.fingerprint);
  if (records.length === 0) return '; run `experiment` (all of it) or its shares (`experiment --shard I/N`) first';
  const parts = [...new Set(records.map((r) => r.count))].sort((a, b) => a - b).map((n) => {
    const share = assignShares(plan.units, n);
    const owing = [...new Set(plan.units.flatMap((u, k) => (missing.has(u.id) ? [share[k]] : [])))].sort((a, b) => a - b);
    const finished = (i: number) => records.some((r) => r.index === i && r.count === n);
    return `of ${n} shares, ${owing.map((i) => `${i}/${n}${finished(i) ? ' (finished, but files are missing: rerun it)' : ''}`).join(', ')} still owe results`;
  });
  return `; ${parts.join('; ')}. Run those shares (\`experiment --shard I/N\`), or a plain \`experiment\` to compute what is missing here`;
}

/** Builds the study's results from the unit files, which must all be present (else IncompleteStudyError). */
export function assembleStudy(cfg: StudyConfig, plan: StudyPlan, opts: RunOptions & { started?: number }): StudyResult {
  const t0 = opts.started ?? performance.now();
  const files = new Map<string, UnitFile>();
  const missing = new Set<string>();
  for (const u of plan.units) {
    const f = readUnit(opts.out, u);
    if (f) files.set(u.id, f);
    else missing.add(u.id);
  }
  if (missing.size) throw new IncompleteStudyError([...missing], describeMissing(plan, missing, opts.out));
  const dir = resolveDataDir(opts.dataDir);
  const test = loadFashionMnist({ dir, split: 'test' });
  const train = loadFashionMnist({ dir, split: 'train' });
  const unitsOf = (model: string, pred: (u: Unit) => boolean) => plan.units.filter((u) => u.model === model && pred(u)).sort((a, b) => a.start - b.start);
  const models: ModelSummary[] = [];
  const jobs: JobResult[] = [];
  for (const m of plan.models.filter((m) => m.studied)) {
    // Clean predictions and detectors of each classifier (variant) this model is attacked as.
    // Detectors are fitted once, on the study's own classifier; other classifiers have clean test logits of their own.
    const ownKey = variantKey(variantOf(undefined, cfg));
    const logitsOf = (kind: Unit['kind'], key: string) => {
      const units = unitsOf(m.name, (u) => u.kind === kind && variantKey(u.variant) === key);
      const n = units.reduce((a, u) => a + u.count, 0);
      const out = new Float32Array(n * 10);
      for (const u of units) out.set(files.get(u.id)!.logits!, u.start * 10);
      return { logits: out, n };
    };
    const detectors = fitDetectors(
      { logits: logitsOf('clean-train', ownKey).logits, labels: train.labels.subarray(0, cfg.detection.trainImages), numClasses: 10 },
      { falsePositiveRate: cfg.detection.falsePositiveRate },
    );
    const clean = new Map<string, { logits: Float32Array; predictions: number[]; accuracy: number; count: number }>();
    for (const key of new Set(unitsOf(m.name, (u) => u.kind === 'clean-test').map((u) => variantKey(u.variant)))) {
      const { logits, n } = logitsOf('clean-test', key);
      const predictions = predictedClasses(logits);
      clean.set(key, { logits, predictions, accuracy: predictions.filter((p, i) => p === test.labels[i]).length / n, count: n });
    }
    const own = clean.get(ownKey)!;
    const variants = [...clean].filter(([key]) => key !== ownKey);
    const variantOfKey = (key: string) => plan.units.find((u) => variantKey(u.variant) === key)!.variant;
    models.push({
      model: m.name,
      factorisation: modelStructure(m.name).factorisation,
      checkpoint: m.checkpoint,
      epoch: m.epoch,
      cleanAccuracy: own.accuracy,
      cleanCount: cfg.subset,
      detectors,
      ...(variants.length ? { variants: variants.map(([key, c]) => ({ key, classifier: describeVariant(variantOfKey(key)), cleanAccuracy: c.accuracy, cleanCount: c.count })) } : {}),
    });
    const subs = unitsOf(m.name, (u) => u.kind === 'substitute').map((u) => {
      const spec = cfg.attacks[u.specIndex!] as Extract<AttackSpec, { kind: 'substitute' }>;
      const f = files.get(u.id)!.substitute!;
      const augment = spec.augment ? { augment: { ...spec.augment, images: f.images!, queries: f.queries! } } : {};
      return { trainImages: spec.train, epochs: spec.epochs, trainAgreement: f.trainAgreement, testAgreement: f.testAgreement, testImages: f.testImages, ...augment };
    });
    if (subs.length) models[models.length - 1].substitutes = subs;
    opts.log(`${m.name} (${modelStructure(m.name).factorisation}, epoch ${m.epoch}): clean accuracy ${(100 * own.accuracy).toFixed(2)}% on ${cfg.subset} test images`);

    for (const job of plan.jobs.filter((j) => j.model === m.name)) {
      const { logits: cleanLogits, predictions: cleanPred } = clean.get(variantKey(job.variant))!;
      const units = unitsOf(m.name, (u) => u.jobIds.includes(job.id));
      const results: ImageResults = { labels: [], cleanPredictions: [], adversarialPredictions: [], l2: [], linf: [], xNorm: [] };
      const queries: number[] = [];
      const advLogits = new Float32Array(job.subset * 10);
      const grid: JobResult['grid'] = { clean: [], adversarial: [] };
      let seconds = 0;
      for (const u of units) {
        const file = files.get(u.id)!;
        const b = file.jobs![job.id];
        seconds += file.seconds / u.jobIds.length;
        advLogits.set(b.logits, u.start * 10);
        grid.clean.push(...b.grid.clean);
        grid.adversarial.push(...b.grid.adversarial);
        for (let i = 0; i < u.count; i++) {
          const r = u.start + i;
          results.labels.push(test.labels[r]);
          results.cleanPredictions.push(cleanPred[r]);
          results.adversarialPredictions.push(b.adversarialPredictions[i]);
          results.l2.push(b.l2[i]);
          results.linf.push(b.linf[i]);
          results.xNorm.push(b.xNorm[i]);
          if (b.queries) queries.push(b.queries[i]);
        }
      }
      if (queries.length) results.queries = queries;
      const metrics = attackMetrics(results);
      const detection = detectionReport(detectors, {
        cleanLogits: cleanLogits.subarray(0, job.subset * 10),
        cleanLabels: Int32Array.from(results.labels),
        adversarialLogits: advLogits,
        adversarialLabels: Int32Array.from(results.labels),
        sourceCorrect: results.labels.map((y, i) => results.cleanPredictions[i] === y),
      });
      jobs.push({
        id: job.id, model: m.name, attack: job.attack, setting: job.setting, eps: job.eps, p: job.p, spec: job.specIndex,
        ...(job.lambda !== undefined ? { lambda: job.lambda, detector: (cfg.attacks[job.specIndex] as { detector: string }).detector } : {}),
        variant: variantKey(job.variant) === variantKey(variantOf(undefined, cfg)) ? '' : variantKey(job.variant) || 'fixed',
        classifier: describeVariant(job.variant),
        results, metrics, detection, grid, seconds, fingerprint: fingerprint(units.map((u) => u.fingerprint)),
      });
      const fmt = (v: number | null, scale = 1, digits = 3) => (v === null ? '–' : (v * scale).toFixed(digits));
      opts.log(
        `${job.id}: accuracy ${(100 * metrics.adversarialAccuracy).toFixed(1)}%, success ${fmt(metrics.successRate, 100, 1)}%, ` +
          `median L2 ${fmt(metrics.l2.median)}, rho ${fmt(metrics.rhoSuccessful)} (${seconds.toFixed(0)} s)`,
      );
    }
  }
  const adapters = [...new Set([...files.values()].map((f) => f.adapter))].sort();
  return { config: cfg, adapter: adapters.join('; '), noiseMode: describeNoise(cfg), models, jobs, seconds: (performance.now() - t0) / 1000 };
}

/** The whole study in this process: every missing unit, then the results. */
export async function runStudy(cfg: StudyConfig, opts: RunOptions): Promise<StudyResult> {
  const t0 = performance.now();
  const plan = planStudy(cfg);
  await runUnits(cfg, plan, plan.units, opts);
  return assembleStudy(cfg, plan, { ...opts, started: t0 });
}
