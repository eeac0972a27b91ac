// DeepFool (Moosavi-Dezfooli et al. 2016) in two variants that share one batched loop.
//
// 'box' (the default) is the seed's Algorithm 2, for any L_p with p > 1 (p = Infinity included). At each iterate,
// for every class k other than the original label l:
//   w_k = grad f_k - grad f_l,  f'_k = f_k - f_l,
// step to the nearest face of the linearised decision region, measured in the dual norm q = p / (p - 1):
//   k* = argmin_k |f'_k| / ||w_k||_q,   r = |f'_k*| / ||w_k*||_q^q * |w_k*|^(q-1) * sign(w_k*),
// and repeat from x_0 + (1 + overshoot) * sum r until the label changes. Points that flip are frozen. Iterates are
// clipped to [0, 1], and w leaves out the pixels held at a bound of that box.
//
// 'foolbox' follows Foolbox 3's L2DeepFoolAttack / LinfDeepFoolAttack (loss 'logits'), so that results can be
// compared with studies that used that library: the candidates are the top `candidates` classes of the clean
// logits (the first being the original class), every pixel takes part in the step, the distance is
// |f'_k| / (||w_k||_q + 1e-8) padded by 1e-4, and the step is d * w / (||w||_2 + 1e-8) for L2 and d * sign(w) for
// Linf. The iterate is x_0 + (1 + overshoot) * sum r clipped to [0, 1], as in 'box'. Foolbox stops an image when
// its prediction differs from the label it is given; here that label is the clean prediction.
//
// One iteration evaluates the gradients of all candidate classes of all still-active images in a single backward
// pass: the batch is replicated once per candidate and the output gradient seeds copy j's candidate in copy j.
import { Tensor, tidy, keep, reshape, broadcastTo, gradients, slice, tensor, gather, add, sub, sum, abs, square, powAbs, sign, mul, gt, affine, noGrad, argmax, readAll, oneHot, scale } from '../engine.js';
import { type Classifier, checkImages } from './classifier.js';

export type DeepFoolVariant = 'box' | 'foolbox';

export interface DeepFoolOptions {
  /** The norm: 2, Infinity, or any p > 1 ('foolbox': 2 or Infinity only). */
  p: number;
  overshoot?: number;
  maxIterations?: number;
  /** 'box' (default): this project's DeepFool; 'foolbox': Foolbox 3's semantics (see the file's header). */
  variant?: DeepFoolVariant;
  /** 'foolbox' only: how many of the clean logits' top classes (the original one included) are candidates; default 10. */
  candidates?: number;
  /**
   * Called after every iteration with the number of points still active and a function that returns the current
   * iterates [N * D] (computed only when called).
   */
  onIteration?: (iteration: number, active: number, current: () => Float32Array) => void | Promise<void>;
}

export interface DeepFoolResult {
  adversarial: Tensor;
  /** Iterations each point needed (maxIterations + 1 where it never flipped). */
  iterations: Int32Array;
  /** The clean prediction the attack moved away from. */
  originalLabels: Int32Array;
  flipped: Uint8Array;
}

function dualExponent(p: number): number {
  if (!(p > 1)) throw new Error(`deepfool: p must be > 1 (2, Infinity or any p > 1), got ${p}`);
  return p === Infinity ? 1 : p / (p - 1);
}

/** ||w||_q^q per row of w [R, D]. */
function powNormQ(w: Tensor, q: number): Tensor {
  if (q === 1) return sum(abs(w), -1);
  if (q === 2) return sum(square(w), -1);
  return sum(powAbs(w, q), -1);
}

/**
 * What differs between the variants once the gradients are in: which classes are candidates (copy j of image i
 * seeds class `classOf(i, j)`, and copy `originalCopy(i)` holds the original class), whether pixels at the box are
 * masked out, and how the distance to a face and the step's scale follow from |f'| and ||w||_q^q.
 */
interface Rule {
  copies: number;
  classOf(image: number, copy: number): number;
  originalCopy(image: number): number;
  maskBox: boolean;
  /** [distance that picks k*, coefficient of the step's shape |w|^(q-1) sign(w)]. */
  scale(absF: number, normQq: number): [number, number];
}

