// FGS and batched DeepFool on the TensorFlow.js peer models, mirroring src/attacks/gradient.ts (fgs) and
// src/attacks/deepfool.ts step for step: the same host bookkeeping, the same GPU work per iteration (all class
// gradients of all active images in one backward pass, the batch replicated once per class, copy c seeding
// logit c), the same reads back to the host. Speed peers for bench/attacks.ts.
import * as tf from '@tensorflow/tfjs-core';
import type { PeerClassifier, PeerLogitsOptions } from './tfjs-models.js';

/** What an attack sees (as src/attacks/classifier.ts): images [N, 28, 28, 1] -> logits [N, C]. */
export interface PeerAttackTarget {
  readonly numClasses: number;
  logits(x: tf.Tensor4D, draw: number, replicas?: number): tf.Tensor2D;
}

/** Bayes-rule logits with K samples per class and fixed noise (the same z draws on every call). */
export function peerBayesClassifier(model: PeerClassifier, opts: { samples?: number; seed: number; drawNoise?: PeerLogitsOptions['drawNoise'] }): PeerAttackTarget {
  return {
    numClasses: 10,
    logits: (x, _draw, replicas = 1) => model.logits(x, { samples: opts.samples ?? 10, seed: opts.seed, replicas, drawNoise: opts.drawNoise }),
  };
}

/** x_adv = clip(x + eps * sign(grad_x J), 0, 1), J the summed cross-entropy of the softmax against `labels`. */
export async function fgsTfjs(clf: PeerAttackTarget, x: tf.Tensor4D, labels: tf.Tensor1D, eps: number): Promise<tf.Tensor4D> {
  return tf.tidy(() => {
    const y = tf.cast(tf.oneHot(labels, clf.numClasses), 'float32');
    const loss = (xv: tf.Tensor) => tf.neg(tf.sum(tf.mul(y, tf.logSoftmax(clf.logits(xv as tf.Tensor4D, 0)))));
    const g = tf.grad(loss)(x);
    return tf.clipByValue(tf.add(x, tf.mul(tf.sign(g), eps)), 0, 1) as tf.Tensor4D;
  });
}

export interface PeerDeepFoolOptions {
  p: number;
  overshoot?: number;
  maxIterations?: number;
  onIteration?: (iteration: number, active: number) => void;
}

export interface PeerDeepFoolResult {
  adversarial: tf.Tensor4D;
  iterations: Int32Array;
  originalLabels: Int32Array;
  flipped: Uint8Array;
}

function dualExponent(p: number): number {
  if (!(p > 1)) throw new Error(`deepfool: p must be > 1, got ${p}`);
  return p === Infinity ? 1 : p / (p - 1);
}

/** ||w||_q^q per row of w [R, D]. */
function powNormQ(w: tf.Tensor2D, q: number): tf.Tensor1D {
  if (q === 1) return tf.sum(tf.abs(w), -1);
  if (q === 2) return tf.sum(tf.square(w), -1);
  return tf.sum(tf.pow(tf.abs(w), q), -1);
}

