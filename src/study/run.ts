// The study runner: models x attacks x detectors. Every (model, attack, parameter) job writes its per-image
// results atomically to <out>/jobs/, so an interrupted run resumes where it stopped (jobs whose config
// fingerprint matches are loaded, not recomputed).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { Tensor, tidy, noGrad, readAll, argmax, runtime, keep } from '../index.js';
import { loadFashionMnist, resolveDataDir, type FashionMnistSplit } from '../data/idx.js';
import { loadModel } from '../models/store.js';
import { batchTensors } from '../models/train.js';
import { LOGITS_ESTIMATOR, type LatentVariableClassifier } from '../models/factorisations.js';
import { bayesClassifier, type Classifier, type NoiseMode } from '../attacks/classifier.js';
import { fgsDirection, fgsStep, iterativeAttack, perturbationNorms } from '../attacks/gradient.js';
import { deepfool } from '../attacks/deepfool.js';
import { squareAttack } from '../attacks/square.js';
import { fitDetectors, detectionReport, type Detectors, type DetectionReport } from '../attacks/detection.js';
import { writeFileAtomic } from '../fsutil.js';
import { Progress } from '../progress.js';
import { attackMetrics, type AttackMetrics, type ImageResults } from './metrics.js';
import type { AttackSpec, StudyConfig } from './config.js';

export interface JobResult {
  id: string;
  model: string;
  attack: AttackSpec['kind'];
  /** e.g. 'eps=0.1', 'p=2', 'eps=0.05 from dfz'. */
  setting: string;
  eps?: number;
  p?: number | 'inf';
  results: ImageResults;
  metrics: AttackMetrics;
  detection: DetectionReport;
  /** First few clean and adversarial images (784 values each) for the figure grid. */
  grid: { clean: number[][]; adversarial: number[][] };
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
}

export interface StudyResult {
  config: StudyConfig;
  adapter: string;
  noiseMode: string;
  models: ModelSummary[];
  jobs: JobResult[];
  seconds: number;
}

const digest = (data: string | Buffer) => createHash('sha256').update(data).digest('hex').slice(0, 16);
const fingerprint = (v: unknown) => digest(JSON.stringify(v));

/** One parameter setting of an attack spec, ready to run on a batch. */
interface Job {
  id: string;
  attack: AttackSpec['kind'];
  setting: string;
  eps?: number;
  p?: number | 'inf';
  subset: number;
  craft: (x: Tensor, y: Tensor, batch: number) => Promise<{ adversarial: Tensor; queries?: ArrayLike<number> }>;
}

