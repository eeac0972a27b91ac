// Training-step and classification benchmark: GFZ and DFZ in the compact and paper presets, this engine against
// the same networks written in TensorFlow.js (bench/peer/tfjs-models.ts) on TensorFlow.js's WebGPU backend, in
// the same process on the same Dawn adapter, and with --torch PyTorch (bench/peer/torch_peer.py: the same networks
// in torch.nn, its own process, CUDA when it has a GPU, fp32 with TF32 off).
//
//   npm run bench:train -- [--steps N] [--warmup N] [--only S]... [--no-paper] [--no-tfjs] [--torch] [--no-check] [--json PATH]
//
// train:    one training step on a batch of 100 (forward, backward, Adam lr 1e-3 on the mean negative ELBO with
//           one reparameterised sample); each step synchronised by reading the loss back.
// classify: Bayes-rule logits of a batch of 100 with K = 10 samples per class (10 x 10 x 100 rows through the
//           networks in one pass; in the paper preset that pass would bind 500 MB feature maps, over the usual
//           128 MiB maxStorageBufferBindingSize, so both engines chunk it by classes alike), read back; images/s.
// Times are the median of the timed reps after the warm-up reps (the first run compiles pipelines). Inputs are
// random images in [0, 1] and random labels (uploaded every rep), weights random: only the speed is compared.
// Before timing, a check copies our weights into the peer and compares log-weights and input gradients.
// ratio = tfjs_webgpu_ms / ours_ms, ratio_vs_torch = torch_ms / ours_ms (> 1: ours is faster). Nothing here asserts
// a speed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { shutdown, tidy, noGrad, tensor, sum, oneHot, gradients, readAll, Adam, compile } from '../src/index.js';
import { createModel, modelConfig, maxRowsPerPass, passPlan, PRESETS, type PresetName } from '../src/models/factorisations.js';
import { writeSafetensors } from '../src/models/checkpoint.js';
import { createPeerModel, importOurWeights, type PeerModelName } from './peer/tfjs-models.js';
import {
  parseOptions, runMain, fail, startEngines, checkedTfjs, printEngines, timeReps, randomBatch, round, atomicWriteJson, resultsPath, reportHeader,
  timeBoth, comparison, comparisonCells, COMPARISON_COLUMNS, perEngine, table, printNotMeasured, printDone, runTorchPeer, torchDescription,
  fmtMs, fmtRatio, fmtRate, type Comparison, type Column, type PerEngine, type TfjsModule, type Timing, type TorchHeader,
} from './common.js';

const P = 'bench:train';

/**
 * Checks the peer computes what ours does: our weights (random, seed 3) copied into the peer, then the log-weights
 * log p(x, y, z) - log q(z|x, y) of 8 images x 3 labels with the same noise, and their summed gradient with
 * respect to the images, compared.
 */
