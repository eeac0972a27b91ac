// Writes report/: report.json (everything, per-image results aside), report.md (every table, the figures, and
// how they were made), SVG plots and a PNG image grid per model. All files are written atomically.
import { join } from 'node:path';
import { writeFileAtomic } from '../fsutil.js';
import { accuracyVsEps, accuracyVsL2, rhoDistributions, rocCurves, imageGrid, modelsSideBySide, type SideBySideValue } from './plots.js';
import { MODEL_NAMES, modelStructure } from '../models/factorisations.js';
import type { JobResult, ModelSummary, StudyResult } from './run.js';
import { wilson } from './metrics.js';
import { protocolChecks } from './checks.js';

const pct = (v: number | null) => (v !== null && Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : '–');
/** A proportion of n with its 95% Wilson interval: `67.7% [62.2–72.7] (n=300)`. */
const pctN = (v: number | null, n: number) => {
  if (v === null || !Number.isFinite(v) || n === 0) return '–';
  const [lo, hi] = wilson(Math.round(v * n), n);
  return `${(100 * v).toFixed(1)}% [${(100 * lo).toFixed(1)}–${(100 * hi).toFixed(1)}] (n=${n})`;
};
/** Images correctly classified before the attack: the success rate's n. */
const correctBefore = (j: JobResult) => Math.round(j.metrics.cleanAccuracy * j.metrics.count);
const num = (v: number | null, digits = 3) => (v !== null && Number.isFinite(v) ? v.toFixed(digits) : '–');
const DETECTORS = ['marginal', 'logit', 'kl'] as const;

function attackTable(jobs: JobResult[]): string {
  const head = '| model | attack | setting | n | acc. under attack | success rate | L2 mean / median | L∞ mean / median | ρ all | ρ successful | queries mean / median |';
  const sep = '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|';
  const rows = jobs.map((j) => {
    const m = j.metrics;
    return `| ${j.model.toUpperCase()} | ${j.attack.toUpperCase()} | ${j.setting} | ${m.count} | ${pctN(m.adversarialAccuracy, m.count)} | ${pctN(m.successRate, correctBefore(j))} | ${num(m.l2.mean)} / ${num(m.l2.median)} | ${num(m.linf.mean)} / ${num(m.linf.median)} | ${num(m.rhoAll)} | ${num(m.rhoSuccessful)} | ${m.queries ? `${num(m.queries.mean, 1)} / ${num(m.queries.median, 0)}` : '–'} |`;
  });
  return [head, sep, ...rows].join('\n');
}

function detectionTable(jobs: JobResult[]): string {
  const head = '| model | attack | setting | successful | ' + DETECTORS.map((d) => `${d}: detected / FPR / AUC / acc. w/ detection`).join(' | ') + ' |';
  const sep = '|---|---|---|---:|' + DETECTORS.map(() => '---:').join('|') + '|';
  const rows = jobs.map((j) => {
    const cells = DETECTORS.map((d) => {
      const r = j.detection.detectors[d];
      return `${pct(r.detectionRate)} / ${pct(r.falsePositiveRate)} / ${num(r.roc?.auc ?? null, 2)} / ${pct(r.accuracyWithDetection)}`;
    });
    return `| ${j.model.toUpperCase()} | ${j.attack.toUpperCase()} | ${j.setting} | ${j.detection.successful} | ${cells.join(' | ')} |`;
  });
  return [head, sep, ...rows].join('\n');
}

/** One representative job per attack kind for the ROC plots and image grids (the middle setting). */
function representativeJobs(jobs: JobResult[]): JobResult[] {
  // The first attack of each kind in the configuration is its main one; later ones are checks and variants.
  const byKind = new Map<string, JobResult[]>();
  for (const j of jobs.filter((j) => !j.variant && j.attack !== 'adaptive')) {
    const list = byKind.get(j.attack) ?? [];
    if (list.length === 0 || list[0].spec === j.spec) byKind.set(j.attack, [...list, j]);
  }
  return [...byKind.values()].map((list) => list[Math.floor((list.length - 1) / 2)]);
}

