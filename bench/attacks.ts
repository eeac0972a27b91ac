// Attack benchmark: FGS and DeepFool against GFZ and DFZ (compact preset, Bayes-rule logits with K = 10 samples
// per class, fixed noise), this engine (src/attacks) against the same attacks on the TensorFlow.js peer models
// (bench/peer/tfjs-attacks.ts, bench/peer/tfjs-models.ts) on TensorFlow.js's WebGPU backend, in the same
// process on the same Dawn adapter.
//
//   npm run bench:attacks -- [--images N] [--iterations N] [--fgs-batch N] [--reps N] [--only S]... [--json PATH]
//
// fgs:      one FGS step (eps 0.1) on a batch: forward, backward to the images, sign step, read back.
// deepfool: DeepFool (p = 2, overshoot 0.02) on --images images for exactly --iterations steps. Each iteration
//           evaluates the gradients of all 10 class logits of every image in one backward pass (the batch
//           replicated 10 times), as src/attacks/deepfool.ts does. For equal work on both engines no image may
//           flip early, so both classifiers get the same constant added to logit 0 ("pinned"): it changes neither
//           the gradients nor the cost, only keeps the prediction at class 0, so every run does iterations + 1
//           gradient passes (the last one only checks for flips) on all images. The step sizes it produces are
//           meaningless; the time is that of a real DeepFool run that needs that many iterations.
// --natural adds an ours-only DeepFool run without the pin (up to --max-iterations), the throughput a study sees.
// Our models load checkpoints/<m>-compact.safetensors when present (else random weights, as the peer always has).
// Images are the first Fashion-MNIST test images when the data is present, else random. Times are medians of the
// timed runs after warm-up; ratio = tfjs_webgpu_ms / ours_ms (> 1: ours is faster). Nothing here asserts a speed.
import { existsSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { shutdown, tidy, noGrad, tensor, add, randomNormal } from '../src/index.js';
import { createModel, modelConfig, type LatentVariableClassifier } from '../src/models/factorisations.js';
import { loadModel } from '../src/models/store.js';
import { bayesClassifier, type Classifier } from '../src/attacks/classifier.js';
import { fgs } from '../src/attacks/gradient.js';
import { deepfool } from '../src/attacks/deepfool.js';
import { loadFashionMnist } from '../src/data/idx.js';
import { createPeerModel, importOurWeights, type PeerModelName } from './peer/tfjs-models.js';
import { peerBayesClassifier, fgsTfjs, deepfoolTfjs, type PeerAttackTarget } from './peer/tfjs-attacks.js';
import {
  parseOptions, runMain, fail, startEngines, checkedTfjs, printEngines, timeReps, randomBatch, round, atomicWriteJson, resultsPath, reportHeader,
  timeBoth, comparison, comparisonCells, COMPARISON_COLUMNS, perEngine, fmtMs, table, printNotMeasured, printDone,
  type Comparison, type PerImage, type Column, type PerEngine, type Timing,
} from './common.js';

const P = 'bench:attacks';
const MODELS: PeerModelName[] = ['gfz', 'dfz'];
type Attack = 'fgs' | 'deepfool' | 'deepfool-natural';
interface Case {
  model: PeerModelName;
  attack: Attack;
}
const caseName = (c: Case) => `${c.model} ${c.attack}`;
/** Added to logit 0 of a pinned classifier: far beyond any logit gap, so the prediction never leaves class 0. */
const PIN = 1e4;

const HELP = `Usage: npm run bench:attacks -- [options]

Options:
  --images N          DeepFool images (default 20)
  --iterations N      DeepFool iterations, fixed (default 3)
  --fgs-batch N       FGS images per batch (default 100)
  --eps E             FGS step (default 0.1)
  --samples K         importance samples per class (default 10)
  --reps N            timed runs per engine and case (default: fgs 2, deepfool 1)
  --warmup N          untimed runs first (default 1; a DeepFool warm-up runs 1 iteration)
  --budget S          stop timing an engine on a case after S seconds of timed runs, keeping one (default 300)
  --natural           also time our DeepFool without the pin (early stopping, up to --max-iterations)
  --check             first copy our weights and noise draws into the peer and compare, on 3 images, the
                      clean logits and 2 unpinned DeepFool iterations (labels, flips, perturbation norms)
  --max-iterations N  iteration cap of the natural run (default 50)
  --random            random weights for our models even when checkpoints exist
  --checkpoints DIR   where <model>-compact.safetensors are looked for (default checkpoints)
  --only S            run only cases whose '<model> <attack>' contains S (case-insensitive); repeatable
  --no-tfjs           skip TensorFlow.js (ours only)
  --backend B         our WebGPU backend: auto|native|opengl (default env GENCLS_BACKEND, else auto)
  --json PATH         where to write results (default bench/results/attacks-<date>.json; written atomically)
  --list              print the cases and exit
  -h, --help          show this help
`;

function options() {
  const o = parseOptions(
    P,
    HELP,
    ['images', 'iterations', 'fgs-batch', 'eps', 'samples', 'reps', 'warmup', 'budget', 'max-iterations', 'checkpoints'],
    ['natural', 'check', 'random', 'no-tfjs'],
  );
  return {
    ...o.common,
    images: o.int('images', 1, 20),
    iterations: o.int('iterations', 1, 3),
    fgsBatch: o.int('fgs-batch', 1, 100),
    eps: o.num('eps', 0, 0.1),
    samples: o.int('samples', 1, 10),
    reps: o.int('reps', 1),
    warmup: o.int('warmup', 0, 1),
    budgetMs: o.num('budget', 0, 300) * 1000,
    natural: o.flag('natural'),
    check: o.flag('check'),
    maxIterations: o.int('max-iterations', 1, 50),
    random: o.flag('random'),
    checkpoints: o.str('checkpoints') ?? 'checkpoints',
    tfjs: !o.flag('no-tfjs'),
  };
}

/** The first n Fashion-MNIST test images and labels, else random ones. */
function images(n: number): { x: Float32Array; y: Int32Array; source: string } {
  try {
    const test = loadFashionMnist({ split: 'test' });
    const m = Math.min(n, test.count);
    if (m === n) return { x: test.images.slice(0, n * 784), y: test.labels.slice(0, n), source: `fashion-mnist test[0:${n}]` };
  } catch {
    /* no data: random images */
  }
  return { ...randomBatch(n, 7), source: 'random images in [0, 1]' };
}

interface Result extends Comparison, PerImage {
  model: string;
  attack: Attack;
  images: number;
  /** DeepFool: the iteration count asked for (fixed) or the cap (natural). */
  iterations: number | null;
  /** Gradient passes per run (DeepFool: one per iteration plus the final check), per engine. */
  gradient_passes: PerEngine<number>;
  warmup: number;
  weights: { ours: string; tfjs_webgpu: string };
  /** Natural DeepFool: fraction of images flipped and mean iterations of the flipped ones. */
  outcome?: { flipped: number; mean_iterations: number | null };
  notes?: PerEngine<string>;
}

/** Adds PIN to logit 0 of every row: same gradients and cost, the prediction stays class 0. */
function pinnedOurs(clf: Classifier): Classifier {
  const pin = new Float32Array(clf.numClasses);
  pin[0] = PIN;
  return { ...clf, name: `${clf.name}+pin`, logits: (x, draw, replicas) => add(clf.logits(x, draw, replicas), tensor(pin, [1, clf.numClasses])) };
}

async function main(): Promise<void> {
  const opt = options();
  const all: Case[] = MODELS.flatMap((model) => (['fgs', 'deepfool', 'deepfool-natural'] as Attack[]).map((attack) => ({ model, attack })));
  if (opt.list) {
    for (const c of all) process.stdout.write(`${caseName(c)}${c.attack === 'deepfool-natural' ? '  (with --natural; ours only)' : ''}\n`);
    return;
  }
  const cases = all.filter((c) => (opt.natural || c.attack !== 'deepfool-natural') && opt.selects(caseName(c)));
  if (cases.length === 0) fail(P, 'no case left to run (see --list)');

  const engines = await startEngines(opt.backend, opt.tfjs);
  const tf = engines.tfjs?.tf;
  const date = new Date();
  const jsonPath = resultsPath(opt.json, 'attacks', date);
  const data = images(Math.max(opt.images, opt.fgsBatch));
  const results: Result[] = [];
  const report = () => ({
    ...reportHeader(engines, date, 'bench/attacks.ts'),
    settings: {
      preset: 'compact',
      images: opt.images,
      iterations: opt.iterations,
      fgs_batch: opt.fgsBatch,
      eps: opt.eps,
      samples: opt.samples,
      p: 2,
      overshoot: 0.02,
      noise: 'fixed (seed 1)',
      reps: opt.reps ?? 'default',
      warmup: opt.warmup,
      budget_s: opt.budgetMs / 1000,
      natural: opt.natural ? { max_iterations: opt.maxIterations } : false,
      data: data.source,
      only: opt.only ?? null,
    },
    conventions: {
      fgs: 'one FGS step on the batch (forward, backward to the images, sign step), result read back; ms per batch',
      deepfool: `DeepFool p=2 for exactly --iterations iterations: both classifiers pinned (logit 0 + ${PIN}) so no image flips early; iterations + 1 gradient passes per run, each the 10 class gradients of every image in one backward pass`,
      deepfool_natural: 'ours only, unpinned: stops per image when the prediction flips (up to --max-iterations)',
      ratio: 'tfjs_webgpu_ms / ours_ms (> 1 means ours is faster)',
      peer: 'bench/peer/tfjs-attacks.ts on bench/peer/tfjs-models.ts (random weights, same architecture)',
      check: 'with --check: our weights and noise draws copied into the peer; clean logits and 2 unpinned DeepFool iterations compared (they agree to float rounding; over many iterations paths can part where an image sits at a near-tie)',
    },
    checks,
    results,
  });

  const ourModels = new Map<string, { model: LatentVariableClassifier; weights: string }>();
  const ourModel = (name: PeerModelName) => {
    let m = ourModels.get(name);
    if (!m) {
      const path = resolve(opt.checkpoints, `${name}-compact.safetensors`);
      if (!opt.random && existsSync(path)) {
        const { model, meta } = loadModel(path, { model: name, preset: 'compact' });
        m = { model, weights: `${relative(process.cwd(), path)} (epoch ${meta.epoch})` };
      } else m = { model: createModel(modelConfig(name, 'compact', { seed: 1 })), weights: 'random (seed 1)' };
      ourModels.set(name, m);
    }
    return m;
  };

  // ---- runners: each returns the timing plus what the runs did

  interface Run {
    t: Timing;
    passes?: number;
    outcome?: Result['outcome'];
  }

  const runOurs = async (c: Case, reps: number): Promise<Run> => {
    const { model } = ourModel(c.model);
    const clf = bayesClassifier(model, { samples: opt.samples, noise: { kind: 'fixed', seed: 1 } });
    if (c.attack === 'fgs') {
      const n = opt.fgsBatch;
      const x = tensor(data.x.subarray(0, n * 784), [n, 1, 28, 28]);
      const y = tensor(data.y.subarray(0, n), [n], 'i32');
      try {
        const once = async () => {
          const adv = await fgs(clf, x, y, { eps: opt.eps });
          await adv.data();
          adv.dispose();
        };
        return { t: await timeReps(once, opt.warmup, reps, opt.budgetMs), passes: 1 };
      } finally {
        x.dispose();
        y.dispose();
      }
    }
    const n = opt.images;
    const x = tensor(data.x.subarray(0, n * 784), [n, 1, 28, 28]);
    const natural = c.attack === 'deepfool-natural';
    const target = natural ? clf : pinnedOurs(clf);
    let passes = 0;
    let last: Awaited<ReturnType<typeof deepfool>> | null = null;
    const attack = async (maxIterations: number, count: boolean) => {
      const r = await deepfool(target, x, { p: 2, overshoot: 0.02, maxIterations, onIteration: count ? () => void passes++ : undefined });
      r.adversarial.dispose();
      if (!natural && r.flipped.some((f) => f)) throw new Error('a pinned DeepFool run flipped an image: the work is not fixed');
      last = r;
    };
    let t: Timing;
    try {
      for (let i = 0; i < opt.warmup; i++) await attack(1, false);
      t = await timeReps(() => attack(natural ? opt.maxIterations : opt.iterations, true), 0, reps, opt.budgetMs);
      t.warmup = opt.warmup;
    } finally {
      x.dispose();
    }
    const runs = t.reps;
    let outcome: Result['outcome'];
    if (natural && last) {
      const r = last as Awaited<ReturnType<typeof deepfool>>;
      const its = Array.from(r.iterations).filter((_, i) => r.flipped[i]);
      outcome = { flipped: round(its.length / n, 3)!, mean_iterations: its.length ? round(its.reduce((a, b) => a + b, 0) / its.length, 3) : null };
    }
    return { t, passes: passes / runs, outcome };
  };

  const peerModels = new Map<string, ReturnType<typeof createPeerModel>>();
  const runPeer = async (c: Case, reps: number): Promise<Run> => {
    const tfx = tf!;
    let model = peerModels.get(c.model);
    if (!model) peerModels.set(c.model, (model = createPeerModel({ model: c.model, channels: 16, hidden: 128, latent: 32, seed: 1 })));
    const clf = peerBayesClassifier(model, { samples: opt.samples, seed: 1 });
    const before = tfx.memory().numTensors;
    try {
      if (c.attack === 'fgs') {
        const n = opt.fgsBatch;
        const x = tfx.tensor4d(data.x.subarray(0, n * 784), [n, 28, 28, 1]);
        const y = tfx.tensor1d(data.y.subarray(0, n), 'int32');
        try {
          const once = async () => {
            const adv = await fgsTfjs(clf, x, y, opt.eps);
            await adv.data();
            adv.dispose();
          };
          return { t: await timeReps(once, opt.warmup, reps, opt.budgetMs), passes: 1 };
        } finally {
          tfx.dispose([x, y]);
        }
      }
      const n = opt.images;
      const x = tfx.tensor4d(data.x.subarray(0, n * 784), [n, 28, 28, 1]);
      const pin = new Float32Array(10);
      pin[0] = PIN;
      const target: PeerAttackTarget = { numClasses: 10, logits: (xv, draw, replicas) => tfx.add(clf.logits(xv, draw, replicas), tfx.tensor2d(pin, [1, 10])) };
      let passes = 0;
      const attack = async (maxIterations: number, count: boolean) => {
        const r = await deepfoolTfjs(target, x, { p: 2, overshoot: 0.02, maxIterations, onIteration: count ? () => passes++ : undefined });
        r.adversarial.dispose();
        if (r.flipped.some((f) => f)) throw new Error('a pinned DeepFool run flipped an image: the work is not fixed');
      };
      try {
        for (let i = 0; i < opt.warmup; i++) await attack(1, false);
        const t = await timeReps(() => attack(opt.iterations, true), 0, reps, opt.budgetMs);
        t.warmup = opt.warmup;
        return { t, passes: passes / t.reps };
      } finally {
        x.dispose();
      }
    } finally {
      const leaked = tfx.memory().numTensors - before;
      if (leaked > 0) process.stderr.write(`${P}: tfjs ${caseName(c)} left ${leaked} tensors\n`);
    }
  };

  printEngines(engines);
  process.stdout.write(
    `compact preset, K=${opt.samples}, fixed noise; fgs eps ${opt.eps} on ${opt.fgsBatch} images; deepfool p=2 on ${opt.images} images, ${opt.iterations} iterations (pinned); data: ${data.source}\n` +
      `ratio = tfjs ms / ours ms (> 1: ours faster)\n\n`,
  );
  // ---- optional check: given our weights and our noise draws, the peer's logits and DeepFool steps match ours

  const checks: unknown[] = [];
  if (opt.check && tf) {
    const n = 3;
    const iterations = 2;
    for (const name of [...new Set(cases.map((c) => c.model))]) {
      const { model, weights } = ourModel(name);
      const peer = createPeerModel({ model: name, channels: model.config.channels, hidden: model.config.hidden, latent: model.config.latent });
      try {
        importOurWeights(peer, model.params.slots, await model.params.state());
        // Our fixed-noise draws for every batch size DeepFool meets (n active images or fewer), shared with the peer.
        const draws = new Map<number, Float32Array>();
        for (let m = 1; m <= n; m++) {
          const t = randomNormal([opt.samples, 1, m, model.config.latent], 1);
          draws.set(m, (await t.data()) as Float32Array);
          t.dispose();
        }
        const ourClf = bayesClassifier(model, { samples: opt.samples, noise: { kind: 'fixed', seed: 1 } });
        const peerClf = peerBayesClassifier(peer, { samples: opt.samples, seed: 1, drawNoise: (shape) => tf.tensor(draws.get(shape[2])!, shape) });
        const xs = data.x.subarray(0, n * 784);
        const x = tensor(xs, [n, 1, 28, 28]);
        const xp = tf.tensor4d(xs, [n, 28, 28, 1]);
        const la = noGrad(() => tidy(() => ourClf.logits(x, 0)));
        const lb = tf.tidy(() => peerClf.logits(xp, 0));
        const [fa, fb] = [await la.data(), await lb.data()];
        la.dispose();
        lb.dispose();
        const logitDiff = Math.max(...Array.from(fa, (v, i) => Math.abs(v - fb[i])));
        const a = await deepfool(ourClf, x, { p: 2, maxIterations: iterations });
        const b = await checkedTfjs(tf, () => deepfoolTfjs(peerClf, xp, { p: 2, maxIterations: iterations }));
        const l2 = (adv: ArrayLike<number>) =>
          Array.from({ length: n }, (_, i) => {
            let s2 = 0;
            for (let j = i * 784; j < (i + 1) * 784; j++) s2 += (adv[j] - xs[j]) ** 2;
            return round(Math.sqrt(s2), 5);
          });
        const side = (r: { originalLabels: Int32Array; iterations: Int32Array; flipped: Uint8Array }, adv: ArrayLike<number>) => ({
          labels: Array.from(r.originalLabels),
          iterations: Array.from(r.iterations),
          flipped: Array.from(r.flipped),
          l2: l2(adv),
        });
        const check = { model: name, weights, images: n, max_abs_diff_logits: round(logitDiff, 3), deepfool_iterations: iterations, ours: side(a, await a.adversarial.data()), tfjs_webgpu: side(b, await b.adversarial.data()) };
        checks.push(check);
        process.stdout.write(
          `check ${name}: our weights and draws in the peer: clean logits max abs diff ${check.max_abs_diff_logits}; DeepFool ${iterations} iterations:\n` +
            `  ours ${JSON.stringify(check.ours)}\n  tfjs ${JSON.stringify(check.tfjs_webgpu)}\n`,
        );
        a.adversarial.dispose();
        tf.dispose([xp, b.adversarial]);
        x.dispose();
      } catch (e) {
        process.stdout.write(`check ${name}: error: ${(e as Error).message}\n`);
      } finally {
        peer.dispose();
      }
    }
    process.stdout.write('\n');
  }

  const cols: Column[] = [['model', 5, 'l'], ['attack', 16, 'l'], ['images', 6, 'r'], ...COMPARISON_COLUMNS, ['ours ms/img', 11, 'r'], ['tfjs ms/img', 11, 'r']];
  const rows: string[][] = [];
  const t0 = performance.now();
  for (const c of cases) {
    const reps = opt.reps ?? (c.attack === 'fgs' ? 2 : 1);
    const n = c.attack === 'fgs' ? opt.fgsBatch : opt.images;
    process.stderr.write(`${caseName(c)}: ${opt.warmup} warm-up + ${reps} timed runs per engine on ${n} images...\n`);
    let oursWeights = '';
    const { runs, notes } = await timeBoth(
      P,
      caseName(c),
      engines,
      async () => {
        oursWeights = ourModel(c.model).weights;
        return runOurs(c, reps);
      },
      c.attack === 'deepfool-natural' ? { skip: 'ours only (random peer weights would flip differently)' } : () => runPeer(c, reps),
    );
    const rec: Result = {
      model: c.model,
      attack: c.attack,
      images: n,
      iterations: c.attack === 'fgs' ? null : c.attack === 'deepfool' ? opt.iterations : opt.maxIterations,
      gradient_passes: perEngine(runs, (r) => (r.passes === undefined ? undefined : round(r.passes, 3)!)),
      ...comparison(runs, n, true),
      warmup: opt.warmup,
      weights: { ours: oursWeights, tfjs_webgpu: 'random (seed 1)' },
      ...(runs.ours?.outcome && { outcome: runs.ours.outcome }),
      ...(notes && { notes }),
    };
    results.push(rec);
    rows.push([
      c.model,
      c.attack === 'deepfool' ? `deepfool ${opt.iterations} it` : c.attack === 'fgs' ? 'fgs' : `deepfool natural`,
      String(n),
      ...comparisonCells(runs, rec),
      fmtMs(rec.ours_ms_per_image),
      fmtMs(rec.tfjs_webgpu_ms_per_image),
    ]);
    atomicWriteJson(jsonPath, report()); // after every case, so an interrupted run keeps what it measured
  }
  process.stdout.write(table(cols, rows) + '\n');
  for (const [name, m] of ourModels) process.stdout.write(`ours ${name}: ${m.weights}\n`);
  printNotMeasured(results.flatMap((r) => Object.entries(r.notes ?? {}).filter(([, n]) => n.startsWith('error') || n.startsWith('skipped')).map(([e, n]) => `  ${e} ${r.model} ${r.attack}: ${n}`)));
  printDone(results.length, t0, jsonPath);
  for (const m of ourModels.values()) m.model.dispose();
  for (const m of peerModels.values()) m.dispose();
  shutdown();
}

runMain(import.meta.url, P, main);
