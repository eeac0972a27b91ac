// Figures: Vega-Lite specifications rendered headless to SVG (no browser or canvas needed), and the image grid
// as an SVG of PNG tiles (pngjs) with their labels and predictions.
import * as vega from 'vega';
import * as vl from 'vega-lite';
import { PNG } from 'pngjs';
import type { JobResult, StudyResult } from './run.js';
import { CLASS_NAMES } from '../models/factorisations.js';

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
      .filter((j) => EPS_ATTACKS.has(j.attack) && j.eps !== undefined && !j.variant)
      .map((j) => ({ model: j.model.toUpperCase(), attack: j.attack.toUpperCase(), eps: j.eps, accuracy: j.metrics.adversarialAccuracy })),
    // eps = 0: clean accuracy on the same images the attack used (attacks may use smaller subsets).
    ...[...new Map(study.jobs.filter((j) => EPS_ATTACKS.has(j.attack) && !j.variant).map((j) => [`${j.model}/${j.attack}`, j])).values()].map((j) => ({
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

/**
 * The models side by side: one panel per measure (clean accuracy, accuracy under FGS and PGD, DeepFool's rho,
 * detection AUCs), models along x in the paper's grouping, coloured by family, solid for fully connected graphs
 * and light for bottleneck ones.
 */
export interface SideBySideValue {
  model: string;
  family: string;
  graph: string;
  panel: string;
  /** Panels and models are drawn in these orders. */
  panelOrder: number;
  order: number;
  value: number;
}

export async function modelsSideBySide(values: SideBySideValue[]): Promise<string> {
  return renderSvg({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    data: { values },
    facet: { field: 'panel', type: 'nominal', title: null, sort: { field: 'panelOrder', op: 'min' } },
    columns: 4,
    spec: {
      width: 150,
      height: 120,
      mark: { type: 'bar' },
      encoding: {
        x: { field: 'model', type: 'nominal', title: null, sort: { field: 'order', op: 'min' }, axis: { labelAngle: 0 } },
        y: { field: 'value', type: 'quantitative', title: null },
        color: { field: 'family', type: 'nominal', title: 'family', scale: { domain: ['generative', 'discriminative'] } },
        opacity: { field: 'graph', type: 'ordinal', title: 'graph', scale: { domain: ['fully connected', 'bottleneck'], range: [1, 0.45] } },
      },
    },
    resolve: { scale: { y: 'independent' } },
  });
}

/** Accuracy against the L2 budget r of a minimal-perturbation attack, one line per model, one panel per setting. */
export async function accuracyVsL2(values: { model: string; setting: string; r: number; accuracy: number }[]): Promise<string> {
  return renderSvg({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    data: { values },
    facet: { field: 'setting', type: 'nominal', title: null },
    columns: 2,
    spec: {
      width: 260,
      height: 160,
      mark: { type: 'line' },
      encoding: {
        x: { field: 'r', type: 'quantitative', title: 'L2 budget r' },
        y: { field: 'accuracy', type: 'quantitative', title: 'accuracy within r', scale: { domain: [0, 1] }, axis: { format: '%' } },
        color: { field: 'model', type: 'nominal', title: 'model' },
      },
    },
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

/** A 28x28 image as a PNG data URI, `shade` mapping each value to [0, 1] grey (1 = white). */
function tilePng(pixels: number[], shade: (v: number) => number): string {
  const png = new PNG({ width: 28, height: 28 });
  pixels.forEach((v, i) => {
    png.data[4 * i] = png.data[4 * i + 1] = png.data[4 * i + 2] = Math.max(0, Math.min(255, Math.round(shade(v) * 255)));
    png.data[4 * i + 3] = 255;
  });
  return `data:image/png;base64,${PNG.sync.write(png).toString('base64')}`;
}

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export interface GridBand {
  /** e.g. 'FGS eps=0.1'. */
  title: string;
  clean: number[][];
  adversarial: number[][];
  labels: number[];
  cleanPredictions: number[];
  adversarialPredictions: number[];
}

/**
 * An SVG of one band per attack: rows clean / adversarial / perturbation (mid-grey = 0, scaled so the band's
 * largest |eta| reaches black or white), each clean image captioned with its label and prediction, each
 * adversarial one with its prediction (red where the attack changed it). Pixels are embedded PNGs drawn unsmoothed.
 */
export function imageGrid(bands: GridBand[], scale = 3): string {
  const tile = 28 * scale;
  const gap = 4;
  const caption = 14;
  const labelWidth = 96;
  const cell = tile + caption + gap;
  const cols = Math.max(...bands.map((b) => b.clean.length));
  const bandHeight = 20 + 3 * cell;
  const width = labelWidth + cols * (tile + gap);
  const parts: string[] = [];
  const text = (x: number, y: number, s: string, attrs = '') => parts.push(`<text x="${x}" y="${y}"${attrs}>${escapeXml(s)}</text>`);
  bands.forEach((b, i) => {
    const top = i * bandHeight;
    text(0, top + 14, b.title, ' font-weight="bold"');
    const deltas = b.clean.map((c, k) => c.map((v, p) => b.adversarial[k][p] - v));
    const maxAbs = Math.max(1e-6, ...deltas.flat().map(Math.abs));
    const rows: [string, number[][], (v: number) => number, (k: number) => [string, boolean]][] = [
      ['clean', b.clean, (v) => 1 - v, (k) => [`${CLASS_NAMES[b.labels[k]]}${b.cleanPredictions[k] === b.labels[k] ? '' : ` (${CLASS_NAMES[b.cleanPredictions[k]]})`}`, false]],
      ['adversarial', b.adversarial, (v) => 1 - v, (k) => [CLASS_NAMES[b.adversarialPredictions[k]], b.adversarialPredictions[k] !== b.cleanPredictions[k]]],
      [`perturbation ±${maxAbs.toFixed(2)}`, deltas, (v) => 0.5 - v / (2 * maxAbs), () => ['', false]],
    ];
    rows.forEach(([name, images, shade, label], r) => {
      const y = top + 20 + r * cell;
      text(0, y + tile / 2, name);
      images.forEach((pixels, k) => {
        const x = labelWidth + k * (tile + gap);
        parts.push(`<image x="${x}" y="${y}" width="${tile}" height="${tile}" style="image-rendering:pixelated" href="${tilePng(pixels, shade)}"/>`);
        const [s, changed] = label(k);
        if (s) text(x + tile / 2, y + tile + 11, s, ` text-anchor="middle"${changed ? ' fill="#c00"' : ''}`);
      });
    });
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${bands.length * bandHeight}" font-family="sans-serif" font-size="10">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