/**
 * One row per model: clean accuracy, then for each attack kind its representative setting (where every model ran
 * it): accuracy under attack, or for DeepFool, which flips nearly every point, the perturbation size ρ.
 */
function headlineTable(study: StudyResult): string {
  const columns = representativeJobs(study.jobs.filter((j) => j.model === study.models[0].model && !j.variant))
    .filter((r) => study.models.every((m) => study.jobs.some((j) => j.model === m.model && j.attack === r.attack && j.setting === r.setting)))
    .map((r) => ({ attack: r.attack, setting: r.setting, title: r.attack === 'deepfool' ? `DeepFool ${r.setting}: ρ (successful)` : `${r.attack.toUpperCase()} ${r.setting}: acc.` }));
  const head = `| model | clean acc. | ${columns.map((c) => c.title).join(' | ')} |`;
  const sep = `|---|---:|${columns.map(() => '---:').join('|')}|`;
  const rows = study.models.map((m) => {
    const cells = columns.map((c) => {
      const j = study.jobs.find((j) => j.model === m.model && j.attack === c.attack && j.setting === c.setting && !j.variant)!;
      return c.attack === 'deepfool' ? num(j.metrics.rhoSuccessful) : pctN(j.metrics.adversarialAccuracy, j.metrics.count);
    });
    return `| ${m.model.toUpperCase()} | ${pctN(m.cleanAccuracy, m.cleanCount)} | ${cells.join(' | ')} |`;
  });
  return [head, sep, ...rows].join('\n');
}

/** The paper's grouping: generative before discriminative, fully connected before bottleneck, then by name. */
export function groupOrder(models: string[]): string[] {
  const rank = (m: string) => {
    const s = modelStructure(m);
    return (s.family === 'generative' ? 0 : 2) + (s.graph === 'fully connected' ? 0 : 1);
  };
  return [...models].sort((a, b) => rank(a) - rank(b) || MODEL_NAMES.indexOf(a as never) - MODEL_NAMES.indexOf(b as never));
}

const groupCells = (m: string) => {
  const s = modelStructure(m);
  return `${m.toUpperCase()} | ${s.family} | ${s.graph}`;
};

/** Rows: models in the paper's grouping; columns: the settings of one attack kind (by eps or p), as `cell` gives. */
function sweepTable(study: StudyResult, attack: string, cell: (j: JobResult) => string): string | null {
  const jobs = study.jobs.filter((j) => j.attack === attack && !j.variant);
  const settings = [...new Set(jobs.map((j) => j.setting))];
  if (settings.length === 0) return null;
  const head = `| model | family | graph | ${settings.join(' | ')} |`;
  const sep = `|---|---|---|${settings.map(() => '---:').join('|')}|`;
  const rows = groupOrder(study.models.map((m) => m.model)).map((m) => {
    const cells = settings.map((s) => {
      const j = jobs.find((j) => j.model === m && j.setting === s);
      return j ? cell(j) : '–';
    });
    return `| ${groupCells(m)} | ${cells.join(' | ')} |`;
  });
  return [head, sep, ...rows].join('\n');
}

/** Detection AUC per model and detector, for each attack kind's representative setting. */
function aucTable(study: StudyResult): string {
  const kinds = [...new Set(study.jobs.filter((j) => !j.variant).map((j) => j.attack))];
  const columns = kinds.flatMap((k) => DETECTORS.map((d) => ({ kind: k, detector: d })));
  const head = `| model | family | graph | ${columns.map((c) => `${c.kind.toUpperCase()} ${c.detector}`).join(' | ')} |`;
  const sep = `|---|---|---|${columns.map(() => '---:').join('|')}|`;
  const rows = groupOrder(study.models.map((m) => m.model)).map((m) => {
    const shown = representativeJobs(study.jobs.filter((j) => j.model === m && !j.variant));
    const cells = columns.map((c) => num(shown.find((j) => j.attack === c.kind)?.detection.detectors[c.detector].roc?.auc ?? null, 2));
    return `| ${groupCells(m)} | ${cells.join(' | ')} |`;
  });
  return [head, sep, ...rows].join('\n');
}

