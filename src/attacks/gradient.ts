// Gradient-sign attacks: FGS (Goodfellow et al.), and the iterative attacks the paper also uses: PGD/BIM with
// L_inf or L2 steps and an optional random start (Madry et al.), and MIM (momentum iterative, Dong et al.).
// All operate on whole batches on the GPU; inputs are never modified.
import { Tensor, tidy, sign, scale, add, sub, mul, clamp, div, sqrt, sum, square, abs, mean, addScalar, minimum, maximum, neg, slice, randomUniform, randomNormal, full, tensor, keep, Rng, type TracedFunction } from '../engine.js';
import { type Classifier, lossGradient, seededLossGradient, drawCalls, checkImages, checkLabels, materialised } from './classifier.js';

function checkEps(op: string, eps: number, what = 'eps'): void {
  if (!Number.isFinite(eps) || eps < 0) throw new Error(`${op}: ${what} must be a finite number >= 0, got ${eps}`);
}

export interface FgsOptions {
  eps: number;
  /** Targeted: step down the loss of `target` instead of up the loss of the true label. */
  target?: Tensor;
}

/**
 * The FGS step direction sign(grad_x J) (negated when targeted); every eps of a sweep reuses it, since
 * x_adv(eps) = clip(x + eps * direction, 0, 1).
 */
export async function fgsDirection(clf: Classifier, x: Tensor, labels: Tensor, opts: Omit<FgsOptions, 'eps'> = {}): Promise<Tensor> {
  await checkImages('fgs', x);
  checkLabels('fgs', x, opts.target ?? labels);
  return tidy(() => {
    const { grad } = lossGradient(clf, x, opts.target ?? labels);
    return opts.target ? scale(sign(grad), -1) : sign(grad);
  });
}

export function fgsStep(x: Tensor, direction: Tensor, eps: number): Tensor {
  checkEps('fgs', eps);
  return tidy(() => clamp(add(x, scale(direction, eps)), 0, 1));
}

/** x_adv = clip(x + eps * sign(grad_x J), 0, 1), J the cross-entropy of the classifier's softmax. */
export async function fgs(clf: Classifier, x: Tensor, labels: Tensor, opts: FgsOptions): Promise<Tensor> {
  checkEps('fgs', opts.eps);
  if (opts.eps === 0) {
    await checkImages('fgs', x);
    return scale(x, 1);
  }
  const direction = await fgsDirection(clf, x, labels, opts);
  const adv = fgsStep(x, direction, opts.eps);
  direction.dispose();
  return adv;
}

export type Norm = 'linf' | 'l2';

export interface IterativeOptions {
  eps: number;
  norm: Norm;
  /** Step size per iteration. */
  stepSize: number;
  iterations: number;
  /** Start from a uniformly random point of the eps-ball (PGD) or from x (BIM). */
  randomStart: boolean;
  /** MIM's momentum decay (mu); 0 gives PGD/BIM. */
  momentum?: number;
  seed: number;
  /** Called after every iteration with the current iterate, which stays valid until the callback returns. */
  onIteration?: (iteration: number, adv: Tensor) => void | Promise<void>;
}

/** L2 norm of each image, kept broadcastable against [N, 1, H, W]. */
function l2PerImage(t: Tensor): Tensor {
  return sqrt(addScalar(sum(square(t), [1, 2, 3], true), 1e-24));
}

/** Projects the perturbation onto the eps-ball of the norm (eps a number, or a tensor of one element). */
function project(delta: Tensor, eps: number | Tensor, norm: Norm): Tensor {
  if (norm === 'linf') return typeof eps === 'number' ? clamp(delta, -eps, eps) : minimum(maximum(delta, neg(eps)), eps);
  const n = l2PerImage(delta);
  return mul(delta, minimum(full([], 1), div(typeof eps === 'number' ? full([], eps) : eps, n)));
}

/** The steepest-ascent step of unit norm for the gradient: its sign (L_inf) or its direction (L2). */
function ascentDirection(g: Tensor, norm: Norm): Tensor {
  return norm === 'linf' ? sign(g) : div(g, l2PerImage(g));
}