/** DeepFool (Moosavi-Dezfooli et al.) for L_p, p > 1: the algorithm of src/attacks/deepfool.ts on tfjs. */
export async function deepfoolTfjs(clf: PeerAttackTarget, x0: tf.Tensor4D, opts: PeerDeepFoolOptions): Promise<PeerDeepFoolResult> {
  const q = dualExponent(opts.p);
  const overshoot = opts.overshoot ?? 0.02;
  const maxIterations = opts.maxIterations ?? 50;
  const n = x0.shape[0];
  const d = x0.size / n;
  const c = clf.numClasses;
  const imageShape = x0.shape.slice(1) as [number, number, number];
  const x0Flat = (await x0.data()) as Float32Array;
  const total = new Float32Array(n * d);
  const iterations = new Int32Array(n).fill(maxIterations + 1);
  const flipped = new Uint8Array(n);
  const cleanPred = tf.tidy(() => tf.argMax(clf.logits(x0, 0), 1));
  const originalLabels = Int32Array.from((await cleanPred.data()) as Int32Array);
  cleanPred.dispose();
  let active = Array.from({ length: n }, (_, i) => i);

  const iterate = (rows: number[]) => {
    const xi = new Float32Array(rows.length * d);
    rows.forEach((r, j) => {
      for (let e = 0; e < d; e++) xi[j * d + e] = Math.min(1, Math.max(0, x0Flat[r * d + e] + (1 + overshoot) * total[r * d + e]));
    });
    return xi;
  };

  for (let it = 0; it <= maxIterations && active.length > 0; it++) {
    const m = active.length;
    const xi = iterate(active);
    const step = tf.tidy(() => {
      const x = tf.tensor4d(xi, [m, ...imageShape]);
      // c copies of the active images, rows (copy, image); copy k's output gradient selects logit k.
      const xr = tf.reshape(tf.broadcastTo(tf.reshape(x, [1, m, d]), [c, m, d]), [c * m, ...imageShape]) as tf.Tensor4D;
      const seedGrad = tf.reshape(tf.broadcastTo(tf.reshape(tf.eye(c), [c, 1, c]), [c, m, c]), [c * m, c]) as tf.Tensor2D;
      const { value: logits, grad } = tf.valueAndGrad((xv: tf.Tensor4D) => clf.logits(xv, it, c))(xr, seedGrad);
      const g = tf.reshape(grad, [c * m, d]) as tf.Tensor2D;
      const f = tf.slice(logits, [0, 0], [m, c]);
      // w_k = grad f_k - grad f_l for every k, and ||w_k||_q^q.
      const origRows = tf.tensor1d(active.map((r, j) => originalLabels[r] * m + j), 'int32');
      const wAll = tf.sub(tf.reshape(g, [c, m, d]), tf.reshape(tf.gather(g, origRows), [1, m, d]));
      // Pixels at a bound of the box leave the step (as ours).
      const xb = tf.reshape(x, [1, m, d]);
      const mask = (b: tf.Tensor) => tf.cast(b, 'float32');
      const movable = tf.add(tf.mul(mask(tf.greater(wAll, 0)), mask(tf.less(xb, 1))), tf.mul(mask(tf.less(wAll, 0)), mask(tf.greater(xb, 0))));
      const w = tf.reshape(tf.mul(wAll, movable), [c * m, d]) as tf.Tensor2D;
      return { f, pred: tf.argMax(f, 1), g: w, normQ: tf.reshape(powNormQ(w, q), [c, m]) };
    });
    const [fHost, predHost, normHost] = (await Promise.all([step.f.data(), step.pred.data(), step.normQ.data()])) as [Float32Array, Int32Array, Float32Array];
    const stillActive: number[] = [];
    const chosenRows: number[] = [];
    const coefficients: number[] = [];
    active.forEach((r, j) => {
      if (predHost[j] !== originalLabels[r]) {
        flipped[r] = 1;
        iterations[r] = it;
        return;
      }
      if (it === maxIterations) return;
      const l = originalLabels[r];
      let best = Infinity;
      let bestK = -1;
      for (let k = 0; k < c; k++) {
        if (k === l) continue;
        const fk = Math.abs(fHost[j * c + k] - fHost[j * c + l]);
        const nq = normHost[k * m + j];
        const wq = q === 1 ? nq : Math.pow(nq, 1 / q);
        const dist = fk / Math.max(wq, 1e-30);
        if (dist < best) {
          best = dist;
          bestK = k;
        }
      }
      stillActive.push(r);
      chosenRows.push(bestK * m + j);
      coefficients.push(Math.abs(fHost[j * c + bestK] - fHost[j * c + l]) / Math.max(normHost[bestK * m + j], 1e-30));
    });
    if (stillActive.length) {
      const r = tf.tidy(() => {
        const wSel = tf.gather(step.g, tf.tensor1d(chosenRows, 'int32'));
        const shape = q === 1 ? tf.sign(wSel) : q === 2 ? wSel : tf.mul(tf.pow(tf.abs(wSel), q - 1), tf.sign(wSel));
        return tf.mul(shape, tf.tensor2d(coefficients, [coefficients.length, 1]));
      });
      const rHost = (await r.data()) as Float32Array;
      r.dispose();
      stillActive.forEach((row, j) => {
        for (let e = 0; e < d; e++) total[row * d + e] += rHost[j * d + e];
      });
    }
    tf.dispose([step.f, step.pred, step.g, step.normQ]);
    active = stillActive;
    opts.onIteration?.(it, active.length);
  }
  const all = Array.from({ length: n }, (_, i) => i);
  return { adversarial: tf.tensor4d(iterate(all), x0.shape), iterations, originalLabels, flipped };
}