/** The models side by side: accuracy per eps of FGS and PGD, DeepFool's rho per p, detection AUCs; and one figure. */
function sideBySide(study: StudyResult): string[] {
  const acc = (j: JobResult) => pctN(j.metrics.adversarialAccuracy, j.metrics.count);
  const part = (title: string, table: string | null) => (table ? [`### ${title}`, '', table, ''] : []);
  const n = (kind: string) => {
    const counts = [...new Set(study.jobs.filter((j) => j.attack === kind && !j.variant).map((j) => j.metrics.count))];
    return kind === 'deepfool' && counts.length ? ` (n = ${counts.join(', ')} images)` : '';
  };
  return [
    '## The models side by side',
    '',
    "Grouped as the paper groups them: generative (y generates x) or discriminative (x generates y), fully connected (x and y linked directly) or bottleneck (linked only through z).",
    '',
    '![the models side by side](models.svg)',
    '',
    ...part(`Accuracy under FGS${n('fgs')}`, sweepTable(study, 'fgs', acc)),
    ...part(`Accuracy under PGD${n('pgd')}`, sweepTable(study, 'pgd', acc)),
    ...part(`DeepFool ρ on successful examples${n('deepfool')}`, sweepTable(study, 'deepfool', (j) => num(j.metrics.rhoSuccessful))),
    '### Detection AUC',
    '',
    'Per detector, for each attack at its representative setting (as in the ROC plots): the area under the ROC of clean test images against successful adversarial examples.',
    '',
    aucTable(study),
    '',
  ];
}

/**
 * The same attack against other classifiers built from the same model — fresh noise, EOT, the reference's
 * independent draws — side by side with the study's own, on the same images: accuracy (or DeepFool's rho) per
 * classifier, and the images only one of the two classifies correctly after the attack.
 */
