// DeepFool (Moosavi-Dezfooli et al. 2016) for any L_p with p > 1 (p = Infinity included), as in the seed's
// Algorithm 2. At each iterate, for every class k other than the original label l:
//   w_k = grad f_k - grad f_l,  f'_k = f_k - f_l,
// step to the nearest face of the linearised decision region, measured in the dual norm q = p / (p - 1):
//   k* = argmin_k |f'_k| / ||w_k||_q,   r = |f'_k*| / ||w_k*||_q^q * |w_k*|^(q-1) * sign(w_k*),
// and repeat from x_0 + (1 + overshoot) * sum r until the label changes. Points that flip are frozen. Iterates are
// clipped to [0, 1], and w leaves out the pixels held at a bound of that box.
// One iteration evaluates all class gradients of all still-active images in a single backward pass: the batch
// is replicated once per class and the output gradient seeds class c in copy c.
import { Tensor, tidy, keep, reshape, broadcastTo, gradients, slice, tensor, gather, add, sub, sum, abs, square, powAbs, sign, mul, gt, affine, noGrad, argmax, readAll, oneHot } from '../index.js';
import { type Classifier, checkImages } from './classifier.js';

export interface DeepFoolOptions {
  /** The norm: 2, Infinity, or any p > 1. */
  p: number;
  overshoot?: number;
  maxIterations?: number;
  /** Called after every iteration with the number of points still active. */
  onIteration?: (iteration: number, active: number) => void;
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

export async function deepfool(clf: Classifier, x0: Tensor, opts: DeepFoolOptions): Promise<DeepFoolResult> {
  const q = dualExponent(opts.p);
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
  const cleanPred = noGrad(() => tidy(() => argmax(clf.logits(x0, 0))));
  const originalLabels = (await cleanPred.data()) as Int32Array;
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
    const step = tidy(() => {
      const x = tensor(xi, [m, ...imageShape]);
      // c copies of the active images, rows (copy, image); copy k's output gradient selects logit k.
      const xr = noGrad(() => reshape(broadcastTo(reshape(x, [1, m, d]), [c, m, d]), [c * m, ...imageShape])).requireGrad();
      // A fresh noise draw per iteration under expectation over noise (fixed noise ignores the draw index).
      const logits = clf.logits(xr, it, c, { indices: active, of: n });
      const seedGrad = reshape(broadcastTo(reshape(oneHot(tensor(Array.from({ length: c }, (_, k) => k), [c], 'i32'), c), [c, 1, c]), [c, m, c]), [c * m, c]);
      const g = reshape(gradients(logits, seedGrad, [xr]).get(xr)!, [c * m, d]);
      const f = slice(logits, [0, 0], [m, c]);
      // w_k = grad f_k - grad f_l for every k, and ||w_k||_q^q.
      const origRows = tensor(active.map((r, j) => originalLabels[r] * m + j), [m], 'i32');
      const wAll = sub(reshape(g, [c, m, d]), reshape(gather(g, origRows), [1, m, d]));
      // A pixel at a bound of the box cannot move outward (the iterate is clipped there), so its component of w is
      // dropped: the linearised step is then exact for the pixels that can move. Kept, such components would absorb
      // part of every step and leave a point creeping towards the face without crossing it.
      const xb = reshape(x, [1, m, d]);
      const zero = tensor([0], [1, 1, 1]);
      const movable = add(mul(gt(wAll, zero), gt(affine(xb, -1, 1), zero)), mul(gt(zero, wAll), gt(xb, zero)));
      const w = mul(wAll, movable);
      return { f: keep(f), pred: keep(argmax(f)), g: keep(reshape(w, [c * m, d])), normQ: keep(reshape(powNormQ(reshape(w, [c * m, d]), q), [c, m])) };
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
      // |f'| / ||w||_q^q, times |w|^(q-1) sign(w) on the GPU below: exactly the distance to the linearised face.
      coefficients.push(Math.abs(fHost[j * c + bestK] - fHost[j * c + l]) / Math.max(normHost[bestK * m + j], 1e-30));
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
    opts.onIteration?.(it, active.length);
  }
  const all = Array.from({ length: n }, (_, i) => i);
  return { adversarial: tensor(iterate(all), x0.shape), iterations, originalLabels, flipped };
}