function jobsFor(model: string, clf: Classifier, spec: AttackSpec, cfg: StudyConfig, classifiers: Map<string, Classifier>): Job[] {
  const subset = Math.min(spec.subset ?? cfg.subset, cfg.subset);
  const seedOf = (batch: number) => cfg.seed * 1_000_003 + batch;
  // FGS sweeps share one gradient per batch: directions are kept until the sweep's last eps has used them.
  const fgsSweep = (source: Classifier, eps: number[]) => {
    const directions = new Map<number, Tensor>();
    return (e: number) => async (x: Tensor, y: Tensor, batch: number) => {
      let direction = directions.get(batch);
      if (!direction) directions.set(batch, (direction = keep(await fgsDirection(source, x, y))));
      const adversarial = fgsStep(x, direction, e);
      if (e === eps[eps.length - 1]) {
        direction.dispose();
        directions.delete(batch);
      }
      return { adversarial };
    };
  };
  switch (spec.kind) {
    case 'fgs': {
      const sweep = fgsSweep(clf, spec.eps);
      return spec.eps.map((eps) => ({ id: `${model}-fgs-eps${eps}`, attack: 'fgs', setting: `eps=${eps}`, eps, subset, craft: sweep(eps) }));
    }
    case 'pgd':
    case 'mim':
      return spec.eps.map((eps) => ({
        id: `${model}-${spec.kind}-${spec.kind === 'pgd' ? spec.norm : 'linf'}-eps${eps}`,
        attack: spec.kind,
        setting: `eps=${eps}${spec.kind === 'pgd' ? ` ${spec.norm}` : ''}, ${spec.iterations} it`,
        eps,
        subset,
        craft: async (x, y, batch) => ({
          adversarial: await iterativeAttack(clf, x, y, {
            eps,
            norm: spec.kind === 'pgd' ? spec.norm : 'linf',
            stepSize: spec.stepSize,
            iterations: spec.iterations,
            randomStart: spec.kind === 'pgd' ? spec.randomStart : false,
            momentum: spec.kind === 'mim' ? spec.momentum : 0,
            seed: seedOf(batch),
          }),
        }),
      }));
    case 'deepfool':
      return spec.p.map((p) => ({
        id: `${model}-deepfool-p${p}`,
        attack: 'deepfool',
        setting: `p=${p === 'inf' ? '∞' : p}`,
        p,
        subset,
        craft: async (x) => ({ adversarial: (await deepfool(clf, x, { p: p === 'inf' ? Infinity : p, maxIterations: spec.maxIterations, overshoot: spec.overshoot })).adversarial }),
      }));
    case 'square':
      return spec.eps.map((eps) => ({
        id: `${model}-square-${spec.norm}-eps${eps}`,
        attack: 'square',
        setting: `eps=${eps} ${spec.norm}, ${spec.queryBudget} queries`,
        eps,
        subset,
        craft: async (x, y, batch) => {
          const r = await squareAttack(clf, x, y, { norm: spec.norm, eps, queryBudget: spec.queryBudget, seed: seedOf(batch) });
          return { adversarial: r.adversarial, queries: r.queries };
        },
      }));
    case 'transfer': {
      const substitute = classifiers.get(spec.from);
      if (model === spec.from || !substitute) return [];
      const sweep = fgsSweep(substitute, spec.eps);
      return spec.eps.map((eps) => ({
        id: `${model}-transfer-from-${spec.from}-eps${eps}`,
        attack: 'transfer',
        setting: `FGS eps=${eps} crafted on ${spec.from}`,
        eps,
        subset,
        craft: sweep(eps),
      }));
    }
  }
}

export function noiseMode(cfg: StudyConfig): NoiseMode {
  return cfg.noise.kind === 'fixed' ? { kind: 'fixed', seed: cfg.seed } : { kind: 'expectation', seed: cfg.seed, draws: cfg.noise.draws };
}

export function describeNoise(cfg: StudyConfig): string {
  return cfg.noise.kind === 'fixed'
    ? `fixed noise: every classifier call reuses the same z draws (seed ${cfg.seed})`
    : `expectation over noise: attack gradients averaged over ${cfg.noise.draws} fresh draws per step`;
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

/** Logits [n, 10] of the first n images of a split, in batches. */
async function logitsOf(clf: Classifier, data: FashionMnistSplit, n: number, batchSize: number, bar?: Progress): Promise<Float32Array> {
  const out = new Float32Array(n * 10);
  for (let start = 0; start < n; start += batchSize) {
    const rows = Array.from({ length: Math.min(batchSize, n - start) }, (_, i) => start + i);
    const l = noGrad(() => tidy(() => clf.logits(batchTensors(data, rows).x, 0)));
    out.set(await l.data(), start * 10);
    l.dispose();
    bar?.tick(rows.length);
  }
  return out;
}

function predictionsOf(logits: ArrayLike<number>, n: number): number[] {
  return Array.from({ length: n }, (_, i) => {
    let best = 0;
    for (let c = 1; c < 10; c++) if (logits[i * 10 + c] > logits[i * 10 + best]) best = c;
    return best;
  });
}

const fmtMaybe = (v: number | null, scale = 1, digits = 3) => (v === null ? '–' : (v * scale).toFixed(digits));

function readJson<T>(path: string): T | null {
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return null; // a stale or foreign file is recomputed
  }
}