function classifierTables(study: StudyResult): string[] {
  const base = (j: JobResult) => j.setting.split('; ')[0];
  const groups = new Map<string, JobResult[]>();
  for (const j of study.jobs) {
    const key = `${j.model}|${j.attack}|${base(j)}`;
    groups.set(key, [...(groups.get(key) ?? []), j]);
  }
  const compared = [...groups.values()].filter((g) => g.length > 1 && g.some((j) => !j.variant));
  const order = groupOrder(study.models.map((m) => m.model));
  if (compared.length === 0) return [];
  const variants = [...new Set(compared.flat().map((j) => j.variant))].sort((a, b) => (a === '' ? -1 : b === '' ? 1 : 0));
  const label = (v: string) => compared.flat().find((j) => j.variant === v)!.classifier + (v === '' ? ' (the study\'s)' : '');
  const others = variants.filter((v) => v !== '');
  const head = `| model | attack | setting | ${variants.map(label).join(' | ')} | ${others.map((v) => `right only with the study's / only with ${v}`).join(' | ')} |`;
  const sep = `|---|---|---|${variants.map(() => '---:').join('|')}|${others.map(() => '---:').join('|')}|`;
  const rows = compared
    .sort((a, b) => order.indexOf(a[0].model) - order.indexOf(b[0].model) || study.jobs.indexOf(a[0]) - study.jobs.indexOf(b[0]))
    .map((g) => {
      const own = g.find((j) => !j.variant)!;
      const cells = variants.map((v) => {
        const j = g.find((j) => j.variant === v);
        if (!j) return '–';
        return j.attack === 'deepfool' ? `ρ ${num(j.metrics.rhoSuccessful)}, acc. ${pctN(j.metrics.adversarialAccuracy, j.metrics.count)}` : pctN(j.metrics.adversarialAccuracy, j.metrics.count);
      });
      const paired = others.map((v) => {
        const j = g.find((j) => j.variant === v);
        if (!j) return '–';
        const n = Math.min(own.results.labels.length, j.results.labels.length);
        let onlyOwn = 0;
        let onlyOther = 0;
        for (let i = 0; i < n; i++) {
          const a = own.results.adversarialPredictions[i] === own.results.labels[i];
          const b = j.results.adversarialPredictions[i] === j.results.labels[i];
          if (a && !b) onlyOwn++;
          if (b && !a) onlyOther++;
        }
        return `${onlyOwn} / ${onlyOther} of ${n}`;
      });
      return `| ${own.model.toUpperCase()} | ${own.attack.toUpperCase()} | ${base(own)} | ${cells.join(' | ')} | ${paired.join(' | ')} |`;
    });
  const clean = study.models.filter((m) => m.variants?.length);
  return [
    '## The classifier under attack',
    '',
    'The Bayes-rule classifier is stochastic, and its noise and estimator are part of it. Each row attacks one model',
    'as several classifiers, on the same images: the study\'s own, and with fresh draws on every call (the',
    "reference's default, in the attack and the final evaluation), with attack gradients averaged over fresh draws",
    "(EOT), or with the reference's independent draws per class. The last columns count the images that only one",
    'of two classifiers gets right after the attack (a paired comparison). The headline uses the study\'s own',
    'classifier: with fixed noise the attack faces a deterministic function, exactly the one it is scored on, with',
    'exact gradients — the setting most favourable to the attacker; fresh noise and EOT show how much of the',
    "robustness comes from the classifier's randomness.",
    '',
    head,
    sep,
    ...rows,
    '',
    ...(clean.length
      ? ['Clean accuracy of the same models as those classifiers, on the first test images their attacks use:', '', '| model | classifier | clean accuracy |', '|---|---|---:|',
        ...clean.flatMap((m) => [`| ${m.model.toUpperCase()} | the study's | ${pctN(m.cleanAccuracy, m.cleanCount)} |`, ...m.variants!.map((v) => `| ${m.model.toUpperCase()} | ${v.classifier} | ${pctN(v.cleanAccuracy, v.cleanCount)} |`)]), '',
        "Detection of attacks on those classifiers uses the study's detectors (thresholds fitted on training images under the study's classifier).", '']
      : []),
  ];
}

/** Budgets of the L2 curves (images have ||x||_2 of about 9-12). */
export const L2_BUDGETS = [0.25, 0.5, 1, 1.5, 2, 3, 4];

/** Accuracy when an adversarial counts only if ||eta||_2 <= r: correct before, and not flipped within r. */
export function accuracyAtL2(j: JobResult, r: number): number {
  const res = j.results;
  return res.labels.filter((y, i) => res.cleanPredictions[i] === y && !(res.adversarialPredictions[i] !== y && res.l2[i] <= r)).length / res.labels.length;
}

/** Minimal-perturbation L2 attacks (CW): accuracy against an L2 budget, and the median L2 of successful examples. */
function l2Section(study: StudyResult): string[] {
  const jobs = study.jobs.filter((j) => j.attack === 'cw' || j.attack === 'hopskipjump');
  if (jobs.length === 0) return [];
  const order = groupOrder(study.models.map((m) => m.model));
  jobs.sort((a, b) => order.indexOf(a.model) - order.indexOf(b.model));
  return [
    '## Minimal L2 attacks: Carlini–Wagner (white-box) and HopSkipJump (hard-label)',
    '',
    'Accuracy when only adversarial examples within an L2 budget r count (correct before the attack, and not fooled',
    'within r), and the median ‖η‖₂ of the successful ones. An attack that finds the minimal perturbation drives',
    'the accuracy to 0 as r grows; where it stays above 0 the attack failed on those images.',
    '',
    `| model | attack | setting | n | ${L2_BUDGETS.map((r) => `r=${r}`).join(' | ')} | success rate | median L2 | queries mean / median |`,
    `|---|---|---|---:|${L2_BUDGETS.map(() => '---:').join('|')}|---:|---:|---:|`,
    ...jobs.map((j) => `| ${j.model.toUpperCase()} | ${j.attack === 'cw' ? 'CW' : 'HopSkipJump'} | ${j.setting} | ${j.metrics.count} | ${L2_BUDGETS.map((r) => pct(accuracyAtL2(j, r))).join(' | ')} | ${pctN(j.metrics.successRate, correctBefore(j))} | ${num(j.metrics.l2.median)} | ${j.metrics.queries ? `${num(j.metrics.queries.mean, 0)} / ${num(j.metrics.queries.median, 0)}` : '–'} |`),
    '',
    '![accuracy against the L2 budget](accuracy-vs-l2.svg)',
    '',
  ];
}

