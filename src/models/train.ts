// Training by maximising the ELBO with Adam; evaluation by Bayes' rule. Checkpoints are written atomically after
// every epoch, so an interrupted run resumes (`resume: true`) losing at most the epoch in progress.
import { existsSync } from 'node:fs';
import { Adam, Rng, tensor, tidy, mean, gradients, argmax, readAll, runtime, compile, type Tensor } from '../engine.js';
import { Progress } from '../progress.js';
import type { FashionMnistSplit as Split } from '../data/idx.js';
import { createModel, type LatentVariableClassifier, type ModelConfig } from './factorisations.js';
import { saveCheckpoint, loadModel, loadOptimizerState, readMeta, type EpochRecord, type TrainConfig } from './store.js';

export const IMAGE_SHAPE = [1, 28, 28] as const;

/** Uploads images [n*784] and labels of the given rows as GPU tensors. */
export function batchTensors(data: Split, rows: ArrayLike<number>): { x: Tensor; y: Tensor } {
  const n = rows.length;
  const x = new Float32Array(n * 784);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    x.set(data.images.subarray(rows[i] * 784, rows[i] * 784 + 784), i * 784);
    y[i] = data.labels[rows[i]];
  }
  return { x: tensor(x, [n, ...IMAGE_SHAPE]), y: tensor(y, [n], 'i32') };
}

/** Seed of epoch e's data order and noise: the e-th draw of the run's seed stream, so resumed runs continue identically. */
function epochRng(seed: number, epoch: number): Rng {
  const root = new Rng(seed);
  for (let e = 0; e < epoch; e++) root.nextSeed();
  return new Rng(root.nextSeed());
}

function shuffled(n: number, rng: Rng): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

export interface EvalResult {
  accuracy: number;
  negElbo: number;
  count: number;
  predictions: Int32Array;
}

/** Clean accuracy by Bayes' rule with K samples, and the mean negative ELBO, over the first `count` items. */
export async function evaluate(model: LatentVariableClassifier, data: Split, opts: { count: number; samples: number; batchSize: number; seed: number; progress?: boolean }): Promise<EvalResult> {
  const count = Math.min(opts.count, data.count);
  const predictions = new Int32Array(count);
  let correct = 0;
  let elboSum = 0;
  const rng = new Rng(opts.seed);
  const bar = opts.progress ? new Progress({ total: count, label: 'evaluate', unit: 'img' }) : null;
  const score = model.compiled(`evaluate K=${opts.samples}`, () => ([x, y], [seed]) => [argmax(model.logits(x, { samples: opts.samples, seed })), mean(model.elbo(x, y, { seed }))]);
  for (let start = 0; start < count; start += opts.batchSize) {
    const rows = Array.from({ length: Math.min(opts.batchSize, count - start) }, (_, i) => start + i);
    const seed = rng.nextSeed();
    const [pred, elbo] = tidy(() => {
      const { x, y } = batchTensors(data, rows);
      return score([x, y], [seed]);
    });
    const [p, e] = await readAll([pred, elbo]);
    pred.dispose();
    elbo.dispose();
    rows.forEach((r, i) => {
      predictions[r] = p[i];
      if (p[i] === data.labels[r]) correct++;
    });
    elboSum -= e[0] * rows.length;
    bar?.tick(rows.length, `acc ${((100 * correct) / (start + rows.length)).toFixed(2)}%`);
  }
  bar?.finish();
  return { accuracy: correct / count, negElbo: elboSum / count, count, predictions };
}

export interface TrainOptions {
  config: ModelConfig;
  train: TrainConfig;
  checkpoint: string;
  resume: boolean;
  /**
   * On resume, the stored run's settings are kept except `epochs` and these, which only change how each epoch is
   * scored (say fewer test images on a slow adapter), never the training itself.
   */
  resumeOverrides?: Partial<Pick<TrainConfig, 'evalSubset' | 'evalSamples'>>;
  log?: (line: string) => void;
  /** Set by a SIGINT handler: the loop stops after the current step without saving a partial epoch. */
  shouldStop?: () => boolean;
}