async function checkEquivalence(tfx: TfjsModule, model: PeerModelName, preset: PresetName) {
  const cfg = modelConfig(model, preset, { seed: 3 });
  const ours = createModel(cfg);
  const peer = createPeerModel({ model, channels: cfg.channels, hidden: cfg.hidden, latent: cfg.latent });
  try {
    importOurWeights(peer, ours.params.slots, await ours.params.state());
    const n = 8;
    const rows = 3 * n;
    const { x } = randomBatch(n, 11);
    const labels = Int32Array.from({ length: rows }, (_, i) => (i * 7) % 10);
    const noise = Float32Array.from({ length: rows * cfg.latent }, (_, i) => 1.3 * Math.sin(12.9898 * i));
    const [lwOurs, gOurs] = await readAll(
      tidy(() => {
        const xv = tensor(x, [n, 1, 28, 28]).requireGrad();
        const lw = ours.logWeights(xv, oneHot(tensor(labels, [rows], 'i32'), 10), { seed: 1, noise: tensor(noise, [rows, cfg.latent]) });
        return [lw, gradients(sum(lw), null, [xv]).get(xv)!];
      }),
    );
    const [lwPeer, gPeer] = tfx.tidy(() => {
      const y = tfx.cast(tfx.oneHot(tfx.tensor1d(labels, 'int32'), 10), 'float32') as Parameters<typeof peer.logWeights>[1];
      const f = (xv: InstanceType<typeof tfx.Tensor>) => peer.logWeights(xv as Parameters<typeof peer.logWeights>[0], y, 1, tfx.tensor2d(noise, [rows, cfg.latent]));
      const xv = tfx.tensor4d(x, [n, 28, 28, 1]);
      return [f(xv), tfx.grad((v) => tfx.sum(f(v)))(xv)];
    });
    const [a, b] = [(await lwPeer.data()) as Float32Array, (await gPeer.data()) as Float32Array];
    tfx.dispose([lwPeer, gPeer]);
    let rel = 0;
    let gradDiff = 0;
    let gradMax = 0;
    lwOurs.forEach((v, i) => (rel = Math.max(rel, Math.abs(v - a[i]) / (1 + Math.abs(v)))));
    gOurs.forEach((v, i) => {
      gradDiff = Math.max(gradDiff, Math.abs(v - b[i]));
      gradMax = Math.max(gradMax, Math.abs(v));
    });
    return { model, preset, max_rel_diff_log_weights: round(rel, 3), max_abs_diff_input_grad: round(gradDiff, 3), max_abs_input_grad: round(gradMax, 3) };
  } finally {
    ours.params.dispose();
    peer.dispose();
  }
}

/**
 * The same check against the PyTorch peer: our weights (random, seed 3) written to a safetensors file the peer loads
 * by name, then the same log-weights and input gradient compared.
 */