type SubstituteSummary = NonNullable<StudyResult['models'][number]['substitutes']>[number];

/** What a substitute was fitted to, and for Jacobian augmentation how many labels it asked of the victim. */
function fittedOn(s: SubstituteSummary): string {
  if (!s.augment) return `${s.trainImages} images, ${s.epochs} epochs`;
  const a = s.augment;
  return `${s.trainImages} seed images, ${a.rounds} rounds of Jacobian augmentation (lambda ${a.lambda}): ${a.images} images, ${a.queries} victim queries, ${s.epochs} epoch${s.epochs === 1 ? '' : 's'} a round`;
}

/** The substitute black-box attack: how well the substitute imitates each model, and what its attacks do. */
function substituteSection(study: StudyResult): string[] {
  const withSub = study.models.filter((m) => m.substitutes?.length);
  if (withSub.length === 0) return [];
  const order = groupOrder(study.models.map((m) => m.model));
  const jobs = study.jobs.filter((j) => j.attack === 'substitute').sort((a, b) => order.indexOf(a.model) - order.indexOf(b.model));
  return [
    '## Substitute black-box attacks',
    '',
    "The reference's black-box setting: a plain CNN (three 5×5 stride-2 convolutions, a dense layer) fitted to the",
    "victim's own predictions on training images, never to the true labels; PGD, MIM and CW are crafted on it and",
    'shown to the victim, which the attacker never queries for gradients. With Jacobian augmentation (Papernot et',
    "al. 2017) the attacker starts from a small seed set and, after each round of training, asks the victim to label",
    "each image moved by lambda along the sign of the substitute's gradient, doubling the set.",
    '',
    '| model | substitute fitted on | agreement with the model (training images) | agreement (test images) |',
    '|---|---|---:|---:|',
    ...withSub.flatMap((m) => m.substitutes!.map((s) => `| ${m.model.toUpperCase()} | ${fittedOn(s)} | ${pct(s.trainAgreement)} | ${pctN(s.testAgreement, s.testImages)} |`)),
    '',
    '| model | attack crafted on the substitute | substitute | accuracy | success rate |',
    '|---|---|---|---:|---:|',
    ...jobs.map((j) => {
      const [attack, substitute] = j.setting.split(', on a substitute CNN ');
      const kind = /Jacobian augmentation/.test(substitute ?? '') ? 'Jacobian-augmented' : 'victim-labelled training images';
      return `| ${j.model.toUpperCase()} | ${attack} | ${kind} | ${pctN(j.metrics.adversarialAccuracy, j.metrics.count)} | ${pctN(j.metrics.successRate, correctBefore(j))} |`;
    }),
    '',
  ];
}