function boxRule(c: number, q: number, originalLabels: Int32Array): Rule {
  return {
    copies: c,
    classOf: (_, k) => k,
    originalCopy: (i) => originalLabels[i],
    maskBox: true,
    scale: (absF, nq) => {
      const wq = q === 1 ? nq : Math.pow(nq, 1 / q);
      // |f'| / ||w||_q^q, times |w|^(q-1) sign(w): exactly the distance to the linearised face.
      return [absF / Math.max(wq, 1e-30), absF / Math.max(nq, 1e-30)];
    },
  };
}

function foolboxRule(q: number, classes: Int32Array, k: number): Rule {
  return {
    copies: k,
    classOf: (i, j) => classes[i * k + j],
    originalCopy: () => 0,
    maskBox: false,
    scale: (absF, nq) => {
      const wq = q === 1 ? nq : Math.sqrt(nq);
      const dist = absF / (wq + 1e-8);
      // Foolbox pads the chosen distance (not the ones compared) by 1e-4 "for numerical stability".
      const padded = dist + 1e-4;
      return [dist, q === 1 ? padded : padded / (wq + 1e-8)];
    },
  };
}

/** Per image, its original class then the other classes by descending clean logit (ties by index), first k kept. */
function topClasses(logits: ArrayLike<number>, originalLabels: Int32Array, c: number, k: number): Int32Array {
  const n = originalLabels.length;
  const out = new Int32Array(n * k);
  for (let i = 0; i < n; i++) {
    const l = originalLabels[i];
    const rest = Array.from({ length: c }, (_, e) => e).filter((e) => e !== l);
    rest.sort((a, b) => logits[i * c + b] - logits[i * c + a] || a - b);
    [l, ...rest].slice(0, k).forEach((e, j) => (out[i * k + j] = e));
  }
  return out;
}