export async function trainModel(data: { train: Split; test: Split }, opts: TrainOptions): Promise<{ model: LatentVariableClassifier; history: EpochRecord[]; stopped: boolean }> {
  const log = opts.log ?? ((s: string) => process.stderr.write(s + '\n'));
  let model: LatentVariableClassifier;
  let history: EpochRecord[] = [];
  let startEpoch = 0;
  let adam: Adam;
  let train = opts.train;
  if (opts.resume && existsSync(opts.checkpoint)) {
    const meta = readMeta(opts.checkpoint);
    ({ model } = loadModel(opts.checkpoint, { model: opts.config.model, preset: opts.config.preset }));
    train = { ...meta.train, epochs: opts.train.epochs, ...opts.resumeOverrides };
    adam = new Adam(model.params, { lr: train.lr });
    loadOptimizerState(opts.checkpoint, model, adam);
    history = meta.history;
    startEpoch = meta.epoch;
    log(`resuming ${opts.checkpoint} after epoch ${startEpoch} (seed ${train.seed})`);
  } else {
    if (existsSync(opts.checkpoint) && !opts.resume) throw new Error(`${opts.checkpoint} exists: pass --resume to continue it or --force to start over`);
    model = createModel(opts.config);
    adam = new Adam(model.params, { lr: train.lr });
  }
  const n = Math.min(train.trainLimit, data.train.count);
  const steps = Math.floor(n / train.batchSize);
  log(`${model.config.model} ${model.factorisation}, preset ${model.config.preset}: ${model.params.numel} parameters; ${steps} steps/epoch; adapter ${runtime().description}`);
  // One step traced once (twice with a KL warm-up: its weight is an input while it ramps), then replayed.
  const trainStep = compile(
    ([x, y, beta], [seed]) => {
      const negElbo = model.negElbo(x, y, { seed, training: true, klWeight: beta });
      adam.step(gradients(negElbo));
      return negElbo;
    },
    { name: 'training step', maxTraces: 2 },
  );
  try {
    for (let epoch = startEpoch; epoch < train.epochs; epoch++) {
      const t0 = performance.now();
      const rng = epochRng(train.seed, epoch);
      const order = shuffled(n, rng);
      const bar = new Progress({ total: steps, label: `epoch ${epoch + 1}/${train.epochs}`, unit: 'step' });
      let lossSum = 0;
      let lossCount = 0;
      let pending: Tensor[] = [];
      const drain = async () => {
        const values = await readAll(pending);
        pending.forEach((t) => t.dispose());
        pending = [];
        for (const v of values) {
          lossSum += v[0];
          lossCount++;
        }
      };
      for (let s = 0; s < steps; s++) {
        if (opts.shouldStop?.()) {
          bar.finish();
          log(`interrupted in epoch ${epoch + 1}; the checkpoint after epoch ${epoch} is kept (resume with --resume)`);
          return { model, history, stopped: true };
        }
        const rows = order.subarray(s * train.batchSize, (s + 1) * train.batchSize);
        const seed = rng.nextSeed();
        const warmup = train.klWarmup ?? 0;
        const klWeight = warmup > 0 ? Math.min(1, (epoch * steps + s + 1) / warmup) : 1;
        const [loss] = tidy(() => {
          const { x, y } = batchTensors(data.train, rows);
          return trainStep(klWeight < 1 ? [x, y, tensor([klWeight], [1])] : [x, y], [seed]);
        });
        pending.push(loss);
        // Reading every step would stall the GPU queue; a few steps of lag keep it fed.
        if (pending.length >= 8 || s === steps - 1) await drain();
        bar.tick(1, lossCount ? `-elbo ${(lossSum / lossCount).toFixed(2)}` : '');
      }
      bar.finish();
      const ev = await evaluate(model, data.test, { count: train.evalSubset, samples: train.evalSamples, batchSize: 100, seed: train.seed + 1 });
      const record: EpochRecord = {
        epoch: epoch + 1,
        trainNegElbo: lossSum / Math.max(1, lossCount),
        testNegElbo: ev.negElbo,
        testAccuracy: ev.accuracy,
        testSubset: ev.count,
        seconds: (performance.now() - t0) / 1000,
      };
      history.push(record);
      await saveCheckpoint(opts.checkpoint, model, { train, epoch: epoch + 1, history }, adam);
      log(
        `epoch ${record.epoch}: train -ELBO ${record.trainNegElbo.toFixed(2)}, test -ELBO ${record.testNegElbo.toFixed(2)}, ` +
          `test accuracy ${(100 * record.testAccuracy).toFixed(2)}% (first ${record.testSubset}, K=${train.evalSamples}), ${record.seconds.toFixed(0)} s`,
      );
    }
    return { model, history, stopped: false };
  } finally {
    trainStep.dispose();
  }
}