/** Each detector against PGD that knows it: lambda = 0 is the same PGD without the penalty, on the same images. */
function adaptiveSection(study: StudyResult): string[] {
  const jobs = study.jobs.filter((j) => j.attack === 'adaptive');
  if (jobs.length === 0) return [];
  const order = groupOrder(study.models.map((m) => m.model));
  const lambdas = [...new Set(jobs.map((j) => j.lambda!))].sort((a, b) => a - b);
  const rows: string[] = [];
  for (const m of order)
    for (const d of DETECTORS) {
      const own = jobs.filter((j) => j.model === m && j.detector === d);
      if (own.length === 0) continue;
      const cells = lambdas.map((l) => {
        const j = own.find((j) => j.lambda === l);
        if (!j) return '–';
        const r = j.detection.detectors[d];
        return `${pct(r.detectionRate)} / ${pct(r.falsePositiveRate)} / ${pct(r.accuracyWithDetection)} (${j.detection.successful} of ${j.metrics.count} fooled)`;
      });
      rows.push(`| ${m.toUpperCase()} | ${d} | ${own[0].setting.split(', against')[0]} | ${cells.join(' | ')} |`);
    }
  return [
    '## Adaptive attacks on the detectors',
    '',
    'PGD on the cross-entropy minus λ times how far the attacked detector\'s statistic is past its threshold (aiming half',
    "a standard deviation inside it); λ = 0 is the same PGD unaware of the detector, on the same images. Each cell: the",
    'detector\'s detection rate on successful adversarial examples / its false-positive rate on clean test images /',
    'accuracy counting a detected attack as caught.',
    '',
    `| model | detector | attack | ${lambdas.map((l) => `λ = ${l}`).join(' | ')} |`,
    `|---|---|---|${lambdas.map(() => '---:').join('|')}|`,
    ...rows,
    '',
  ];
}

/** Carlini et al.'s checks, computed: each row passes or is flagged. */
function checksSection(study: StudyResult): string[] {
  const c = protocolChecks(study.jobs);
  const mark = (pass: boolean) => (pass ? 'pass' : '**flagged**');
  const out = ['## Protocol checks', '', "Computed from the per-image results (after Carlini et al. 2019, *On evaluating adversarial robustness*).", ''];
  out.push('**Convergence**: doubling the iterations changes accuracy by less than 1 point (else the attack had not converged and the headline understates it).', '');
  out.push(
    ...(c.convergence.length
      ? ['| model | attack | iterations | accuracy | with twice the iterations | images | check |', '|---|---|---|---:|---:|---:|---|',
        ...c.convergence.map((r) => `| ${r.model.toUpperCase()} | ${r.attack.toUpperCase()} | ${r.setting} → ${r.doubled} | ${pct(r.accuracy)} | ${pct(r.accuracyDoubled)} | ${r.images} | ${mark(r.pass)} |`)]
      : ['No attack ran with doubled iterations.']),
    '',
  );
  out.push('**Unbounded attacks succeed**: DeepFool, CW and PGD with the whole box as its budget flip every image classified correctly before.', '');
  out.push(
    ...(c.unbounded.length
      ? ['| model | attack | setting | success rate | check |', '|---|---|---|---:|---|', ...c.unbounded.map((r) => `| ${r.model.toUpperCase()} | ${r.attack.toUpperCase()} | ${r.setting} | ${pct(r.successRate)} | ${mark(r.pass)} |`)]
      : ['No unbounded attack ran.']),
    '',
  );
  out.push('**Black-box no stronger than white-box**: at the same L∞ budget a black-box attack (Square, transfer, substitute) succeeds no more often than the strongest white-box one, on the same images; otherwise the gradients may be masked.', '');
  out.push(
    ...(c.blackBox.length
      ? ['| model | ε | black-box | success | strongest white-box | success | images | check |', '|---|---:|---|---:|---|---:|---:|---|',
        ...c.blackBox.map((r) => `| ${r.model.toUpperCase()} | ${r.eps} | ${r.blackBox} | ${pct(r.blackSuccess)} | ${r.whiteBox} | ${pct(r.whiteSuccess)} | ${r.images} | ${mark(r.pass)} |`)]
      : ['No black-box attack shares a budget with a white-box one.']),
    '',
  );
  out.push("**Robust accuracy**: per image, the worst case over every L∞ attack on the study's classifier within the budget (norm-bounded attacks at ε or below, and DeepFool L∞ where it got within ε), on the images all of them attacked.", '');
  const order = groupOrder(study.models.map((m) => m.model));
  const eps = [...new Set(c.robust.map((r) => r.eps))].sort((a, b) => a - b);
  out.push(
    `| model | ${eps.map((e) => `ε=${e}`).join(' | ')} |`,
    `|---|${eps.map(() => '---:').join('|')}|`,
    ...order.map((m) => `| ${m.toUpperCase()} | ${eps.map((e) => {
      const r = c.robust.find((r) => r.model === m && r.eps === e);
      return r ? pctN(r.accuracy, r.images) : '–';
    }).join(' | ')} |`),
    '',
  );
  return out;
}

