import { describe, it, expect } from 'vitest';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { useGpu } from './helpers.js';
import { createModel, modelConfig, MODEL_NAMES } from '../src/models/factorisations.js';
import { defaultConfig, checkConfig, type StudyConfig } from '../src/study/config.js';
import { runStudy, inBlocks } from '../src/study/run.js';
import { bayesClassifier } from '../src/attacks/classifier.js';
import * as T from './lib.js';
import { writeReport, sideBySideValues, accuracyAtL2 } from '../src/study/report.js';
import { imageGrid, type GridBand } from '../src/study/plots.js';
import { CLASS_NAMES } from '../src/models/factorisations.js';
import { PNG } from 'pngjs';
import { tinyCheckpoints } from './fixtures.js';

useGpu();

const shared = resolve(__dirname, '..', '..', 'shared', 'fashion-mnist');

describe('config', () => {
  it('defaults validate, bad fields are named', () => {
    expect(checkConfig(defaultConfig(false)).subset).toBe(100);
    expect(checkConfig(defaultConfig(true)).subset).toBe(10_000);
    const bad = (patch: Partial<StudyConfig>) => () => checkConfig({ ...defaultConfig(false), ...patch });
    expect(bad({ models: ['nope'] })).toThrow(/config: unknown model 'nope'/);
    expect(bad({ subset: 0 })).toThrow(/config: subset must be a positive integer/);
    expect(bad({ attacks: [{ kind: 'fgs', eps: [-0.1] }] })).toThrow(/attacks\[0\] \(fgs\): eps must be finite and >= 0, got -0.1/);
    expect(bad({ attacks: [{ kind: 'deepfool', p: [1], maxIterations: 5, overshoot: 0.02 }] })).toThrow(/p must be > 1 or 'inf', got 1/);
  });
});

describe('fixed noise in the study', () => {
  it("an image sees the same z draws in its block's clean batch and in any smaller batch an attack hands in", async () => {
    const model = createModel(modelConfig('gfz', 'compact', { channels: 2, hidden: 8, latent: 3, seed: 4, preset: 'custom' }));
    const plain = bayesClassifier(model, { samples: 3, noise: { kind: 'fixed', seed: 5 } });
    const clf = inBlocks(plain, 4);
    const x = T.randomUniform([4, 1, 28, 28], 6);
    const firstTwo = T.slice(x, [0, 0, 0, 0], [2, 1, 28, 28]);
    const lastAndSecond = T.gather(T.reshape(x, [4, -1]), T.tensor([3, 1], [2], 'i32'));
    const [block, head, subset, plainHead] = await T.readAll([
      clf.logits(x, 0),
      clf.logits(firstTwo, 0),
      clf.logits(T.reshape(lastAndSecond, [2, 1, 28, 28]), 0, 1, { indices: [3, 1], of: 4 }),
      plain.logits(firstTwo, 0),
    ]);
    for (let c = 0; c < 20; c++) expect(head[c]).toBeCloseTo(block[c], 4);
    for (let c = 0; c < 10; c++) {
      expect(subset[c]).toBeCloseTo(block[30 + c], 4);
      expect(subset[10 + c]).toBeCloseTo(block[10 + c], 4);
    }
    // Without the blocks a batch of two draws other noise than the clean batch of four.
    expect(Array.from(plainHead)).not.toEqual(Array.from(head));
    model.params.dispose();
  });
});

