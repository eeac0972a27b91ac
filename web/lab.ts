// The page's work, without the DOM: load the checkpoints, test images and fitted detectors; read an image with
// both models (p(y|x) by Bayes' rule and the three detectors' statistics); run FGS, PGD and DeepFool on one image,
// reporting every iterate. It calls the same engine, models and attacks as the CLI.
import { init, tensor, tidy, noGrad, softmax, type Tensor } from '../src/browser.js';
import { restoreModel, type CheckpointMeta } from '../src/models/restore.js';
import type { LatentVariableClassifier } from '../src/models/factorisations.js';
import { parseIdx } from '../src/data/idx-format.js';
import { bayesClassifier, type Classifier } from '../src/attacks/classifier.js';
import { fgsDirection, fgsStep, iterativeAttack } from '../src/attacks/gradient.js';
import { deepfool } from '../src/attacks/deepfool.js';
import { scoreDetectors, type Detectors } from '../src/attacks/detection.js';
import { PAGE_MODELS, type PageDetectorsFile, type PageModel } from './format.js';

export const PIXELS = 28 * 28;

export interface LoadedModel {
  model: LatentVariableClassifier;
  meta: CheckpointMeta;
  detectors: Detectors;
}

export interface Lab {
  adapter: string;
  models: Record<PageModel, LoadedModel>;
  /** count * 784 pixels in [0, 1]. */
  images: Float32Array;
  labels: Uint8Array;
  count: number;
  detectorsFile: PageDetectorsFile;
}

