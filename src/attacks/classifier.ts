// What an attack sees: a differentiable map from images to logits. Generative classifiers are stochastic (their
// logits are importance-sampled); `NoiseMode` says whether every call sees the same z draws (fixed), new draws
// (fresh: the reference's default, in the attack and in the final evaluation alike), or new draws with attack
// gradients averaged over several of them (expectation over noise, EOT).
import { Tensor, Rng, scale, add, mul, sum, logSoftmax, oneHot, gradients, noGrad, tidy, max, readAll, tensor, type CompiledFunction } from '../engine.js';
import { fmt } from '../autograd/tensor.js';
import { tileRows, type LatentVariableClassifier, type BatchRows, type Estimator } from '../models/factorisations.js';

export type NoiseMode = { kind: 'fixed'; seed: number } | { kind: 'fresh'; seed: number } | { kind: 'expectation'; seed: number; draws: number };

export interface Classifier {
  readonly name: string;
  readonly numClasses: number;
  /** Noise draws an attack averages over per step: 1 for deterministic classifiers and fixed noise, M under EOT. */
  readonly draws: number;
  /**
   * Logits [N, C] of images [N, 1, 28, 28]; `draw` picks the noise draw (ignored by deterministic classifiers).
   * When the batch is `replicas` copies of the same images, every copy sees the same noise; when the images are
   * `rows` of a larger batch, each sees the noise it has in that batch.
   */
  logits(x: Tensor, draw: number, replicas?: number, rows?: BatchRows): Tensor;
  /**
   * Optional, for EOT: logits [count * N, C] of `count` copies of the images (copy-major), copy j under draw
   * `draw0 + j`, in one call. Classifiers whose rows draw their noise independently stack the copies in one batch.
   */
  logitsOfDraws?(x: Tensor, draw0: number, count: number): Tensor;
  /**
   * Optional: the same classifier as a function of explicit seeds, so attacks can compile its gradient once per
   * shape and replay it. `nextSeed()` draws the seed the next `logits` or `logitsOfDraws` call would use.
   */
  seeded?: SeededClassifier;
}

export interface SeededClassifier {
  /** Keeps the compiled functions (their arenas live as long as the model). */
  readonly model: LatentVariableClassifier;
  /** Names everything the seeded logits depend on besides the seed (samples, estimator). */
  readonly key: string;
  nextSeed(): number;
  /** As `Classifier.logits`, with the noise drawn from `seed`. */
  logits(x: Tensor, seed: number, replicas?: number, rows?: BatchRows): Tensor;
  logitsOfDraws(x: Tensor, seed: number, count: number): Tensor;
}

/**
 * Wraps a trained latent-variable model: Bayes-rule logits with K importance samples per class. Under fresh noise
 * and EOT every call draws anew from a stream seeded by `noise.seed`, so a run is reproducible call for call.
 */
export function bayesClassifier(model: LatentVariableClassifier, opts: { samples?: number; noise: NoiseMode; estimator?: Estimator }): Classifier {
  const samples = opts.samples ?? 10;
  const { noise, estimator } = opts;
  if (noise.kind === 'expectation' && !(Number.isInteger(noise.draws) && noise.draws >= 1)) throw new Error(`classifier: EOT draws must be a positive integer, got ${noise.draws}`);
  if (!['fixed', 'fresh', 'expectation'].includes(noise.kind)) throw new Error(`classifier: noise must be fixed, fresh or expectation, got '${(noise as { kind: string }).kind}'`);
  const stream = new Rng(noise.seed);
  const nextSeed = () => (noise.kind === 'fixed' ? noise.seed : stream.nextSeed());
  // Every row of a call gets its own z draws, so `count` stacked copies of the batch are `count` fresh draws.
  const logitsOfDraws = (x: Tensor, seed: number, count: number) => model.logits(tileRows(x, count), { samples, seed, estimator });
  return {
    name: model.config.model,
    numClasses: 10,
    draws: noise.kind === 'expectation' ? noise.draws : 1,
    logits: (x, _draw, replicas = 1, rows) => model.logits(x, { samples, seed: nextSeed(), replicas, rows, estimator }),
    logitsOfDraws: (x, _draw0, count) => logitsOfDraws(x, stream.nextSeed(), count),
    seeded: {
      model,
      key: `K=${samples} ${estimator ?? 'shared'}`,
      nextSeed,
      logits: (x, seed, replicas = 1, rows) => model.logits(x, { samples, seed, replicas, rows, estimator }),
      logitsOfDraws,
    },
  };
}

/** Checks the batch is [N, 1, H, W] with every value in [0, 1] (one small GPU reduction and read). */
export async function checkImages(op: string, x: Tensor): Promise<void> {
  if (x.dtype !== 'f32' || x.rank !== 4 || x.shape[1] !== 1) throw new Error(`${op}: images must be f32 [N, 1, H, W], got ${x.dtype} ${fmt(x.shape)}`);
  const range = tidy(() => [scale(max(scale(x, -1)), -1), max(x)]);
  const [lo, hi] = await readAll(range);
  range.forEach((t) => t.dispose());
  if (!(lo[0] >= 0 && hi[0] <= 1)) throw new Error(`${op}: image values must lie in [0, 1], got range [${lo[0]}, ${hi[0]}]`);
}

