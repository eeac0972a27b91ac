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
// One iteration evaluates the gradients of all candidate classes of a batch of images in a single backward pass:
// the batch is replicated once per candidate and the output gradient seeds copy j's candidate in copy j. The
// rest of the iteration stays on the GPU too: the iterate is built from x_0 and the summed steps, the nearest face
// is an argmax of the negated distances, the chosen w and coefficient are picked out by a one-hot mask, and the
// step, the flags and the iteration counts are updated under masks, so a point that flips gets a zero step from
// then on. The host reads one small thing per iteration, each batch point's "still active" flag, which drives
// the stopping rule and the batch's compaction: once half of the batch has stopped, the batch shrinks to the
// points still active (the others' state is merged into the full batch's), so the cost follows the active set
// while a batch keeps its shape for several iterations. With a classifier that can be called with explicit seeds
// (`Classifier.seeded`) the iteration is a compiled function, traced once per batch and replayed per iteration.
import { Tensor, tidy, keep, reshape, broadcastTo, gradients, slice, tensor, gather, add, sub, sum, abs, sqrt, powAbs, square, sign, mul, div, gt, affine, addScalar, scale, clamp, maximum, full, concat, transpose, noGrad, argmax, readAll, oneHot, compile, type CompiledFunction, type TracedFunction } from '../engine.js';
import { type Classifier, checkImages, materialised } from './classifier.js';
import type { BatchRows } from '../models/factorisations.js';

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
   * iterates [N * D]. The iterates live on the GPU: they are read back (with the iteration's flags, in the same
   * read) only for a callback that declares the third parameter, since `current` must answer synchronously.
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

/** max(t, lo) elementwise, for a scalar floor. */
const atLeast = (t: Tensor, lo: number) => maximum(t, full([], lo));

/**
 * What differs between the variants once the gradients are in: which classes are candidates (copy j of image i
 * seeds class `classOf(i, j)`, and copy `originalCopy(i)` holds the original class), whether pixels at the box are
 * masked out, and how the distance to a face and the step's scale follow from |f'| and ||w||_q^q (tensors of the
 * same shape, elementwise).
 */
interface Rule {
  copies: number;
  classOf(image: number, copy: number): number;
  originalCopy(image: number): number;
  maskBox: boolean;
  /** The distance that picks k*. */
  distance(absF: Tensor, normQq: Tensor): Tensor;
  /** The coefficient of the step's shape |w|^(q-1) sign(w) for the chosen face. */
  coefficient(absF: Tensor, normQq: Tensor): Tensor;
}

function boxRule(c: number, q: number, originalLabels: Int32Array): Rule {
  const normQ = (nq: Tensor) => (q === 1 ? nq : q === 2 ? sqrt(nq) : powAbs(nq, 1 / q));
  return {
    copies: c,
    classOf: (_, k) => k,
    originalCopy: (i) => originalLabels[i],
    maskBox: true,
    distance: (absF, nq) => div(absF, atLeast(normQ(nq), 1e-30)),
    // |f'| / ||w||_q^q, times |w|^(q-1) sign(w): exactly the distance to the linearised face.
    coefficient: (absF, nq) => div(absF, atLeast(nq, 1e-30)),
  };
}

