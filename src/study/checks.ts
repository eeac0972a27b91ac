// The protocol's sanity checks (after Carlini et al. 2019, "On evaluating adversarial robustness"), computed from
// the study's per-image results: an attack that converged, unbounded attacks that always succeed, black-box attacks
// no stronger than white-box ones, and each image's worst case over every attack at a budget.
import type { JobResult } from './run.js';

/** A pair of otherwise identical iterative jobs, one with twice the other's iterations. */
export interface ConvergenceCheck {
  model: string;
  attack: string;
  setting: string;
  doubled: string;
  /** Accuracy under attack with n and with 2n iterations, on the images both attacked. */
  accuracy: number;
  accuracyDoubled: number;
  images: number;
  /** |difference| < 1 point. */
  pass: boolean;
}

export interface UnboundedCheck {
  model: string;
  attack: string;
  setting: string;
  successRate: number | null;
  pass: boolean;
}

export interface BlackBoxCheck {
  model: string;
  eps: number;
  blackBox: string;
  whiteBox: string;
  /** Success rates on the images both attacked and that were classified correctly before. */
  blackSuccess: number;
  whiteSuccess: number;
  images: number;
  /** The black-box attack succeeds no more often than the white-box one; otherwise gradients may be masked. */
  pass: boolean;
}

export interface RobustAccuracy {
  model: string;
  eps: number;
  /** Accuracy when every attack at this L-inf budget counts, per image: correct under all of them. */
  accuracy: number;
  images: number;
  attacks: string[];
}

export interface ProtocolChecks {
  convergence: ConvergenceCheck[];
  unbounded: UnboundedCheck[];
  blackBox: BlackBoxCheck[];
  robust: RobustAccuracy[];
}

/** Images an attack left correctly classified, on its first n images. */
const correctAfter = (j: JobResult, n: number) => Array.from({ length: n }, (_, i) => j.results.adversarialPredictions[i] === j.results.labels[i]);
const correctBefore = (j: JobResult, n: number) => Array.from({ length: n }, (_, i) => j.results.cleanPredictions[i] === j.results.labels[i]);
const count = (v: boolean[]) => v.filter(Boolean).length;

/** The setting with its iteration count blanked, so jobs differing only there compare equal. */
const withoutIterations = (setting: string) => setting.replace(/\b\d+ it\b/, 'N it');
const iterationsOf = (setting: string) => Number(/\b(\d+) it\b/.exec(setting)?.[1] ?? NaN);

/** Norm-bounded attacks whose budget is the whole [0, 1] box succeed on everything they can flip. */
const UNBOUNDED_LINF = 1;

export function protocolChecks(jobs: JobResult[]): ProtocolChecks {
  const convergence: ConvergenceCheck[] = [];
  for (const a of jobs) {
    if (a.attack !== 'pgd' && a.attack !== 'mim' && a.attack !== 'cw') continue;
    const n = iterationsOf(a.setting);
    const b = jobs.find((b) => b.model === a.model && b.attack === a.attack && b.variant === a.variant && withoutIterations(b.setting) === withoutIterations(a.setting) && iterationsOf(b.setting) === 2 * n);
    if (!b) continue;
    const images = Math.min(a.results.labels.length, b.results.labels.length);
    const accuracy = count(correctAfter(a, images)) / images;
    const accuracyDoubled = count(correctAfter(b, images)) / images;
    convergence.push({ model: a.model, attack: a.attack, setting: a.setting, doubled: b.setting, accuracy, accuracyDoubled, images, pass: Math.abs(accuracy - accuracyDoubled) < 0.01 });
  }

  const unbounded: UnboundedCheck[] = jobs
    .filter((j) => j.attack === 'deepfool' || j.attack === 'cw' || ((j.attack === 'pgd' || j.attack === 'mim') && !j.setting.includes(' l2') && (j.eps ?? 0) >= UNBOUNDED_LINF))
    .map((j) => ({ model: j.model, attack: j.attack, setting: j.setting, successRate: j.metrics.successRate, pass: j.metrics.successRate === null || j.metrics.successRate === 1 }));

  const blackBox: BlackBoxCheck[] = [];
  const white = jobs.filter((j) => (j.attack === 'pgd' || j.attack === 'mim' || j.attack === 'fgs') && !j.variant && j.eps !== undefined && !j.setting.includes('l2'));
  for (const black of jobs.filter((j) => (j.attack === 'square' || j.attack === 'transfer' || j.attack === 'substitute') && !j.variant && j.eps !== undefined && !j.setting.includes(' l2'))) {
    // The strongest white-box attack at the same budget on the same model.
    const rivals = white.filter((w) => w.model === black.model && w.eps === black.eps);
    if (rivals.length === 0) continue;
    const scored = rivals.map((w) => {
      const images = Math.min(w.results.labels.length, black.results.labels.length);
      const before = correctBefore(w, images);
      const flipped = (j: JobResult) => count(correctAfter(j, images).map((ok, i) => before[i] && !ok));
      const denominator = Math.max(1, count(before));
      return { w, images, blackSuccess: flipped(black) / denominator, whiteSuccess: flipped(w) / denominator };
    });
    const best = scored.reduce((a, b) => (b.whiteSuccess > a.whiteSuccess ? b : a));
    blackBox.push({
      model: black.model,
      eps: black.eps!,
      blackBox: `${black.attack.toUpperCase()} ${black.setting}`,
      whiteBox: `${best.w.attack.toUpperCase()} ${best.w.setting}`,
      blackSuccess: best.blackSuccess,
      whiteSuccess: best.whiteSuccess,
      images: best.images,
      pass: best.blackSuccess <= best.whiteSuccess,
    });
  }

  const robust: RobustAccuracy[] = [];
  // Other classifiers (fresh noise, EOT, independent draws) are other defences: each has a worst case of its own.
  const linfJobs = jobs.filter((j) => j.eps !== undefined && j.attack !== 'cw' && !j.variant && !j.setting.includes(' l2'));
  const models = [...new Set(jobs.map((j) => j.model))];
  for (const model of models) {
    const epsValues = [...new Set(linfJobs.filter((j) => j.model === model).map((j) => j.eps!))].sort((a, b) => a - b);
    const deepfoolInf = jobs.filter((j) => j.model === model && j.attack === 'deepfool' && j.p === 'inf' && !j.variant);
    for (const eps of epsValues) {
      // Every attack within the budget: norm-bounded ones at it or below, and minimal L-inf ones that got inside it.
      const bounded = linfJobs.filter((j) => j.model === model && j.eps! <= eps);
      const all = [...bounded, ...deepfoolInf];
      const images = Math.min(...all.map((j) => j.results.labels.length));
      let robustCount = 0;
      for (let i = 0; i < images; i++) {
        const y = bounded[0].results.labels[i];
        const fooled = bounded.some((j) => j.results.adversarialPredictions[i] !== y) || deepfoolInf.some((j) => j.results.adversarialPredictions[i] !== y && j.results.linf[i] <= eps);
        if (!fooled) robustCount++;
      }
      robust.push({ model, eps, accuracy: robustCount / images, images, attacks: all.map((j) => `${j.attack.toUpperCase()} ${j.setting}`) });
    }
  }
  return { convergence, unbounded, blackBox, robust };
}