/** The figure's values: one row per model and panel. */
export function sideBySideValues(study: StudyResult): SideBySideValue[] {
  const order = groupOrder(study.models.map((m) => m.model));
  const rows: SideBySideValue[] = [];
  const panels: string[] = [];
  const push = (m: ModelSummary, panel: string, value: number | null | undefined) => {
    if (value === null || value === undefined || !Number.isFinite(value)) return;
    const s = modelStructure(m.model);
    if (!panels.includes(panel)) panels.push(panel);
    rows.push({ model: m.model.toUpperCase(), family: s.family, graph: s.graph, panel, panelOrder: panels.indexOf(panel), value, order: order.indexOf(m.model) });
  };
  for (const m of study.models) {
    push(m, 'clean accuracy', m.cleanAccuracy);
    for (const j of representativeJobs(study.jobs.filter((j) => j.model === m.model && !j.variant))) {
      if (j.attack === 'fgs' || j.attack === 'pgd') push(m, `${j.attack.toUpperCase()} ${j.setting}: accuracy`, j.metrics.adversarialAccuracy);
      if (j.attack === 'deepfool') push(m, `DeepFool ${j.setting}: ρ`, j.metrics.rhoSuccessful);
    }
    const fgs = representativeJobs(study.jobs.filter((j) => j.model === m.model && j.attack === 'fgs' && !j.variant))[0];
    if (fgs) for (const d of DETECTORS) push(m, `FGS ${fgs.setting}: ${d} detection AUC`, fgs.detection.detectors[d].roc?.auc);
  }
  return rows;
}