export async function runStudy(cfg: StudyConfig, opts: { out: string; dataDir?: string; log: (s: string) => void }): Promise<StudyResult> {
  const t0 = performance.now();
  const jobsDir = join(opts.out, 'jobs');
  const dir = resolveDataDir(opts.dataDir);
  const test = loadFashionMnist({ dir, split: 'test' });
  const train = loadFashionMnist({ dir, split: 'train' });
  const loaded = new Map<string, { model: LatentVariableClassifier; checkpoint: string; epoch: number }>();
  const classifiers = new Map<string, Classifier>();
  const substitutes = cfg.attacks.flatMap((a) => (a.kind === 'transfer' ? [a.from] : []));
  for (const name of new Set([...cfg.models, ...substitutes])) {
    const checkpoint = join(cfg.checkpoints, `${name}-${cfg.preset}.safetensors`);
    if (!existsSync(checkpoint)) throw new Error(`no checkpoint for model '${name}' at ${checkpoint}: train it with \`npx tsx src/cli.ts train --model ${name} --preset ${cfg.preset}\``);
    const { model, meta } = loadModel(checkpoint, { model: name, preset: cfg.preset });
    loaded.set(name, { model, checkpoint, epoch: meta.epoch });
    classifiers.set(name, inBlocks(bayesClassifier(model, { samples: cfg.samples, noise: noiseMode(cfg) }), cfg.batchSize));
  }

  const weights = Object.fromEntries([...loaded].map(([name, { checkpoint }]) => [name, digest(readFileSync(checkpoint))]));
  const models: ModelSummary[] = [];
  const jobs: JobResult[] = [];
  for (const name of cfg.models) {
    const { model, checkpoint, epoch } = loaded.get(name)!;
    const clf = classifiers.get(name)!;
    // Cached results are reused only for the same weights (this model's and any transfer substitute's) and estimator.
    const base = { model: name, checkpoint, epoch, weights, estimator: LOGITS_ESTIMATOR, samples: cfg.samples, noise: cfg.noise, seed: cfg.seed, batchSize: cfg.batchSize };

    // Clean logits of the attacked images and detector statistics from training images, cached like the jobs.
    const cleanPath = join(jobsDir, `${name}-clean.json`);
    const cleanKey = fingerprint({ ...base, subset: cfg.subset, detection: cfg.detection });
    let clean = readJson<{ fingerprint: string; logits: number[]; detectors: Detectors }>(cleanPath);
    if (clean?.fingerprint !== cleanKey) {
      const bar = new Progress({ total: cfg.subset + cfg.detection.trainImages, label: `${name}: clean logits`, unit: 'img' });
      const testLogits = await logitsOf(clf, test, cfg.subset, cfg.batchSize, bar);
      const trainLogits = await logitsOf(clf, train, cfg.detection.trainImages, cfg.batchSize, bar);
      bar.finish();
      const detectors = fitDetectors(
        { logits: trainLogits, labels: train.labels.subarray(0, cfg.detection.trainImages), numClasses: 10 },
        { falsePositiveRate: cfg.detection.falsePositiveRate },
      );
      clean = { fingerprint: cleanKey, logits: Array.from(testLogits), detectors };
      writeFileAtomic(cleanPath, JSON.stringify(clean));
    }
    const cleanLogits = Float32Array.from(clean.logits);
    const cleanPred = predictionsOf(cleanLogits, cfg.subset);
    const cleanAccuracy = cleanPred.filter((p, i) => p === test.labels[i]).length / cfg.subset;
    models.push({ model: name, factorisation: model.factorisation, checkpoint, epoch, cleanAccuracy, cleanCount: cfg.subset, detectors: clean.detectors });
    opts.log(`${name} (${model.factorisation}, epoch ${epoch}): clean accuracy ${(100 * cleanAccuracy).toFixed(2)}% on ${cfg.subset} test images`);

    for (const spec of cfg.attacks) {
      for (const job of jobsFor(name, clf, spec, cfg, classifiers)) {
        const path = join(jobsDir, `${job.id}.json`);
        const key = fingerprint({ ...base, spec, id: job.id, subset: job.subset, gridImages: cfg.gridImages, cleanKey });
        const cached = readJson<JobResult>(path);
        if (cached?.fingerprint === key) {
          jobs.push(cached);
          opts.log(`${job.id}: cached`);
          continue;
        }
        const started = performance.now();
        const bar = new Progress({ total: job.subset, label: `${name} ${job.attack} ${job.setting}`, unit: 'img' });
        const results: ImageResults = { labels: [], cleanPredictions: [], adversarialPredictions: [], l2: [], linf: [], xNorm: [] };
        const queries: number[] = [];
        const advLogits = new Float32Array(job.subset * 10);
        const grid: JobResult['grid'] = { clean: [], adversarial: [] };
        for (let start = 0, batch = 0; start < job.subset; start += cfg.batchSize, batch++) {
          const rows = Array.from({ length: Math.min(cfg.batchSize, job.subset - start) }, (_, i) => start + i);
          const { x, y } = batchTensors(test, rows);
          const { adversarial, queries: q } = await job.craft(x, y, batch);
          const logits = noGrad(() => tidy(() => clf.logits(adversarial, 0)));
          const pred = argmax(logits);
          const [l, p] = await readAll([logits, pred]);
          advLogits.set(l, start * 10);
          const norms = await perturbationNorms(x, adversarial);
          if (grid.clean.length < cfg.gridImages) {
            const [xs, as] = await readAll([x, adversarial]);
            for (let i = 0; i < rows.length && grid.clean.length < cfg.gridImages; i++) {
              grid.clean.push(Array.from(xs.subarray(i * 784, (i + 1) * 784)));
              grid.adversarial.push(Array.from(as.subarray(i * 784, (i + 1) * 784)));
            }
          }
          rows.forEach((r, i) => {
            results.labels.push(test.labels[r]);
            results.cleanPredictions.push(cleanPred[r]);
            results.adversarialPredictions.push(p[i]);
            results.l2.push(norms.l2[i]);
            results.linf.push(norms.linf[i]);
            results.xNorm.push(norms.x2[i]);
            if (q) queries.push(q[i]);
          });
          for (const t of [x, y, adversarial, logits, pred]) t.dispose();
          bar.tick(rows.length);
        }
        bar.finish();
        if (queries.length) results.queries = queries;
        const metrics = attackMetrics(results);
        const detection = detectionReport(clean.detectors, {
          cleanLogits: cleanLogits.subarray(0, job.subset * 10),
          cleanLabels: Int32Array.from(results.labels),
          adversarialLogits: advLogits,
          adversarialLabels: Int32Array.from(results.labels),
          sourceCorrect: results.labels.map((y, i) => results.cleanPredictions[i] === y),
        });
        const result: JobResult = { id: job.id, model: name, attack: job.attack, setting: job.setting, eps: job.eps, p: job.p, results, metrics, detection, grid, seconds: (performance.now() - started) / 1000, fingerprint: key };
        writeFileAtomic(path, JSON.stringify(result));
        jobs.push(result);
        opts.log(
          `${job.id}: accuracy ${(100 * metrics.adversarialAccuracy).toFixed(1)}%, success ${fmtMaybe(metrics.successRate, 100, 1)}%, ` +
            `median L2 ${fmtMaybe(metrics.l2.median)}, rho ${fmtMaybe(metrics.rhoSuccessful)} (${result.seconds.toFixed(0)} s)`,
        );
      }
    }
  }
  for (const { model } of loaded.values()) model.params.dispose();
  return { config: cfg, adapter: runtime().description, noiseMode: describeNoise(cfg), models, jobs, seconds: (performance.now() - t0) / 1000 };
}