/** Checks the labels are i32 [N] for the N images (their values are checked where they are read). */
export function checkLabels(op: string, x: Tensor, labels: Tensor): void {
  if (labels.dtype !== 'i32' || labels.rank !== 1 || labels.shape[0] !== x.shape[0]) {
    throw new Error(`${op}: labels must be i32 [${x.shape[0]}], got ${labels.dtype} ${fmt(labels.shape)}`);
  }
}

/** A black-box query: host logits [m, C] of `images` ([m * d] values), rows `rows` of the batch, draws numbered from `draw0`. */
export type RowQuery = (images: Float32Array, rows: number[], draw0: number) => Promise<Float32Array>;

/**
 * What a score-based black-box attack asks: logits [m, C] of images [m, 1, h, w] that are rows `rows` of a batch
 * of `of` images (each with the noise it has in that batch), averaged over the classifier's draws, read to the
 * host. For seeded classifiers the query is a compiled function of (images, row indices), traced once per bucket
 * of rows (powers of two, and `of`) with the bucket filled by other rows of the batch (their images from `fill`,
 * [of * d] values; their logits are dropped): an attack whose active set shrinks replays a few traces rather than
 * encoding the forward pass anew at every query. Other classifiers are called eagerly, draw d numbered draw0 + d.
 */
export function rowQuery(op: string, clf: Classifier, of: number, fill: Float32Array, h: number, w: number): RowQuery {
  const { draws, numClasses, seeded } = clf;
  const d = h * w;
  const read = async (logits: Tensor) => {
    const z = (await logits.data()) as Float32Array;
    logits.dispose();
    return z;
  };
  if (!seeded) {
    return async (images, rows, draw0) => {
      const m = rows.length;
      const logits = noGrad(() =>
        tidy(() => {
          const xt = tensor(images, [m, 1, h, w]);
          const batchRows = { indices: rows, of };
          return meanOverDraws(draws, (k) => checkLogits(op, clf, clf.logits(xt, draw0 + k, 1, batchRows), m));
        }),
      );
      return read(logits);
    };
  }
  const buckets = Math.ceil(Math.log2(Math.max(of, 1))) + 1;
  const f: CompiledFunction = seeded.model.compiled(
    `${op} row query ${seeded.key} draws=${draws} of ${of}`,
    () => ([xt, indices], seeds) => meanOverDraws(draws, (k) => seeded.logits(xt, seeds[k], 1, { indices, of })),
    buckets,
  );
  return async (images, rows, _draw0) => {
    const m = rows.length;
    const indices = padRows(rows, Math.min(of, 2 ** Math.ceil(Math.log2(Math.max(m, 1)))));
    const size = indices.length;
    const batch = new Float32Array(size * d);
    batch.set(images.subarray(0, m * d));
    for (let j = m; j < size; j++) batch.set(fill.subarray(indices[j] * d, (indices[j] + 1) * d), j * d);
    // Seeds drawn in the order the eager calls draw them, so both see the same noise.
    const seeds = Array.from({ length: draws }, () => seeded.nextSeed());
    const xt = tensor(batch, [size, 1, h, w]);
    const it = tensor(indices, [size], 'i32');
    const [logits] = f([xt, it], seeds);
    xt.dispose();
    it.dispose();
    checkLogits(op, clf, logits, size);
    return (await read(logits)).subarray(0, m * numClasses);
  };
}

/** `rows` of a batch followed by its lowest other rows, `size` in all: a compiled query's bucket filled up. */
export function padRows(rows: readonly number[], size: number): number[] {
  const out = [...rows];
  const taken = new Set(rows);
  for (let i = 0; out.length < size; i++) if (!taken.has(i)) out.push(i);
  return out;
}

/** The mean of `logitsOfDraw(k)` over the classifier's `draws` noise draws. */
export function meanOverDraws(draws: number, logitsOfDraw: (k: number) => Tensor): Tensor {
  let total = logitsOfDraw(0);
  for (let k = 1; k < draws; k++) total = add(total, logitsOfDraw(k));
  return draws > 1 ? scale(total, 1 / draws) : total;
}

/**
 * `logits` if they are [m, C] for the classifier's C classes; otherwise they are freed and the error names the
 * attack and the classifier.
 */
export function checkLogits(op: string, clf: Classifier, logits: Tensor, m: number): Tensor {
  if (logits.rank !== 2 || logits.shape[0] !== m || logits.shape[1] !== clf.numClasses) {
    logits.dispose();
    throw new Error(`${op}: classifier '${clf.name}' returned logits ${fmt(logits.shape)}, expected [${m}, ${clf.numClasses}]`);
  }
  return logits;
}

/**
 * `t` with its values computed (a deferred fused expression becomes a buffer): state an attack carries across
 * iterations would otherwise grow as an expression every iteration, a new kernel to compile each time.
 */