describe.skipIf(!existsSync(shared))('the study on tiny models', () => {
  it('runs every attack and detector, writes the report, and resumes from finished jobs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gencls-study-'));
    await tinyCheckpoints(dir, ['dfz', 'gfz'], 3);
    const cfg = checkConfig({
      ...defaultConfig(false),
      checkpoints: dir,
      preset: 'custom',
      subset: 4,
      batchSize: 2,
      samples: 2,
      attacks: [
        { kind: 'fgs', eps: [0.05, 0.3] },
        { kind: 'pgd', norm: 'l2', eps: [1], iterations: 2, stepSize: 0.5, randomStart: true },
        { kind: 'mim', eps: [0.1], iterations: 2, stepSize: 0.05, momentum: 1 },
        { kind: 'deepfool', p: [2], maxIterations: 2, overshoot: 0.02, subset: 2 },
        { kind: 'square', norm: 'linf', eps: [0.1], queryBudget: 3, subset: 2 },
        { kind: 'transfer', from: 'dfz', eps: [0.1] },
      ],
      detection: { trainImages: 20, falsePositiveRate: 0.1 },
      gridImages: 2,
    });
    const out = join(dir, 'report');
    const logs: string[] = [];
    const study = await runStudy(cfg, { out, dataDir: shared, log: (l) => logs.push(l) });
    // 2 models x (2 fgs + pgd + mim + deepfool + square) + 1 transfer (onto gfz)
    expect(study.jobs.length).toBe(13);
    for (const j of study.jobs) {
      expect(j.metrics.adversarialAccuracy).toBeGreaterThanOrEqual(0);
      expect(j.metrics.adversarialAccuracy).toBeLessThanOrEqual(1);
      if (j.attack === 'fgs' || j.attack === 'mim') for (const v of j.results.linf) expect(v).toBeLessThanOrEqual(j.eps! + 1e-6);
      if (j.attack === 'pgd') for (const v of j.results.l2) expect(v).toBeLessThanOrEqual(j.eps! + 1e-4);
      if (j.attack === 'square') for (const q of j.results.queries!) expect(q).toBeLessThanOrEqual(3);
      for (const d of ['marginal', 'logit', 'kl'] as const) expect(j.detection.detectors[d].falsePositiveRate).toBeGreaterThanOrEqual(0);
    }
    const files = await writeReport(study, out, 'test');
    for (const f of ['report.md', 'report.json', 'accuracy-vs-eps.svg', 'rho-deepfool.svg', 'roc-dfz.svg', 'grid-gfz.svg']) expect(files).toContain(join(out, f));
    expect(readFileSync(join(out, 'accuracy-vs-eps.svg'), 'utf8')).toMatch(/^<svg/);
    const grid = readFileSync(join(out, 'grid-dfz.svg'), 'utf8');
    expect(grid).toMatch(/^<svg /);
    expect(grid).toContain('data:image/png;base64,');
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    expect(report.jobs.length).toBe(13);
    expect(report.noiseMode).toMatch(/fixed noise/);
    const md = readFileSync(join(out, 'report.md'), 'utf8');
    expect(md).toMatch(/\| GFZ \| TRANSFER \| FGS eps=0.1 crafted on dfz \|/);
    // Headline: a row per model, a column per attack kind that both models ran (transfer only targets GFZ).
    const headline = md.split('## Headline')[1].split('##')[0];
    expect(headline).toContain('| model | clean acc. | FGS ');
    expect(headline).not.toContain('TRANSFER');
    // Every accuracy with its 95% Wilson interval and n.
    for (const m of ['DFZ', 'GFZ']) expect(headline).toMatch(new RegExp(`\\| ${m} \\| [0-9.]+% \\[[0-9.]+–[0-9.]+\\] \\(n=4\\) \\| [0-9.]+% \\[[0-9.]+–[0-9.]+\\] \\(n=`));

    // Units: per model 2 clean-test + 10 train blocks; attacks per model: FGS sweep 2, PGD 2, MIM 2, DeepFool 1,
    // Square 1 block, and the transfer sweep onto GFZ 2.
    const units = 2 * (2 + 10 + 2 + 2 + 2 + 1 + 1) + 2;
    expect(logs).toContain(`study: ${units} units of work, 0 already done, ${units} to compute`);
    const again = await runStudy(cfg, { out, dataDir: shared, log: (l) => logs.push(l) });
    expect(logs).toContain(`study: ${units} units of work, ${units} already done, 0 to compute`);
    expect(again.jobs.map((j) => j.metrics)).toEqual(study.jobs.map((j) => j.metrics));
  });

  it('puts all seven factorisations side by side, grouped as the paper groups them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gencls-seven-'));
    await tinyCheckpoints(dir, MODEL_NAMES, 5);
    const seven = JSON.parse(readFileSync(resolve(__dirname, '..', 'configs', 'seven.json'), 'utf8')) as Partial<StudyConfig>;
    expect([...seven.models!].sort()).toEqual([...MODEL_NAMES].sort());
    const cfg = checkConfig({
      ...defaultConfig(false),
      models: seven.models!,
      checkpoints: dir,
      preset: 'custom',
      subset: 4,
      batchSize: 50,
      samples: 2,
      attacks: [
        { kind: 'fgs', eps: [0.1, 0.3] },
        { kind: 'pgd', norm: 'linf', eps: [0.1], iterations: 1, stepSize: 0.1, randomStart: false },
        { kind: 'deepfool', p: [2], maxIterations: 1, overshoot: 0.02 },
      ],
      // Enough that even an untrained model classifies some correctly, which fitting the detectors needs.
      detection: { trainImages: 200, falsePositiveRate: 0.2 },
      gridImages: 1,
    });
    const out = join(dir, 'report');
    const study = await runStudy(cfg, { out, dataDir: shared, log: () => {} });
    await writeReport(study, out, 'test');
    const md = readFileSync(join(out, 'report.md'), 'utf8');
    const side = md.split('## The models side by side')[1].split('\n## ')[0];
    const grouped = ['GFZ', 'GFY', 'GBZ', 'GBY', 'DFZ', 'DFX', 'DBX'];
    for (const table of ['Accuracy under FGS', 'Accuracy under PGD', 'DeepFool ρ', 'Detection AUC']) {
      const rows = side.split(`### ${table}`)[1].split('###')[0].split('\n').filter((l) => /^\| [A-Z]{3} \|/.test(l));
      expect(rows.map((r) => r.slice(2, 5)), table).toEqual(grouped);
      expect(rows[0]).toMatch(/^\| GFZ \| generative \| fully connected \|/);
      expect(rows[6]).toMatch(/^\| DBX \| discriminative \| bottleneck \|/);
    }
    // Every cell of the FGS table is the job's own accuracy.
    const fgsRows = side.split('### Accuracy under FGS')[1].split('###')[0].split('\n').filter((l) => /^\| [A-Z]{3} \|/.test(l));
    for (const row of fgsRows) {
      const model = row.slice(2, 5).toLowerCase();
      const cells = row.split('|').slice(4, 6).map((c) => c.trim());
      const accs = ['eps=0.1', 'eps=0.3'].map((e) => study.jobs.find((j) => j.model === model && j.attack === 'fgs' && j.setting === e)!.metrics.adversarialAccuracy);
      expect(cells.map((c) => c.split(' ')[0])).toEqual(accs.map((a) => `${(100 * a).toFixed(1)}%`));
      for (const c of cells) expect(c).toMatch(/ \[[0-9.]+–[0-9.]+\] \(n=4\)$/);
    }
    const values = sideBySideValues(study);
    for (const m of grouped) expect(values.filter((v) => v.model === m && v.panel === 'clean accuracy').length).toBe(1);
    const panels = [...new Set(values.map((v) => v.panel))];
    expect(panels.slice(0, 3)).toEqual(['clean accuracy', 'FGS eps=0.1: accuracy', 'PGD eps=0.1 linf, 1 it: accuracy']);
    for (const v of values.filter((v) => v.panel.startsWith('PGD'))) {
      expect(v.value).toBe(study.jobs.find((j) => j.model === v.model.toLowerCase() && j.attack === 'pgd')!.metrics.adversarialAccuracy);
    }
    // Detection AUCs and rho exist only where an attack succeeded; each one shown is the job's own.
    for (const v of values.filter((v) => v.panel.includes('AUC'))) {
      const d = v.panel.split(': ')[1].split(' ')[0] as 'marginal' | 'logit' | 'kl';
      expect(v.value).toBe(study.jobs.find((j) => j.model === v.model.toLowerCase() && j.id.endsWith('fgs-eps0.1'))!.detection.detectors[d].roc!.auc);
    }
    const svg = readFileSync(join(out, 'models.svg'), 'utf8');
    expect(svg).toMatch(/^<svg/);
    for (const m of [...grouped, 'generative', 'discriminative', 'bottleneck']) expect(svg).toContain(`>${m}<`);
  });

  it('attacks the same model as other classifiers (fresh noise, EOT, independent draws), paired on the same images', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gencls-variants-'));
    await tinyCheckpoints(dir, ['gfz']);
    const pgd = { kind: 'pgd' as const, norm: 'linf' as const, eps: [0.1], iterations: 2, stepSize: 0.05, randomStart: false };
    const cfg = checkConfig({
      ...defaultConfig(false),
      models: ['gfz'],
      checkpoints: dir,
      preset: 'custom',
      subset: 4,
      batchSize: 2,
      samples: 2,
      attacks: [
        { kind: 'fgs', eps: [0.1] },
        { kind: 'fgs', eps: [0.1], estimator: 'independent' },
        pgd,
        { ...pgd, noise: { kind: 'fresh' } },
        { ...pgd, noise: { kind: 'expectation', draws: 2 }, subset: 2 },
        { kind: 'cw', iterations: 5, lr: 0.1, kappa: 0, binarySearchSteps: 2, initialConst: 1, subset: 2 },
        { kind: 'adaptive', detector: 'kl', lambda: [0, 5], eps: 0.1, iterations: 2, stepSize: 0.05, subset: 2 },
        { kind: 'hopskipjump', queryBudget: 40, subset: 2 },
        { kind: 'substitute', train: 40, epochs: 2, eps: [0.1], iterations: 2, stepSize: 0.05, cw: { iterations: 3, binarySearchSteps: 1, initialConst: 1 }, subset: 2 },
        { kind: 'substitute', train: 10, epochs: 1, eps: [0.1], iterations: 2, stepSize: 0.05, augment: { rounds: 2, lambda: 0.1 }, subset: 2 },
      ],
      detection: { trainImages: 40, falsePositiveRate: 0.2 },
      gridImages: 1,
    });
    const out = join(dir, 'report');
    const study = await runStudy(cfg, { out, dataDir: shared, log: () => {} });
    expect(study.jobs.map((j) => [j.id, j.variant])).toEqual([
      ['gfz-fgs-eps0.1', ''],
      ['gfz-fgs-eps0.1-indep', 'indep'],
      ['gfz-pgd-linf-eps0.1-it2', ''],
      ['gfz-pgd-linf-eps0.1-it2-fresh', 'fresh'],
      ['gfz-pgd-linf-eps0.1-it2-eot2', 'eot2'],
      ['gfz-cw-l2-bs2-it5', ''],
      ['gfz-adaptive-kl-eps0.1-it2-lambda0', ''],
      ['gfz-adaptive-kl-eps0.1-it2-lambda5', ''],
      ['gfz-hopskipjump-l2-q40', ''],
      ['gfz-substitute-pgd-eps0.1-it2', ''],
      ['gfz-substitute-mim-eps0.1-it2', ''],
      ['gfz-substitute-cw-it3', ''],
      ['gfz-substitute-jba2-pgd-eps0.1-it2', ''],
      ['gfz-substitute-jba2-mim-eps0.1-it2', ''],
    ]);
    for (const q of study.jobs[8].results.queries!) expect(q).toBeLessThanOrEqual(40);
    const sub = study.models[0].substitutes![0];
    expect(sub.trainImages).toBe(40);
    expect(sub.testAgreement).toBeGreaterThanOrEqual(0);
    expect(sub.testAgreement).toBeLessThanOrEqual(1);
    for (const j of study.jobs.slice(9, 11)) for (const v of j.results.linf) expect(v).toBeLessThanOrEqual(0.1 + 1e-6);
    // Papernot's augmentation: 10 seed images doubled twice, the 30 new ones labelled by the victim.
    expect(study.models[0].substitutes![1].augment).toEqual({ rounds: 2, lambda: 0.1, images: 40, queries: 30 });
    expect(study.jobs.slice(6, 8).map((j) => [j.detector, j.lambda])).toEqual([['kl', 0], ['kl', 5]]);
    // CW's curve: accuracy within an L2 budget falls with the budget to the accuracy under the attack.
    const cwJob = study.jobs[5];
    const curve = [0, 0.5, 1, 2, 4, 1e9].map((r) => accuracyAtL2(cwJob, r));
    for (let i = 1; i < curve.length; i++) expect(curve[i]).toBeLessThanOrEqual(curve[i - 1]);
    expect(curve[0]).toBe(cwJob.metrics.cleanAccuracy);
    expect(curve[curve.length - 1]).toBe(cwJob.metrics.adversarialAccuracy);
    for (const v of cwJob.results.adversarialPredictions.map((_, i) => cwJob.results.l2[i])) expect(Number.isFinite(v)).toBe(true);
    expect(study.models[0].variants!.map((v) => v.classifier)).toEqual(['fixed noise, independent draws', 'fresh noise, shared draws', 'EOT over 2 draws, shared draws']);
    await writeReport(study, out, 'test');
    const md = readFileSync(join(out, 'report.md'), 'utf8');
    expect(md).toContain('## Minimal L2 attacks');
    expect(md).toMatch(/\| GFZ \| HopSkipJump \| L2, hard-label, 40 queries \| 2 \|/);
    expect(md).toMatch(/## Substitute black-box attacks[\s\S]*\| GFZ \| 40 images, 2 epochs \| [0-9.]+% \| [0-9.]+% \[/);
    expect(md).toContain('| GFZ | 10 seed images, 2 rounds of Jacobian augmentation (lambda 0.1): 40 images, 30 victim queries, 1 epoch a round |');
    expect(md).toMatch(/\| GFZ \| PGD eps=0.1 linf, 2 it \| Jacobian-augmented \| /);
    expect(md).toMatch(/## Adaptive attacks on the detectors[\s\S]*\| GFZ \| kl \| PGD eps=0.1, 2 it \| [0-9.–]+%? \/ [0-9.]+% \/ [0-9.]+% \(\d of 2 fooled\) \|/);
    expect(md).toContain('## Protocol checks');
    expect(md).toMatch(/\| GFZ \| CW \| kappa=0, 5 it, 2 search steps from c=1 \| 2 \|/);
    expect(readFileSync(join(out, 'accuracy-vs-l2.svg'), 'utf8')).toMatch(/^<svg/);
    const section = md.split('## The classifier under attack')[1].split('\n## ')[0];
    const rows = section.split('\n').filter((l) => l.startsWith('| GFZ | FGS') || l.startsWith('| GFZ | PGD'));
    expect(rows.length).toBe(2);
    // Paired counts: images right after the attack only under the study's classifier / only under the other.
    const own = study.jobs[2].results;
    const fresh = study.jobs[3].results;
    const onlyOwn = own.labels.filter((y, i) => own.adversarialPredictions[i] === y && fresh.adversarialPredictions[i] !== y).length;
    const onlyFresh = own.labels.filter((y, i) => own.adversarialPredictions[i] !== y && fresh.adversarialPredictions[i] === y).length;
    expect(rows[1]).toContain(`| ${onlyOwn} / ${onlyFresh} of 4 |`);
    // The headline and the models-side-by-side tables show the study's own classifier only.
    expect(md.split('## Headline')[1].split('## ')[0]).not.toMatch(/fresh|indep|EOT/);
    // Fresh draws are seeded per unit: the study again, from scratch, gives the same numbers.
    const again = await runStudy(cfg, { out: join(dir, 'again'), dataDir: shared, log: () => {} });
    expect(again.jobs.map((j) => j.results)).toEqual(study.jobs.map((j) => j.results));
  });

  it('names the missing checkpoint and how to make it', async () => {
    const cfg = checkConfig({ ...defaultConfig(false), checkpoints: '/nonexistent', models: ['gbz'], attacks: [] });
    await expect(runStudy(cfg, { out: mkdtempSync(join(tmpdir(), 'gencls-study-')), dataDir: shared, log: () => {} })).rejects.toThrow(
      /no checkpoint for model 'gbz' at \/nonexistent\/gbz-compact.safetensors: train it with `npx tsx src\/cli.ts train --model gbz --preset compact`/,
    );
  });
});