function foolboxRule(q: number, classes: Int32Array, k: number): Rule {
  const normQ = (nq: Tensor) => (q === 1 ? nq : sqrt(nq));
  const distance = (absF: Tensor, nq: Tensor) => div(absF, addScalar(normQ(nq), 1e-8));
  return {
    copies: k,
    classOf: (i, j) => classes[i * k + j],
    originalCopy: () => 0,
    maskBox: false,
    distance,
    coefficient: (absF, nq) => {
      // Foolbox pads the chosen distance (not the ones compared) by 1e-4 "for numerical stability".
      const padded = addScalar(distance(absF, nq), 1e-4);
      return q === 1 ? padded : div(padded, addScalar(normQ(nq), 1e-8));
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

/**
 * The per-point state the loop carries: the summed steps r [B, D], and per point 1/0 flags "still active" and
 * "flipped", and the iteration count (maxIterations + 1 until it flips), as f32 [B].
 */
interface State {
  total: Tensor;
  active: Tensor;
  iterations: Tensor;
  flipped: Tensor;
}

const stateOf = ([total, active, iterations, flipped]: readonly Tensor[]): State => ({ total, active, iterations, flipped });
const fields = (s: State): Tensor[] => [s.total, s.active, s.iterations, s.flipped];
const disposeState = (s: State) => fields(s).forEach((t) => t.dispose());

/** The state of rows `rows` of `s`. */
const gatherState = (s: State, rows: readonly number[]): State => {
  const idx = tensor(rows, [rows.length], 'i32');
  const out = stateOf(fields(s).map((t) => keep(gather(t, idx))));
  idx.dispose();
  return out;
};

/** `whole` with the rows `rows` replaced by `batch`'s (one gather from the two stacked). */
const mergeState = (whole: State, batch: State, rows: readonly number[]): State => {
  const n = whole.total.shape[0];
  const from = Int32Array.from({ length: n }, (_, i) => i);
  rows.forEach((r, j) => (from[r] = n + j));
  return tidy(() => {
    const idx = tensor(from, [n], 'i32');
    return stateOf(fields(whole).map((t, k) => keep(materialised(gather(concat([t, fields(batch)[k]], 0), idx)))));
  });
};

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
  const { draws, seeded } = clf;
  const imageShape = x0.shape.slice(1);
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

  /** The iterate clip(x_0 + (1 + overshoot) * total, 0, 1), flat [B, D]. */
  const iterateOf = (x0Flat: Tensor, total: Tensor) => clamp(add(x0Flat, scale(total, 1 + overshoot)), 0, 1);

  /**
   * One iteration on the batch of images `rows` (of the n): inputs [x_0 [B, ...], the state's four tensors, the
   * iteration number [1], the candidates' one-hot seeds [copies * B, C], the original labels one-hot [B, C], the
   * original copy's mask [copies, B], its rows i32 [B]]; `drawIds` names the noise of each of the `draws` calls
   * (a seed for a seeded classifier, else a draw number). Returns the next state and iteration number.
   */
  const stepOf = (rows: readonly number[]): TracedFunction => (inputs, drawIds) => {
    const [x0b, total, active, iters, flipped, it, seedHot, labelHot, originalMask, originalRows] = inputs;
    const b = x0b.shape[0];
    const batchRows: BatchRows = { indices: [...rows], of: n };
    const x = noGrad(() => iterateOf(reshape(x0b, [b, d]), total));
    // `copies` copies of the batch, rows (copy, image); copy k's output gradient selects its candidate.
    const xr = noGrad(() => reshape(broadcastTo(reshape(x, [1, b, d]), [copies, b, d]), [copies * b, ...imageShape])).requireGrad();
    const logitsOf = (k: number) => (seeded ? seeded.logits(xr, drawIds[k], copies, batchRows) : clf.logits(xr, drawIds[k], copies, batchRows));
    // Under EOT the linearisation is of the logits averaged over the classifier's draws (fresh ones every call).
    let logits = logitsOf(0);
    for (let k = 1; k < draws; k++) logits = add(logits, logitsOf(k));
    if (draws > 1) logits = scale(logits, 1 / draws);
    const g = reshape(gradients(logits, seedHot, [xr]).get(xr)!, [copies * b, d]);
    return noGrad(() => {
      const f = slice(logits, [0, 0], [b, c]);
      // Masks are exact 0/1 values, so the selects below (m * a + (1 - m) * b) reproduce either side exactly.
      const still = sum(mul(oneHot(argmax(f), c), labelHot), -1);
      const flipsNow = mul(active, affine(still, -1, 1));
      const nextIters = add(mul(flipsNow, it), mul(affine(flipsNow, -1, 1), iters));
      // The last check (iteration maxIterations) takes no step: the points still active there never flipped.
      const steps = mul(mul(active, still), gt(full([1], maxIterations), it));
      // w_k = grad f_k - grad f_l for every candidate k, and ||w_k||_q^q.
      const wAll = sub(reshape(g, [copies, b, d]), reshape(gather(g, originalRows), [1, b, d]));
      let w = wAll;
      if (rule.maskBox) {
        // A pixel at a bound of the box cannot move outward (the iterate is clipped there), so its component of w is
        // dropped: the linearised step is then exact for the pixels that can move. Kept, such components would
        // absorb part of every step and leave a point creeping towards the face without crossing it.
        const xb = reshape(x, [1, b, d]);
        const zero = full([1, 1, 1], 0);
        const movable = add(mul(gt(wAll, zero), gt(affine(xb, -1, 1), zero)), mul(gt(zero, wAll), gt(xb, zero)));
        w = mul(wAll, movable);
      }
      const normQq = reshape(powNormQ(reshape(w, [copies * b, d]), q), [copies, b]);
      const fCandidate = sum(mul(reshape(seedHot, [copies, b, c]), reshape(f, [1, b, c])), -1);
      const fOriginal = sum(mul(f, labelHot), -1);
      const absF = abs(sub(fCandidate, reshape(fOriginal, [1, b])));
      // k* = argmin over the candidates other than the original class: argmax of the negated distance, the
      // original copy pushed to the bottom. Ties go to the lowest copy, as a first-minimum scan does.
      const score = sub(scale(rule.distance(absF, normQq), -1), scale(originalMask, 3e38));
      const chosen = transpose(oneHot(argmax(transpose(score)), copies));
      const pick = (t: Tensor) => sum(mul(chosen, t), 0);
      const wChosen = sum(mul(reshape(chosen, [copies, b, 1]), w), 0);
      const shape = q === 1 ? sign(wChosen) : q === 2 ? wChosen : mul(powAbs(wChosen, q - 1), sign(wChosen));
      // From the chosen face's |f'| and ||w||_q^q only, so a far face's huge coefficient never meets a zero mask.
      const coefficient = mul(rule.coefficient(pick(absF), pick(normQq)), steps);
      // Computed now, not left as fused expressions: the next iteration's would extend them, and an expression
      // that grows every iteration is a new kernel (a pipeline to compile) every iteration.
      return [add(total, mul(shape, reshape(coefficient, [b, 1]))), steps, nextIters, add(flipped, flipsNow), addScalar(it, 1)].map(materialised);
    });
  };

  /** A batch: its rows, x_0 and constants for them, and its step (compiled when the classifier takes seeds). */
  const batchOf = (rows: number[]) => {
    const b = rows.length;
    const seedClasses = new Int32Array(copies * b);
    const originalRows = new Int32Array(b);
    const originalMask = new Float32Array(copies * b);
    for (let k = 0; k < copies; k++) rows.forEach((r, j) => (seedClasses[k * b + j] = rule.classOf(r, k)));
    rows.forEach((r, j) => {
      originalRows[j] = rule.originalCopy(r) * b + j;
      originalMask[rule.originalCopy(r) * b + j] = 1;
    });
    const constants = tidy(() => {
      const idx = tensor(rows, [b], 'i32');
      return [gather(x0, idx), oneHot(tensor(seedClasses, [copies * b], 'i32'), c), oneHot(gather(tensor(originalLabels, [n], 'i32'), idx), c), tensor(originalMask, [copies, b]), tensor(originalRows, [b], 'i32')].map((t) => keep(t));
    });
    const fn = stepOf(rows);
    const compiled: CompiledFunction | null = seeded ? compile(fn, { name: 'deepfool step', maxTraces: 1 }) : null;
    const step = (state: State, it: Tensor, drawIds: number[]): { state: State; it: Tensor } => {
      const [x0b, ...rest] = constants;
      const inputs = [x0b, ...fields(state), it, ...rest];
      const out = compiled ? compiled(inputs, drawIds) : tidy(() => fn(inputs, drawIds) as Tensor[]);
      const kept = out.map((t) => keep(t));
      return { state: stateOf(kept), it: kept[4] };
    };
    return {
      rows,
      step,
      dispose: () => {
        compiled?.dispose();
        constants.forEach((t) => t.dispose());
      },
    };
  };

  const x0Flat = keep(reshape(x0, [n, d]));
  let whole: State = tidy(() => stateOf([full([n, d], 0), full([n], 1), full([n], maxIterations + 1), full([n], 0)].map((t) => keep(t))));
  let batch = batchOf(Array.from({ length: n }, (_, i) => i));
  let state = gatherState(whole, batch.rows);
  let it = keep(full([1], 0));
  const replace = (next: State) => {
    disposeState(state);
    state = next;
  };
  const settle = () => {
    const merged = mergeState(whole, state, batch.rows);
    disposeState(whole);
    whole = merged;
  };
  const wantsIterates = (opts.onIteration?.length ?? 0) >= 3;
  try {
    for (let i = 0; i <= maxIterations; i++) {
      const drawIds = Array.from({ length: draws }, (_, k) => (seeded ? seeded.nextSeed() : i * draws + k));
      const next = batch.step(state, it, drawIds);
      it.dispose();
      it = next.it;
      replace(next.state);
      let iterates: Float32Array | null = null;
      const reads: Tensor[] = [state.active];
      if (wantsIterates) {
        reads.push(
          tidy(() => {
            const merged = mergeState(whole, state, batch.rows);
            const xs = iterateOf(x0Flat, merged.total);
            disposeState(merged);
            return xs;
          }),
        );
      }
      const [flags, xs] = await readAll(reads);
      if (wantsIterates) {
        reads[1].dispose();
        iterates = xs as Float32Array;
      }
      const stillActive = batch.rows.map((_, j) => j).filter((j) => flags[j] > 0);
      await opts.onIteration?.(i, stillActive.length, () => {
        if (!iterates) throw new Error('deepfool: current() reads the iterates back only for an onIteration callback that declares its third parameter');
        return iterates;
      });
      if (stillActive.length === 0) break;
      if (stillActive.length <= batch.rows.length / 2) {
        // Half the batch has stopped: carry on with the points still active, the others' state final.
        settle();
        const smaller = gatherState(state, stillActive);
        const rows = stillActive.map((j) => batch.rows[j]);
        batch.dispose();
        batch = batchOf(rows);
        replace(smaller);
      }
    }
    settle();
    const adversarial = tidy(() => reshape(iterateOf(x0Flat, whole.total), x0.shape));
    const [iterHost, flipHost] = await readAll([whole.iterations, whole.flipped]);
    return { adversarial, iterations: Int32Array.from(iterHost), originalLabels, flipped: Uint8Array.from(flipHost) };
  } finally {
    batch.dispose();
    disposeState(state);
    disposeState(whole);
    it.dispose();
    x0Flat.dispose();
  }
}