export async function deepfool(clf: Classifier, x0: Tensor, opts: DeepFoolOptions): Promise<DeepFoolResult> {
  const variant = opts.variant ?? 'box';
  if (variant !== 'box' && variant !== 'foolbox') throw new Error(`deepfool: variant must be 'box' or 'foolbox', got '${String(variant)}'`);
  if (variant === 'foolbox' && opts.p !== 2 && opts.p !== Infinity) {
    throw new Error(`deepfool: the 'foolbox' variant supports p = 2 and p = Infinity only (as Foolbox 3 does), got p = ${opts.p}`);
  }
  const q = dualExponent(opts.p);
  if (variant === 'box' && opts.candidates !== undefined) {
    throw new Error(`deepfool: candidates applies to the 'foolbox' variant only (the 'box' variant tries every class)`);
  }
  const candidates = opts.candidates ?? 10;
  if (!Number.isInteger(candidates) || candidates < 2) throw new Error(`deepfool: candidates must be an integer >= 2, got ${candidates}`);
  const overshoot = opts.overshoot ?? 0.02;
  const maxIterations = opts.maxIterations ?? 50;
  if (!(overshoot >= 0) || !Number.isFinite(overshoot)) throw new Error(`deepfool: overshoot must be a finite number >= 0, got ${overshoot}`);
  if (!Number.isInteger(maxIterations) || maxIterations < 1) throw new Error(`deepfool: maxIterations must be a positive integer, got ${maxIterations}`);
  await checkImages('deepfool', x0);
  const n = x0.shape[0];
  const d = x0.size / n;
  const c = clf.numClasses;
  const imageShape = x0.shape.slice(1);
  const x0Flat = await x0.data();
  const total = new Float32Array(n * d); // sum of steps r, per image
  const iterations = new Int32Array(n).fill(maxIterations + 1);
  const flipped = new Uint8Array(n);
  const clean = noGrad(() =>
    tidy(() => {
      const logits = clf.logits(x0, 0);
      return [argmax(logits), logits];
    }),
  );
  const [predData, cleanLogits] = await readAll(clean);
  clean.forEach((t) => t.dispose());
  const originalLabels = predData as Int32Array;
  // Foolbox caps the candidates at the class count, so its default of 10 means every class on 10-class data.
  const top = Math.min(candidates, c);
  const rule = variant === 'box' ? boxRule(c, q, originalLabels) : foolboxRule(q, topClasses(cleanLogits, originalLabels, c, top), top);
  const copies = rule.copies;
  const all = Array.from({ length: n }, (_, i) => i);
  let active = all;

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
    const seedClasses = new Int32Array(copies * m);
    for (let k = 0; k < copies; k++) active.forEach((r, j) => (seedClasses[k * m + j] = rule.classOf(r, k)));
    const step = tidy(() => {
      const x = tensor(xi, [m, ...imageShape]);
      // `copies` copies of the active images, rows (copy, image); copy k's output gradient selects its candidate.
      const xr = noGrad(() => reshape(broadcastTo(reshape(x, [1, m, d]), [copies, m, d]), [copies * m, ...imageShape])).requireGrad();
      // Under EOT the linearisation is of the logits averaged over the classifier's draws (fresh ones every call).
      let logits = clf.logits(xr, it * clf.draws, copies, { indices: active, of: n });
      for (let k = 1; k < clf.draws; k++) logits = add(logits, clf.logits(xr, it * clf.draws + k, copies, { indices: active, of: n }));
      if (clf.draws > 1) logits = scale(logits, 1 / clf.draws);
      const seedGrad = oneHot(tensor(seedClasses, [copies * m], 'i32'), c);
      const g = reshape(gradients(logits, seedGrad, [xr]).get(xr)!, [copies * m, d]);
      const f = slice(logits, [0, 0], [m, c]);
      // w_k = grad f_k - grad f_l for every candidate k, and ||w_k||_q^q.
      const origRows = tensor(active.map((r, j) => rule.originalCopy(r) * m + j), [m], 'i32');
      const wAll = sub(reshape(g, [copies, m, d]), reshape(gather(g, origRows), [1, m, d]));
      let w = wAll;
      if (rule.maskBox) {
        // A pixel at a bound of the box cannot move outward (the iterate is clipped there), so its component of w is
        // dropped: the linearised step is then exact for the pixels that can move. Kept, such components would
        // absorb part of every step and leave a point creeping towards the face without crossing it.
        const xb = reshape(x, [1, m, d]);
        const zero = tensor([0], [1, 1, 1]);
        const movable = add(mul(gt(wAll, zero), gt(affine(xb, -1, 1), zero)), mul(gt(zero, wAll), gt(xb, zero)));
        w = mul(wAll, movable);
      }
      return { f: keep(f), pred: keep(argmax(f)), g: keep(reshape(w, [copies * m, d])), normQ: keep(reshape(powNormQ(reshape(w, [copies * m, d]), q), [copies, m])) };
    });
    const [fHost, predHost, normHost] = await readAll([step.f, step.pred, step.normQ]);
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
      const lCopy = rule.originalCopy(r);
      let best = Infinity;
      let bestK = -1;
      let bestCoefficient = 0;
      for (let k = 0; k < copies; k++) {
        if (k === lCopy) continue;
        const [dist, coefficient] = rule.scale(Math.abs(fHost[j * c + rule.classOf(r, k)] - fHost[j * c + l]), normHost[k * m + j]);
        if (dist < best) {
          best = dist;
          bestK = k;
          bestCoefficient = coefficient;
        }
      }
      stillActive.push(r);
      chosenRows.push(bestK * m + j);
      coefficients.push(bestCoefficient);
    });
    if (stillActive.length) {
      const r = tidy(() => {
        const wSel = gather(step.g, tensor(chosenRows, [chosenRows.length], 'i32'));
        const shape = q === 1 ? sign(wSel) : q === 2 ? wSel : mul(powAbs(wSel, q - 1), sign(wSel));
        return mul(shape, tensor(coefficients, [coefficients.length, 1]));
      });
      const rHost = await r.data();
      r.dispose();
      stillActive.forEach((row, j) => {
        for (let e = 0; e < d; e++) total[row * d + e] += rHost[j * d + e];
      });
    }
    step.f.dispose();
    step.pred.dispose();
    step.g.dispose();
    step.normQ.dispose();
    active = stillActive;
    await opts.onIteration?.(it, active.length, () => iterate(all));
  }
  return { adversarial: tensor(iterate(all), x0.shape), iterations, originalLabels, flipped };
}