describe('imageGrid', () => {
  const band = (title: string, n: number): GridBand => ({
    title,
    clean: Array.from({ length: n }, (_, k) => Array.from({ length: 784 }, (_, p) => ((p + k) % 28) / 27)),
    adversarial: Array.from({ length: n }, (_, k) => Array.from({ length: 784 }, (_, p) => Math.min(1, ((p + k) % 28) / 27 + (p % 2) * 0.1))),
    labels: Array.from({ length: n }, (_, k) => k),
    cleanPredictions: Array.from({ length: n }, (_, k) => k),
    adversarialPredictions: Array.from({ length: n }, (_, k) => (k % 2 ? k : 9 - k)),
  });

  it('draws every image of every band as a pixel-exact tile, with labels and predictions', () => {
    const svg = imageGrid([band('FGS eps=0.1', 3), band('DeepFool p=2', 2)]);
    const tiles = [...svg.matchAll(/href="data:image\/png;base64,([^"]+)"/g)].map((m) => PNG.sync.read(Buffer.from(m[1], 'base64')));
    expect(tiles.length).toBe(3 * 3 + 3 * 2);
    // First tile: clean image 0 of band 0, drawn dark-on-light (grey = 255 * (1 - v)).
    const b = band('', 1);
    for (const p of [0, 13, 27, 400]) expect(tiles[0].data[4 * p]).toBe(Math.round(255 * (1 - b.clean[0][p])));
    // Perturbation row: zero change is mid-grey, the largest change black.
    const perturbation = tiles[6];
    expect(perturbation.data[0]).toBe(128);
    expect(Math.min(...Array.from({ length: 784 }, (_, p) => perturbation.data[4 * p]))).toBe(0);
    for (const name of ['FGS eps=0.1', 'DeepFool p=2', CLASS_NAMES[0], CLASS_NAMES[9]]) expect(svg).toContain(`>${name}<`);
    // Adversarial predictions that differ from the clean ones are marked.
    expect(svg).toContain(`fill="#c00">${CLASS_NAMES[9]}<`);
  });
});