export async function writeReport(study: StudyResult, out: string, command: string): Promise<string[]> {
  const files: string[] = [];
  const write = (name: string, data: string | Buffer) => {
    writeFileAtomic(join(out, name), data);
    files.push(join(out, name));
  };
  write('accuracy-vs-eps.svg', await accuracyVsEps(study));
  write('rho-deepfool.svg', await rhoDistributions(study));
  write('models.svg', await modelsSideBySide(sideBySideValues(study)));
  const l2Jobs = study.jobs.filter((j) => j.attack === 'cw' || j.attack === 'hopskipjump');
  if (l2Jobs.length) {
    const steps = Array.from({ length: 41 }, (_, i) => i * 0.1);
    write('accuracy-vs-l2.svg', await accuracyVsL2(l2Jobs.flatMap((j) => steps.map((r) => ({ model: j.model.toUpperCase(), setting: `${j.attack === 'cw' ? 'CW' : 'HopSkipJump'} ${j.setting}`, r, accuracy: accuracyAtL2(j, r) })))));
  }
  for (const m of study.models) {
    const shown = representativeJobs(study.jobs.filter((j) => j.model === m.model));
    write(`roc-${m.model}.svg`, await rocCurves(shown, m.model));
    write(
      `grid-${m.model}.svg`,
      imageGrid(
        shown.map((j) => {
          const k = j.grid.clean.length;
          const r = j.results;
          return { title: `${j.attack.toUpperCase()} ${j.setting}`, ...j.grid, labels: r.labels.slice(0, k), cleanPredictions: r.cleanPredictions.slice(0, k), adversarialPredictions: r.adversarialPredictions.slice(0, k) };
        }),
      ),
    );
  }

  const cfg = study.config;
  const md = [
    '# Are generative classifiers more robust to adversarial attacks? — Fashion-MNIST',
    '',
    `Made by \`${command}\` on ${study.adapter}; the attack jobs took ${(study.jobs.reduce((a, j) => a + j.seconds, 0) / 60).toFixed(1)} min ` +
      `in all (jobs reused from an earlier run keep their original time; this run took ${(study.seconds / 60).toFixed(1)} min).`,
    `Noise mode: ${study.noiseMode}. Logits: Bayes' rule with K = ${cfg.samples} importance samples per class. Seed ${cfg.seed}.`,
    'Every number below comes from `report.json` in this folder, which also holds the full configuration.',
    '',
    '## Models',
    '',
    '| model | family | graph | factorisation | checkpoint | epochs | clean accuracy | test images |',
    '|---|---|---|---|---|---:|---:|---:|',
    ...study.models.map((m) => `| ${groupCells(m.model)} | ${m.factorisation} | \`${m.checkpoint}\` | ${m.epoch} | ${pctN(m.cleanAccuracy, m.cleanCount)} | ${m.cleanCount} |`),
    '',
    '## Headline',
    '',
    'One setting per attack (the middle one of its main sweep); higher accuracy and larger ρ mean a more robust model.',
    '',
    headlineTable(study),
    '',
    ...sideBySide(study),
    ...classifierTables(study),
    ...l2Section(study),
    ...substituteSection(study),
    ...adaptiveSection(study),
    ...checksSection(study),
    '## Attacks',
    '',
    'Accuracy is over all attacked images; the success rate is over those classified correctly before the attack; ',
    'perturbation norms are over successful adversarial examples; ρ = mean ‖η‖₂ / ‖x‖₂, over all attacked images ',
    'and over successful ones.',
    '',
    attackTable(study.jobs),
    '',
    '![accuracy against eps](accuracy-vs-eps.svg)',
    '',
    '![rho distributions](rho-deepfool.svg)',
    '',
    '## Detection',
    '',
    `Thresholds are fitted on the first ${cfg.detection.trainImages} training images (well-classified ones per class) for a `,
    `${pct(cfg.detection.falsePositiveRate)} false-positive rate there. Marginal: reject when log p(x) is low; logit: when `,
    'log p(x, ŷ) is low for the predicted class; KL: when the softmax is far from the class-average softmax. Detection rates are ',
    'over successful adversarial examples; the false-positive rate is on the clean test images; "acc. w/ detection" counts a ',
    'detected adversarial input as handled.',
    '',
    detectionTable(study.jobs),
    '',
    'ROC curves for one setting per attack (the middle one of its sweep):',
    '',
    ...study.models.map((m) => `![ROC curves, ${m.model.toUpperCase()}](roc-${m.model}.svg)\n`),
    '## Examples',
    '',
    'Each image grid shows, per attack (one setting each: ' +
      'the middle one of its sweep), a row of clean test images captioned with their labels (the clean prediction in brackets ' +
      'where it is wrong), the adversarial images captioned with their predictions (red where the attack changed it), and the ' +
      'perturbation (grey = 0, scaled to the band\'s largest change).',
    '',
    ...study.models.map((m) => `${m.model.toUpperCase()} (${representativeJobs(study.jobs.filter((j) => j.model === m.model)).map((j) => `${j.attack.toUpperCase()} ${j.setting}`).join('; ')}):\n\n![${m.model} examples](grid-${m.model}.svg)\n`),
  ].join('\n');
  write('report.md', md);
  const slim = { ...study, jobs: study.jobs.map(({ grid: _grid, results: _results, ...rest }) => rest) };
  write('report.json', JSON.stringify({ command, ...slim }, null, 2));
  return files;
}