export const materialised = (t: Tensor): Tensor => (t.buffer, t);

/** Rows one EOT call may hold: the draws of a small batch go through the model together, as large as a full batch. */
const EOT_ROWS = 100;

/**
 * Gradient with respect to x of the cross-entropy of the classifier's softmax against `labels`, averaged over
 * the classifier's `draws` noise draws (numbered from `draw0`). Returns [gradient, loss]; the graph is freed.
 * Under EOT the draws of a small batch are stacked into one call (copies of the batch, each with its own noise),
 * so 20 draws of 2 images cost one pass over 40 rows rather than 20 passes over 2.
 */
export function lossGradient(clf: Classifier, x: Tensor, labels: Tensor, draw0 = 0): { grad: Tensor; loss: Tensor } {
  const { draws } = clf;
  const { perCall, calls } = drawCalls(clf, x.shape[0]);
  const seeded = clf.seeded;
  if (seeded) {
    // Seeds drawn here, in the order the eager calls draw them, so compiled and eager attacks see the same noise.
    const seeds = Array.from({ length: calls }, () => seeded.nextSeed());
    const f = seeded.model.compiled(`loss gradient ${seeded.key} draws=${draws} per call=${perCall}`, () => ([xs, ys], s) => {
      const { grad, loss } = seededLossGradient(clf, xs, ys, s);
      return [grad, loss];
    });
    const [grad, loss] = f([x, labels], seeds);
    return { grad, loss };
  }
  return lossGraph(x, labels, clf.numClasses, draws, perCall, (xv, k, c) => (c === 1 ? clf.logits(xv, draw0 + k * perCall) : clf.logitsOfDraws!(xv, draw0 + k * perCall, c)));
}

/** How `lossGradient` splits the draws for a batch of n images: draws per classifier call, and calls (a seed each). */
export function drawCalls(clf: Classifier, n: number): { perCall: number; calls: number } {
  const perCall = clf.logitsOfDraws ? Math.max(1, Math.min(clf.draws, Math.floor(EOT_ROWS / n))) : 1;
  return { perCall, calls: Math.ceil(clf.draws / perCall) };
}

/**
 * `lossGradient`'s loss and input gradient for a seeded classifier, call k's noise drawn from seeds[k] (the
 * `drawCalls` of the batch): the ops a compiled attack step traces, with the seeds as its arguments.
 */
export function seededLossGradient(clf: Classifier, x: Tensor, labels: Tensor, seeds: readonly number[]): { grad: Tensor; loss: Tensor } {
  const seeded = clf.seeded;
  if (!seeded) throw new Error(`lossGradient: classifier '${clf.name}' does not take explicit seeds`);
  const { perCall, calls } = drawCalls(clf, x.shape[0]);
  if (seeds.length !== calls) throw new Error(`lossGradient: ${calls} seeds expected (one per call), got ${seeds.length}`);
  return lossGraph(x, labels, clf.numClasses, clf.draws, perCall, (xv, k, c) => (c === 1 ? seeded.logits(xv, seeds[k]) : seeded.logitsOfDraws(xv, seeds[k], c)));
}

/** The loss of `lossGradient` over `draws` draws in calls of `perCall` (call k from `logitsOf(x, k, count)`), and its input gradient. */
function lossGraph(x: Tensor, labels: Tensor, numClasses: number, draws: number, perCall: number, logitsOf: (xv: Tensor, call: number, count: number) => Tensor): { grad: Tensor; loss: Tensor } {
  return tidy(() => {
    const xv = noGrad(() => scale(x, 1)).requireGrad();
    const target = oneHot(labels, numClasses);
    let loss: Tensor | null = null;
    for (let d = 0, k = 0; d < draws; d += perCall, k++) {
      const c = Math.min(perCall, draws - d);
      // Summed (not averaged) over the batch so each image's gradient is its own loss's gradient; averaged over draws.
      const l = scale(sum(mul(logSoftmax(logitsOf(xv, k, c)), tileRows(target, c))), -1 / draws);
      loss = loss ? add(loss, l) : l;
    }
    const g = gradients(loss!, null, [xv]).get(xv)!;
    return { grad: g, loss: loss! };
  });
}

/**
 * The checks a host-side black-box attack starts with, and its batch on the host: images in [0, 1] of one
 * channel, labels i32 [N] within the classifier's classes.
 */
export async function hostBatch(op: string, clf: Classifier, x: Tensor, labels: Tensor): Promise<{ n: number; h: number; w: number; d: number; xHost: Float32Array; labelsHost: Int32Array }> {
  await checkImages(op, x);
  checkLabels(op, x, labels);
  const [n, , h, w] = x.shape;
  const xHost = (await x.data()) as Float32Array;
  const labelsHost = (await labels.data()) as Int32Array;
  labelsHost.forEach((l) => {
    if (!(l >= 0 && l < clf.numClasses)) throw new Error(`${op}: labels must lie in [0, ${clf.numClasses}), got ${l}`);
  });
  // One channel (checkImages enforces it), so an image is h * w values.
  return { n, h, w, d: h * w, xHost, labelsHost };
}