async function fetchBytes(url: URL): Promise<Uint8Array> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url.pathname}: HTTP ${res.status} ${res.statusText}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** Opens the GPU and fetches everything the page needs from `base` (the page's own URL). */
export async function loadLab(base: string, onStep: (what: string) => void = () => {}): Promise<Lab> {
  onStep('opening the GPU');
  const rt = await init();
  // Browsers run real GPUs; the `gpu` profile's tiles also compile in seconds on SwiftShader, where the
  // `software` profile's large register tiles take minutes.
  rt.kernelProfile = 'gpu';
  onStep('fetching checkpoints and test images');
  const at = (p: string) => new URL(p, base);
  const [imageBytes, labelBytes, detectorsFile, ...checkpoints] = await Promise.all([
    fetchBytes(at('data/test-images.idx3-ubyte')),
    fetchBytes(at('data/test-labels.idx1-ubyte')),
    fetch(at('data/detectors.json')).then((r) => {
      if (!r.ok) throw new Error(`data/detectors.json: HTTP ${r.status}; run npm run web:assets`);
      return r.json() as Promise<PageDetectorsFile>;
    }),
    ...PAGE_MODELS.map((m) => fetchBytes(at(`checkpoints/${m}-compact.safetensors`))),
  ]);
  if (detectorsFile.format !== 'gencls-page-detectors-v1') throw new Error(`data/detectors.json: format '${detectorsFile.format}', expected gencls-page-detectors-v1`);
  const images = parseIdx(imageBytes, 'images', 'data/test-images.idx3-ubyte');
  const labels = parseIdx(labelBytes, 'labels', 'data/test-labels.idx1-ubyte');
  if (images.dims[0] !== labels.dims[0] || images.dims[1] * images.dims[2] !== PIXELS) {
    throw new Error(`test images [${images.dims}] and labels [${labels.dims}] do not match (28x28 images, one label each)`);
  }
  const models = {} as Record<PageModel, LoadedModel>;
  PAGE_MODELS.forEach((key, i) => {
    const path = `checkpoints/${key}-compact.safetensors`;
    const entry = detectorsFile.models[key];
    if (!entry) throw new Error(`data/detectors.json has no detectors for ${key}; run npm run web:assets`);
    models[key] = { ...restoreModel(checkpoints[i], path, { model: key, preset: 'compact' }), detectors: entry.detectors };
  });
  return { adapter: rt.description, models, images: Float32Array.from(images.data, (v) => v / 255), labels: labels.data, count: images.dims[0], detectorsFile };
}

export interface Settings {
  /** Importance samples per class. */
  samples: number;
  /** The noise seed: every reading and every attack gradient sees the same z draws (fixed noise). */
  seed: number;
}

export function classifierOf(lab: Lab, key: PageModel, s: Settings): Classifier {
  return bayesClassifier(lab.models[key].model, { samples: s.samples, noise: { kind: 'fixed', seed: s.seed } });
}

/** One model's view of one image. */
export interface Reading {
  model: PageModel;
  /** log p(x, y = c), importance-sampled. */
  logits: number[];
  /** p(y = c | x) = softmax of the logits. */
  probabilities: number[];
  predicted: number;
  /** The detectors' statistics (of the predicted class where per class), their thresholds and verdicts. */
  detectors: Record<'marginal' | 'logit' | 'kl', { value: number; threshold: number; rejected: boolean; rejectsBelow: boolean }>;
}

/** Reads images x [n * 784] with one model: p(y|x) and the three detectors. */
export async function read(lab: Lab, key: PageModel, x: Float32Array, s: Settings): Promise<Reading[]> {
  const n = x.length / PIXELS;
  const { model, detectors: d } = lab.models[key];
  const out = noGrad(() =>
    tidy(() => {
      const logits = model.logits(tensor(x, [n, 1, 28, 28]), { samples: s.samples, seed: s.seed });
      return [logits, softmax(logits)];
    }),
  );
  const [logits, probs] = (await Promise.all(out.map((t) => t.data()))) as Float32Array[];
  out.forEach((t) => t.dispose());
  const scores = scoreDetectors(d, logits, n);
  return Array.from({ length: n }, (_, i) => {
    const c = scores.predicted[i];
    return {
      model: key,
      logits: Array.from(logits.subarray(i * 10, i * 10 + 10)),
      probabilities: Array.from(probs.subarray(i * 10, i * 10 + 10)),
      predicted: c,
      detectors: {
        marginal: { value: -scores.marginal[i], threshold: d.marginal.threshold, rejected: scores.rejected.marginal[i] === 1, rejectsBelow: true },
        logit: { value: -scores.logit[i], threshold: d.logit[c].threshold, rejected: scores.rejected.logit[i] === 1, rejectsBelow: true },
        kl: { value: scores.kl[i], threshold: d.kl[c].threshold, rejected: scores.rejected.kl[i] === 1, rejectsBelow: false },
      },
    };
  });
}

export type AttackSpec =
  | { kind: 'fgs'; eps: number }
  | { kind: 'pgd'; eps: number; stepSize: number; iterations: number }
  | { kind: 'deepfool'; maxIterations: number; overshoot: number };

export interface Frame {
  /** 0-based iteration just finished; FGS has one. */
  iteration: number;
  adversarial: Float32Array;
}

export class Stopped extends Error {
  override name = 'Stopped';
}

/**
 * Attacks one image x [784] of class `label` on the model `key`, calling `onFrame` with every iterate (awaited,
 * so the page can draw it); `shouldStop` ends the attack at the next iterate with `Stopped`. Returns the final
 * adversarial image; FGS also returns its direction sign(grad), from which any eps follows without a gradient.
 */
export async function attack(lab: Lab, key: PageModel, x0: Float32Array, label: number, spec: AttackSpec, s: Settings, onFrame: (f: Frame) => Promise<void>, shouldStop: () => boolean = () => false): Promise<{ adversarial: Float32Array; direction?: Float32Array }> {
  const clf = classifierOf(lab, key, s);
  const x = tensor(x0, [1, 1, 28, 28]);
  const y = tensor([label], [1], 'i32');
  const frame = async (iteration: number, adversarial: Float32Array) => {
    await onFrame({ iteration, adversarial });
    if (shouldStop()) throw new Stopped('stopped');
  };
  try {
    if (spec.kind === 'fgs') {
      const direction = await fgsDirection(clf, x, y);
      const adv = fgsStep(x, direction, spec.eps);
      const [d, a] = (await Promise.all([direction.data(), adv.data()])) as Float32Array[];
      direction.dispose();
      adv.dispose();
      await frame(0, a);
      return { adversarial: a, direction: d };
    }
    if (spec.kind === 'pgd') {
      const adv = await iterativeAttack(clf, x, y, {
        eps: spec.eps,
        norm: 'linf',
        stepSize: spec.stepSize,
        iterations: spec.iterations,
        randomStart: false,
        seed: s.seed,
        onIteration: async (i, t: Tensor) => frame(i, (await t.data()) as Float32Array),
      });
      const a = (await adv.data()) as Float32Array;
      adv.dispose();
      return { adversarial: a };
    }
    const r = await deepfool(clf, x, { p: 2, overshoot: spec.overshoot, maxIterations: spec.maxIterations, onIteration: (i, _active, current) => frame(i, current()) });
    const a = (await r.adversarial.data()) as Float32Array;
    r.adversarial.dispose();
    return { adversarial: a };
  } finally {
    x.dispose();
    y.dispose();
  }
}

/** FGS at any eps from its one gradient's direction: fgsStep again, no new gradient. */
export async function fgsAt(x0: Float32Array, direction: Float32Array, eps: number): Promise<Float32Array> {
  const out = tidy(() => fgsStep(tensor(x0, [1, 1, 28, 28]), tensor(direction, [1, 1, 28, 28]), eps));
  const a = (await out.data()) as Float32Array;
  out.dispose();
  return a;
}