function checkTorchEquivalence(model: PeerModelName, preset: PresetName) {
  return async () => {
    const cfg = modelConfig(model, preset, { seed: 3 });
    const ours = createModel(cfg);
    const dir = mkdtempSync(join(tmpdir(), 'torch-peer-'));
    try {
      const weights = join(dir, 'weights.safetensors');
      const state = await ours.params.state();
      writeSafetensors(weights, Object.fromEntries(ours.params.slots.map((s) => [s.name, { shape: [...s.shape], data: state[s.name] }])));
      const n = 8;
      const rows = 3 * n;
      const { x } = randomBatch(n, 11);
      const labels = Int32Array.from({ length: rows }, (_, i) => (i * 7) % 10);
      const noise = Float32Array.from({ length: rows * cfg.latent }, (_, i) => 1.3 * Math.sin(12.9898 * i));
      const [lwOurs, gOurs] = await readAll(
        tidy(() => {
          const xv = tensor(x, [n, 1, 28, 28]).requireGrad();
          const lw = ours.logWeights(xv, oneHot(tensor(labels, [rows], 'i32'), 10), { seed: 1, noise: tensor(noise, [rows, cfg.latent]) });
          return [lw, gradients(sum(lw), null, [xv]).get(xv)!];
        }),
      );
      const peer = runTorchPeer<{ log_weights: number[]; input_grad: number[] }>('logweights', {
        model, channels: cfg.channels, hidden: cfg.hidden, latent: cfg.latent, weights, n, x: [...x], labels: [...labels], noise: [...noise],
      });
      let rel = 0;
      let gradDiff = 0;
      let gradMax = 0;
      lwOurs.forEach((v, i) => (rel = Math.max(rel, Math.abs(v - peer.log_weights[i]) / (1 + Math.abs(v)))));
      gOurs.forEach((v, i) => {
        gradDiff = Math.max(gradDiff, Math.abs(v - peer.input_grad[i]));
        gradMax = Math.max(gradMax, Math.abs(v));
      });
      return { model, preset, peer: 'torch', max_rel_diff_log_weights: round(rel, 3), max_abs_diff_input_grad: round(gradDiff, 3), max_abs_input_grad: round(gradMax, 3) };
    } finally {
      ours.params.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

type TorchRun = { ms: number; min_ms: number; reps: number; params: number; first_loss?: number } | { error: string };

const MODELS: PeerModelName[] = ['gfz', 'dfz'];
type Task = 'train' | 'classify';
interface Case {
  model: PeerModelName;
  preset: PresetName;
  task: Task;
}
const caseName = (c: Case) => `${c.model} ${c.preset} ${c.task}`;

const HELP = `Usage: npm run bench:train -- [options]

Options:
  --steps N       timed reps per engine and case (default: train 10 compact / 5 paper; classify 5 / 3)
  --warmup N      untimed reps first (default: train 3, classify 1)
  --budget S      stop timing an engine on a case after S seconds of timed reps, keeping at least one (default 120)
  --batch N       images per batch (default 100)
  --samples K     importance samples per class for classify (default 10)
  --only S        run only cases whose '<model> <preset> <task>' contains S (case-insensitive); repeatable
  --no-paper      skip the paper preset (C=64, H=500, Z=64; slow on a software adapter)
  --no-tfjs       skip TensorFlow.js
  --torch         also time PyTorch on the same cases (python3, or $PYTHON; CUDA if it sees a GPU)
  --no-check      skip the check that each peer, given our weights, computes our log-weights and gradients
  --backend B     our WebGPU backend: auto|native|opengl (default env GENCLS_BACKEND, else auto)
  --json PATH     where to write results (default bench/results/train-step-<date>.json; written atomically)
  --list          print the cases and exit
  -h, --help      show this help
`;

function options() {
  const o = parseOptions(P, HELP, ['steps', 'warmup', 'budget', 'batch', 'samples'], ['no-paper', 'no-tfjs', 'no-check', 'torch']);
  return {
    ...o.common,
    steps: o.int('steps', 1),
    warmup: o.int('warmup', 0),
    budgetMs: o.num('budget', 0, 120) * 1000,
    batch: o.int('batch', 1, 100),
    samples: o.int('samples', 1, 10),
    paper: !o.flag('no-paper'),
    tfjs: !o.flag('no-tfjs'),
    torch: o.flag('torch'),
    check: !o.flag('no-check'),
  };
}

interface Result extends Comparison {
  model: string;
  preset: string;
  task: Task;
  batch: number;
  samples: number | null;
  /** classify: rows (class x sample x image) per pass through the networks, the same on both engines. */
  rows_per_pass: number | null;
  warmup: number;
  /** Sanity: the peer has exactly our parameter count; losses are the first step's -ELBO (random weights). */
  params: { ours: number | null; tfjs: number | null; torch: number | null };
  first_loss: PerEngine<number> & { torch?: number };
  /** PyTorch: median and fastest ms, images/s, and torch_ms / ours_ms (> 1: ours is faster). */
  torch_ms: number | null;
  torch_min_ms: number | null;
  torch_images_per_s: number | null;
  ratio_vs_torch: number | null;
  notes?: PerEngine<string> & { torch?: string };
}

/** One engine on one case: returns the timing and the first loss (train) or nothing. */
type EngineRun = (c: Case, timing: (once: () => Promise<void>) => Promise<Timing>) => Promise<{ t: Timing; params: number; firstLoss?: number }>;

async function main(): Promise<void> {
  const opt = options();
  const all: Case[] = [];
  for (const preset of ['compact', 'paper'] as PresetName[]) for (const model of MODELS) for (const task of ['train', 'classify'] as Task[]) all.push({ model, preset, task });
  if (opt.list) {
    for (const c of all) process.stdout.write(caseName(c) + '\n');
    return;
  }
  const cases = all.filter((c) => (opt.paper || c.preset !== 'paper') && opt.selects(caseName(c)));
  if (cases.length === 0) fail(P, 'no case left to run (see --list)');

  const engines = await startEngines(opt.backend, opt.tfjs);
  const maxBinding = engines.rt.limits.maxStorageBufferBindingSize;
  const tf = engines.tfjs?.tf;
  const date = new Date();
  const jsonPath = resultsPath(opt.json, 'train-step', date);
  const results: Result[] = [];
  const equivalence: Array<Awaited<ReturnType<typeof checkEquivalence>> & { peer?: string }> = [];
  let torchHeader: TorchHeader | null = null;
  const report = () => ({
    ...reportHeader(engines, date, 'bench/train-step.ts'),
    torch: torchHeader,
    settings: { steps: opt.steps ?? 'default', warmup: opt.warmup ?? 'default', budget_s: opt.budgetMs / 1000, batch: opt.batch, samples: opt.samples, paper: opt.paper, tfjs: opt.tfjs, torch: opt.torch, only: opt.only ?? null },
    conventions: {
      train: 'median ms of one training step (forward + backward + Adam lr 1e-3, mean -ELBO, one z sample), synchronised by reading the loss back',
      classify: `median ms of Bayes-rule logits for the batch with K samples per class, read back; images_per_s = batch / median. All classes go through the networks in one pass unless the largest activation (rows x C x 14 x 14 floats) would exceed the adapter's maxStorageBufferBindingSize; then classes are chunked (rows_per_pass), identically on both engines`,
      ratio: 'tfjs_webgpu_ms / ours_ms (> 1 means ours is faster)',
      inputs: 'random images in [0, 1] and labels, uploaded every rep; random weights (not shared between engines)',
      equivalence: 'before timing, our weights copied into the peer: log-weights and their input gradient compared (8 images x 3 labels, same noise)',
      peer: 'bench/peer/tfjs-models.ts: same layer sizes and activations, NHWC, tf.fused conv/matMul, tf.train.adam via optimizer.minimize',
      torch: 'bench/peer/torch_peer.py, own process, run after ours: the same networks in torch.nn (PyTorch layouts, our parameter names), torch.optim.Adam, fp32 with TF32 off, cudnn.benchmark on; train synchronised by loss.item(), classify by copying logits to the host',
    },
    equivalence,
    results,
  });

  const host = [randomBatch(opt.batch, 1), randomBatch(opt.batch, 2)];
  // Both engines split the rows of K=10 classification into the passes our model makes under the binding limit.
  const maxRowsFor = (c: Case) => maxRowsPerPass(PRESETS[c.preset].channels);
  const rowsPerPass = (c: Case) => {
    const { imagesPerPass, classesPerPass } = passPlan(opt.batch, opt.samples, maxRowsFor(c));
    return classesPerPass * opt.samples * imagesPerPass;
  };

  const ours: EngineRun = async (c, timing) => {
    const model = createModel(modelConfig(c.model, c.preset, { seed: 1 }));
    try {
      if (c.task === 'train') {
        const adam = new Adam(model.params, { lr: 1e-3 });
        // Traced once and replayed, as `train` runs it (GENCLS_COMPILE=0: op by op).
        const trainStep = compile(([x, y], [seed]) => {
          const negElbo = model.negElbo(x, y, { seed, training: true });
          adam.step(gradients(negElbo));
          return negElbo;
        });
        let i = 0;
        let firstLoss: number | undefined;
        const t = await timing(async () => {
          const b = host[i % host.length];
          const seed = i++;
          const [loss] = tidy(() => trainStep([tensor(b.x, [opt.batch, 1, 28, 28]), tensor(b.y, [opt.batch], 'i32')], [seed]));
          const v = await loss.item();
          loss.dispose();
          if (!Number.isFinite(v)) throw new Error(`loss is ${v} at step ${seed}`);
          firstLoss ??= v;
        });
        trainStep.dispose();
        adam.dispose();
        return { t, params: model.params.numel, firstLoss };
      }
      const x = tensor(host[0].x, [opt.batch, 1, 28, 28]);
      const classify = model.compiled('bench classify', () => ([xs], [seed]) => noGrad(() => model.logits(xs, { samples: opt.samples, seed, maxRows: maxRowsFor(c) })));
      let i = 0;
      const t = await timing(async () => {
        const seed = i++;
        const [logits] = classify([x], [seed]);
        const v = await logits.data();
        logits.dispose();
        if (!Number.isFinite(v[0])) throw new Error(`logits[0] is ${v[0]}`);
      });
      x.dispose();
      return { t, params: model.params.numel };
    } finally {
      model.dispose();
    }
  };

  const peer: EngineRun = async (c, timing) => {
    const model = createPeerModel({ model: c.model, ...PRESETS[c.preset], seed: 1 });
    const before = tf!.memory().numTensors;
    try {
      if (c.task === 'train') {
        const optimizer = tf!.train.adam(1e-3);
        let i = 0;
        let firstLoss: number | undefined;
        const t = await timing(async () => {
          const b = host[i % host.length];
          const seed = i++;
          const loss = tf!.tidy(() => model.trainStep(optimizer, tf!.tensor4d(b.x, [opt.batch, 28, 28, 1]), tf!.tensor1d(b.y, 'int32'), seed));
          const v = (await loss.data())[0];
          loss.dispose();
          if (!Number.isFinite(v)) throw new Error(`loss is ${v} at step ${seed}`);
          firstLoss ??= v;
        });
        optimizer.dispose();
        return { t, params: model.numel, firstLoss };
      }
      const x = tf!.tensor4d(host[0].x, [opt.batch, 28, 28, 1]);
      let i = 0;
      const t = await timing(async () => {
        const seed = i++;
        const logits = tf!.tidy(() => model.logits(x, { samples: opt.samples, seed, maxRows: maxRowsFor(c) }));
        const v = await logits.data();
        logits.dispose();
        if (!Number.isFinite(v[0])) throw new Error(`logits[0] is ${v[0]}`);
      });
      x.dispose();
      return { t, params: model.numel };
    } finally {
      model.dispose();
      const leaked = tf!.memory().numTensors - before;
      if (leaked > 0) process.stderr.write(`${P}: tfjs ${caseName(c)} left ${leaked} tensors\n`);
    }
  };

  printEngines(engines);
  process.stdout.write(`batch ${opt.batch}, K=${opt.samples} for classify; median of timed reps after warm-up; ratio = tfjs ms / ours ms (> 1: ours faster)\n\n`);
  const torchCols: Column[] = opt.torch ? [['torch', 9, 'r'], ['x torch', 7, 'r'], ['torch img/s', 11, 'r']] : [];
  const cols: Column[] = [['model', 5, 'l'], ['preset', 7, 'l'], ['task', 8, 'l'], ...COMPARISON_COLUMNS, ...torchCols, ['reps', 8, 'r']];
  const rows: string[][] = [];
  const t0 = performance.now();
  if (tf && opt.check) {
    for (const preset of [...new Set(cases.map((c) => c.preset))])
      for (const model of [...new Set(cases.map((c) => c.model))]) {
        try {
          const e = await checkedTfjs(tf, () => checkEquivalence(tf, model, preset));
          equivalence.push(e);
          process.stdout.write(
            `check ${model} ${preset}: peer with our weights: log-weights max rel diff ${e.max_rel_diff_log_weights}, input grad max abs diff ${e.max_abs_diff_input_grad} (max |grad| ${e.max_abs_input_grad})\n`,
          );
        } catch (e) {
          process.stdout.write(`check ${model} ${preset}: error: ${(e as Error).message}\n`);
        }
      }
    process.stdout.write('\n');
  }
  const repsFor = (c: Case) => opt.steps ?? (c.task === 'train' ? (c.preset === 'paper' ? 5 : 10) : c.preset === 'paper' ? 3 : 5);
  const warmupFor = (c: Case) => opt.warmup ?? (c.task === 'train' ? 3 : 1);
  let torchRuns: TorchRun[] = cases.map(() => ({ error: 'skipped (no --torch)' }));
  if (opt.torch) {
    if (opt.check)
      for (const preset of [...new Set(cases.map((c) => c.preset))])
        for (const model of [...new Set(cases.map((c) => c.model))]) {
          try {
            const e = await checkTorchEquivalence(model, preset)();
            equivalence.push(e);
            process.stdout.write(`check ${model} ${preset}: torch peer with our weights: log-weights max rel diff ${e.max_rel_diff_log_weights}, input grad max abs diff ${e.max_abs_diff_input_grad} (max |grad| ${e.max_abs_input_grad})\n`);
          } catch (e) {
            process.stdout.write(`check ${model} ${preset} torch: error: ${(e as Error).message}\n`);
          }
        }
    process.stderr.write(`PyTorch peer: ${cases.length} cases...\n`);
    try {
      const out = runTorchPeer<{ results: TorchRun[] }>('train', {
        batch: opt.batch, samples: opt.samples, budget_s: opt.budgetMs / 1000,
        cases: cases.map((c) => ({ ...c, ...PRESETS[c.preset], reps: repsFor(c), warmup: warmupFor(c), rows_per_pass: rowsPerPass(c) })),
      });
      torchHeader = out;
      torchRuns = out.results;
      process.stdout.write(`torch:        ${torchDescription(out)}\n`);
    } catch (e) {
      torchRuns = cases.map(() => ({ error: (e as Error).message }));
    }
  }
  for (const [ci, c] of cases.entries()) {
    const reps = repsFor(c);
    const warmup = warmupFor(c);
    const timing = (once: () => Promise<void>) => timeReps(once, warmup, reps, opt.budgetMs);
    process.stderr.write(`${caseName(c)}: ${warmup} warm-up + ${reps} timed reps per engine...\n`);
    const { runs, notes } = await timeBoth(P, caseName(c), engines, () => ours(c, timing), () => peer(c, timing));
    const tr = torchRuns[ci];
    const torchRun = 'ms' in tr ? tr : null;
    const oursMs = runs.ours?.t.medianMs ?? null;
    const rec: Result = {
      model: c.model,
      preset: c.preset,
      task: c.task,
      batch: opt.batch,
      samples: c.task === 'classify' ? opt.samples : null,
      rows_per_pass: c.task === 'classify' ? rowsPerPass(c) : null,
      ...comparison(runs, opt.batch),
      warmup,
      params: { ours: runs.ours?.params ?? null, tfjs: runs.tfjs_webgpu?.params ?? null, torch: torchRun?.params ?? null },
      first_loss: { ...perEngine(runs, (r) => (r.firstLoss === undefined ? undefined : round(r.firstLoss, 6)!)), ...(torchRun?.first_loss !== undefined && { torch: round(torchRun.first_loss, 6)! }) },
      torch_ms: round(torchRun?.ms),
      torch_min_ms: round(torchRun?.min_ms),
      torch_images_per_s: torchRun ? round((opt.batch / torchRun.ms) * 1000) : null,
      ratio_vs_torch: torchRun && oursMs ? round(torchRun.ms / oursMs, 3) : null,
      ...((notes || (opt.torch && 'error' in tr)) && { notes: { ...notes, ...('error' in tr && opt.torch && { torch: `error: ${tr.error.split('\n')[0]}` }) } }),
    };
    results.push(rec);
    rows.push([
      c.model, c.preset, c.task === 'classify' ? `K=${opt.samples}` : 'train', ...comparisonCells(runs, rec),
      ...(opt.torch ? [fmtMs(torchRun?.ms ?? null), fmtRatio(rec.ratio_vs_torch), fmtRate(rec.torch_images_per_s)] : []),
      `${rec.reps.ours ?? 0}/${rec.reps.tfjs_webgpu ?? 0}${opt.torch ? `/${torchRun?.reps ?? 0}` : ''}`,
    ]);
    atomicWriteJson(jsonPath, report()); // after every case, so an interrupted run keeps what it measured
  }
  process.stdout.write(table(cols, rows) + '\n');
  for (const r of results)
    if (r.rows_per_pass !== null && r.rows_per_pass < 10 * r.samples! * r.batch)
      process.stdout.write(`${r.model} ${r.preset} K=${r.samples}: ${r.rows_per_pass} rows per pass (${Math.ceil((10 * r.samples! * r.batch) / r.rows_per_pass)} passes) on both engines, to keep the decoder's feature maps under maxStorageBufferBindingSize (${maxBinding} bytes)\n`);
  printNotMeasured(results.flatMap((r) => Object.entries(r.notes ?? {}).map(([e, n]) => `  ${e} ${r.model} ${r.preset} ${r.task}: ${n}`)));
  for (const r of results)
    for (const [peerName, n] of [['tfjs', r.params.tfjs], ['torch', r.params.torch]] as const)
      if (n !== null && r.params.ours !== null && n !== r.params.ours) process.stdout.write(`warning: ${r.model} ${r.preset}: ${peerName} peer has ${n} parameters, ours ${r.params.ours}\n`);
  printDone(results.length, t0, jsonPath);
  shutdown();
}

runMain(import.meta.url, P, main);