/** PGD / BIM / MIM: iterated ascent steps on the loss, each projected onto the eps-ball around x and onto [0, 1]. */
export async function iterativeAttack(clf: Classifier, x: Tensor, labels: Tensor, opts: IterativeOptions): Promise<Tensor> {
  const op = opts.momentum ? 'mim' : 'pgd';
  checkEps(op, opts.eps);
  checkEps(op, opts.stepSize, 'stepSize');
  await checkImages(op, x);
  checkLabels(op, x, labels);
  if (!Number.isInteger(opts.iterations) || opts.iterations < 1) throw new Error(`${op}: iterations must be a positive integer, got ${opts.iterations}`);
  if (opts.norm !== 'linf' && opts.norm !== 'l2') throw new Error(`${op}: norm must be 'linf' or 'l2', got '${opts.norm}'`);
  const rng = new Rng(opts.seed);
  let adv = tidy(() => {
    if (!opts.randomStart || opts.eps === 0) return scale(x, 1);
    const start =
      opts.norm === 'linf'
        ? randomUniform(x.shape, rng.nextSeed(), -opts.eps, opts.eps)
        : // Uniform in the L2 ball: a Gaussian direction scaled by eps * u^(1/d).
          project(scale(randomNormal(x.shape, rng.nextSeed()), opts.eps / Math.sqrt(x.size / x.shape[0])), opts.eps, 'l2');
    return clamp(add(x, start), 0, 1);
  });
  const momentum = opts.momentum ?? 0;
  // The step's numbers as a tensor [eps, step size, momentum], so one trace serves every eps of a sweep.
  const scalars = keep(tensor([opts.eps, opts.stepSize, momentum], [3]));
  /** The iteration after the gradient: MIM's velocity, the ascent step, the projections onto the ball and [0, 1]. */
  const advance = (x0: Tensor, a: Tensor, velocity: Tensor | null, grad: Tensor, s: Tensor): Tensor[] => {
    const [eps, step, mu] = [0, 1, 2].map((k) => slice(s, [k], [1]));
    let direction = grad;
    if (momentum) {
      // MIM: accumulate L1-normalised gradients (the velocity starts at zero).
      const normalised = div(grad, addScalar(mean(abs(grad), [1, 2, 3], true), 1e-12));
      direction = add(mul(velocity!, mu), normalised);
    }
    const stepped = add(a, mul(ascentDirection(direction, opts.norm), step));
    const delta = project(sub(stepped, x0), eps, opts.norm);
    return momentum ? [clamp(add(x0, delta), 0, 1), direction] : [clamp(add(x0, delta), 0, 1)];
  };
  const seeded = clf.seeded;
  const { calls } = drawCalls(clf, x.shape[0]);
  // For seeded classifiers the whole iteration (gradient and step) is one compiled function the model keeps,
  // replayed every iteration and by every later call with this batch shape.
  const step = seeded
    ? seeded.model.compiled(`${op} step ${seeded.key} draws=${clf.draws} ${opts.norm}`, (): TracedFunction => ([x0, y, s, a, v], seeds) => advance(x0, a, v ?? null, seededLossGradient(clf, a, y, seeds).grad, s), 2)
    : null;
  let velocity: Tensor | null = momentum ? keep(full(x.shape, 0)) : null;
  try {
    for (let i = 0; i < opts.iterations; i++) {
      const inputs = [x, labels, scalars, adv, ...(velocity ? [velocity] : [])];
      const next = step
        ? step(inputs, Array.from({ length: calls }, () => seeded!.nextSeed()))
        : tidy(() => advance(x, adv, velocity, lossGradient(clf, adv, labels, i * clf.draws).grad, scalars).map(materialised));
      adv.dispose();
      velocity?.dispose();
      [adv, velocity = null] = next.map((t) => keep(t));
      await opts.onIteration?.(i, adv);
    }
  } catch (e) {
    // A callback that stops the attack (the page's Stop button) leaves nothing allocated behind.
    adv.dispose();
    velocity?.dispose();
    throw e;
  } finally {
    scalars.dispose();
  }
  velocity?.dispose();
  return adv;
}


/** Per-image L2 and L_inf norms of x_adv - x, on the host. */
export async function perturbationNorms(x: Tensor, adv: Tensor): Promise<{ l2: Float64Array; linf: Float64Array; x2: Float64Array }> {
  const [a, b] = await Promise.all([x.data(), adv.data()]);
  const n = x.shape[0];
  const d = x.size / n;
  const l2 = new Float64Array(n);
  const linf = new Float64Array(n);
  const x2 = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    let m = 0;
    let xs = 0;
    for (let j = i * d; j < (i + 1) * d; j++) {
      const e = b[j] - a[j];
      s += e * e;
      m = Math.max(m, Math.abs(e));
      xs += a[j] * a[j];
    }
    l2[i] = Math.sqrt(s);
    linf[i] = m;
    x2[i] = Math.sqrt(xs);
  }
  return { l2, linf, x2 };
}
