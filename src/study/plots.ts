// Figures: Vega-Lite specifications rendered headless to SVG (no browser or canvas needed), and the image grid
// written as a PNG with pngjs.
import * as vega from 'vega';
import * as vl from 'vega-lite';
import { PNG } from 'pngjs';
import type { JobResult, StudyResult } from './run.js';

async function renderSvg(spec: vl.TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

const EPS_ATTACKS = new Set(['fgs', 'pgd', 'mim', 'transfer', 'square']);

/** Accuracy under attack against eps, one line per model, one panel per attack. */
export async function accuracyVsEps(study: StudyResult): Promise<string> {
  const values = [
    ...study.jobs
      .filter((j) => EPS_ATTACKS.has(j.attack) && j.eps !== undefined)
      .map((j) => ({ model: j.model.toUpperCase(), attack: j.attack.toUpperCase(), eps: j.eps, accuracy: j.metrics.adversarialAccuracy })),
    // eps = 0: clean accuracy on the same images the attack used (attacks may use smaller subsets).
    ...[...new Map(study.jobs.filter((j) => EPS_ATTACKS.has(j.attack)).map((j) => [`${j.model}/${j.attack}`, j])).values()].map((j) => ({
      model: j.model.toUpperCase(),
      attack: j.attack.toUpperCase(),
      eps: 0,
      accuracy: j.metrics.cleanAccuracy,
    })),
  ];
  return renderSvg({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    data: { values },
    facet: { field: 'attack', type: 'nominal', title: null },
    columns: 3,
    spec: {
      width: 220,
      height: 160,
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'eps', type: 'quantitative', title: 'ε (L∞ budget)' },
        y: { field: 'accuracy', type: 'quantitative', title: 'accuracy under attack', scale: { domain: [0, 1] }, axis: { format: '%' } },
        color: { field: 'model', type: 'nominal', title: 'model' },
      },
    },
    resolve: { scale: { x: 'independent' } },
  });
}

/** Distribution of rho = ||eta||_2 / ||x||_2 over successful minimal-perturbation (DeepFool) examples. */
export async function rhoDistributions(study: StudyResult): Promise<string> {
  const values = study.jobs
    .filter((j) => j.attack === 'deepfool')
    .flatMap((j) => {
      const r = j.results;
      return r.labels.flatMap((y, i) => (r.cleanPredictions[i] === y && r.adversarialPredictions[i] !== y ? [{ model: j.model.toUpperCase(), setting: `DeepFool ${j.setting}`, rho: r.l2[i] / r.xNorm[i] }] : []));
    });
  return renderSvg({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    data: { values },
    facet: { field: 'setting', type: 'nominal', title: null },
    spec: {
      width: 260,
      height: 160,
      mark: { type: 'boxplot', extent: 'min-max' },
      encoding: {
        x: { field: 'rho', type: 'quantitative', title: 'ρ = ‖η‖₂ / ‖x‖₂ (successful examples)' },
        y: { field: 'model', type: 'nominal', title: null },
        color: { field: 'model', type: 'nominal', legend: null },
      },
    },
    resolve: { scale: { x: 'independent' } },
  });
}

/** ROC curves of the three detectors on clean test data against successful adversarial examples (AUCs in the tables). */
export async function rocCurves(jobs: JobResult[], model: string): Promise<string> {
  const values = jobs.flatMap((j) =>
    Object.entries(j.detection.detectors).flatMap(([detector, { roc }]) =>
      roc ? roc.fpr.map((fpr, k) => ({ detector, job: `${j.attack.toUpperCase()} ${j.setting}`, fpr, tpr: roc.tpr[k], order: k })) : [],
    ),
  );
  return renderSvg({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    data: { values },
    facet: { field: 'detector', type: 'nominal', title: null },
    spec: {
      width: 200,
      height: 200,
      mark: { type: 'line', clip: true },
      encoding: {
        x: { field: 'fpr', type: 'quantitative', title: 'false-positive rate (clean test)', scale: { domain: [0, 1] } },
        y: { field: 'tpr', type: 'quantitative', title: 'detection rate (successful attacks)', scale: { domain: [0, 1] } },
        color: { field: 'job', type: 'nominal', title: `${model.toUpperCase()}: attack` },
        order: { field: 'order', type: 'quantitative' },
      },
    },
  });
}

/**
 * Rows of 28x28 images: for each attack shown, clean / adversarial / perturbation (mid-grey = 0, scaled so the
 * largest |eta| in the row reaches black or white).
 */
export function imageGrid(rows: { clean: number[][]; adversarial: number[][] }[], scale = 3): Buffer {
  const cols = Math.max(...rows.map((r) => r.clean.length));
  const tile = 28 * scale;
  const gap = 2 * scale;
  const bands = rows.length * 3;
  const png = new PNG({ width: cols * (tile + gap) + gap, height: bands * (tile + gap) + gap });
  png.data.fill(255);
  const put = (bandRow: number, col: number, pixels: number[], map: (v: number) => number) => {
    for (let y = 0; y < 28; y++)
      for (let x = 0; x < 28; x++) {
        const v = Math.max(0, Math.min(255, Math.round(map(pixels[y * 28 + x]) * 255)));
        for (let dy = 0; dy < scale; dy++)
          for (let dx = 0; dx < scale; dx++) {
            const px = gap + col * (tile + gap) + x * scale + dx;
            const py = gap + bandRow * (tile + gap) + y * scale + dy;
            const o = (py * png.width + px) * 4;
            png.data[o] = png.data[o + 1] = png.data[o + 2] = v;
            png.data[o + 3] = 255;
          }
      }
  };
  rows.forEach((r, i) => {
    const deltas = r.clean.map((c, k) => c.map((v, p) => r.adversarial[k][p] - v));
    const maxAbs = Math.max(1e-6, ...deltas.flat().map(Math.abs));
    r.clean.forEach((c, k) => {
      put(3 * i, k, c, (v) => 1 - v);
      put(3 * i + 1, k, r.adversarial[k], (v) => 1 - v);
      put(3 * i + 2, k, deltas[k], (v) => 0.5 - v / (2 * maxAbs));
    });
  });
  return PNG.sync.write(png);
}
