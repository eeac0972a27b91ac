import { describe, it, expect } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as T from './lib.js';
import { useGpu, randomRef, SWIFTSHADER } from './helpers.js';
import { createModel, modelConfig, passPlan, MODEL_NAMES, NUM_CLASSES, type ModelName } from '../src/models/factorisations.js';
import { trainModel, evaluate, batchTensors } from '../src/models/train.js';
import { loadModel, saveCheckpoint, readMeta } from '../src/models/store.js';
import type { FashionMnistSplit } from '../src/data/idx.js';

useGpu();

const tiny = (model: ModelName, seed = 1) => modelConfig(model, 'compact', { channels: 3, hidden: 12, latent: 3, seed, preset: 'custom' });

/** Synthetic 28x28 "images": class c lights up a horizontal band, plus noise. */
function syntheticSplit(count: number, seed: number): FashionMnistSplit {
  const noise = randomRef([count * 784], seed, 0, 0.3).data;
  const images = new Float32Array(count * 784);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    labels[i] = i % NUM_CLASSES;
    for (let p = 0; p < 784; p++) images[i * 784 + p] = Math.min(1, noise[i * 784 + p] + (Math.floor(p / 28 / 2.8) === labels[i] ? 0.7 : 0));
  }
  return { images, labels, count, rows: 28, cols: 28, paths: { images: 'synthetic', labels: 'synthetic' } };
}

describe('the seven factorisations', () => {
  // SwiftShader checks the gpu profile's kernels on the two studied models; the default adapter runs all seven.
  for (const name of SWIFTSHADER ? (['gfz', 'dfz'] as const) : MODEL_NAMES) {
    it(`${name}: finite ELBO per example and [N, 10] logits, reproducible from the seed`, async () => {
      const model = createModel(tiny(name));
      const data = syntheticSplit(4, 2);
      const { x, y } = batchTensors(data, [0, 1, 2, 3]);
      const elbo = model.elbo(x, y, { seed: 5 });
      expect(elbo.shape).toEqual([4]);
      const logits = model.logits(x, { seed: 7, samples: 3 });
      expect(logits.shape).toEqual([4, NUM_CLASSES]);
      const [e, l, l2, l3] = await T.readAll([elbo, logits, model.logits(x, { seed: 7, samples: 3 }), model.logits(x, { seed: 8, samples: 3 })]);
      expect(Array.from(e).every(Number.isFinite)).toBe(true);
      expect(Array.from(l).every(Number.isFinite)).toBe(true);
      expect(Array.from(l2)).toEqual(Array.from(l));
      expect(Array.from(l3)).not.toEqual(Array.from(l));
      model.params.dispose();
    });
  }

  it('Bayes-rule logits: one batched pass equals passes by class or by image, and equals the brute-force estimate', async () => {
    const model = createModel(tiny('dfz'));
    const n = 3;
    const k = 4;
    const { x } = batchTensors(syntheticSplit(n, 4), [0, 1, 2]);
    // The K draws of each image, shared by all classes (common random numbers), as `logits` draws them.
    const noise = T.reshape(T.randomNormal([k, 1, n, 3], 3), [k * n, 3]);
    // Brute force: for each class and sample separately, log p(x, c, z) - log q(z|x, c), then log-mean-exp over samples.
    const perClass = Array.from({ length: NUM_CLASSES }, (_, c) =>
      model.logWeights(x, T.oneHot(T.tensor(new Array(k * n).fill(c), [k * n], 'i32'), NUM_CLASSES), { seed: 3, noise }),
    );
    // Passes of two classes, and passes of one class for two images (then one) when a class of the batch does not fit.
    const passes = [2 * k * n, 2 * k + 1].map((maxRows) => model.logits(x, { seed: 3, samples: k, maxRows }));
    const [whole, byClass, byImage, ...weights] = await T.readAll([model.logits(x, { seed: 3, samples: k }), ...passes, ...perClass]);
    for (let i = 0; i < n; i++)
      for (let c = 0; c < NUM_CLASSES; c++) {
        const w = Array.from({ length: k }, (_, s) => weights[c][s * n + i]);
        const m = Math.max(...w);
        const want = m + Math.log(w.reduce((a, v) => a + Math.exp(v - m), 0) / k);
        expect(whole[i * NUM_CLASSES + c]).toBeCloseTo(want, 3);
        expect(byClass[i * NUM_CLASSES + c]).toBeCloseTo(want, 3);
        expect(byImage[i * NUM_CLASSES + c]).toBeCloseTo(want, 3);
      }
    expect(() => model.logits(x, { seed: 3, samples: k, maxRows: k - 1 })).toThrow(/maxRows must be an integer of at least K = 4/);
    model.params.dispose();
  });

  it("the reference's estimator: independent draws for every class, equal to the brute-force estimate, also in passes and for row subsets", async () => {
    const model = createModel(tiny('gfz'));
    const n = 3;
    const k = 2;
    const { x } = batchTensors(syntheticSplit(n, 5), [0, 1, 2]);
    // Laid out (class, sample, image): class c's draws are rows c*k*n .. (c+1)*k*n.
    const noise = T.reshape(T.randomNormal([NUM_CLASSES * k, 1, n, 3], 7), [NUM_CLASSES, k * n, 3]);
    const perClass = Array.from({ length: NUM_CLASSES }, (_, c) =>
      model.logWeights(x, T.oneHot(T.tensor(new Array(k * n).fill(c), [k * n], 'i32'), NUM_CLASSES), { seed: 7, noise: T.reshape(T.slice(noise, [c, 0, 0], [1, k * n, 3]), [k * n, 3]) }),
    );
    const sub = T.reshape(T.gather(T.reshape(x, [n, -1]), T.tensor([2, 0], [2], 'i32')), [2, 1, 28, 28]);
    const [whole, byClass, shared, rows, ...weights] = await T.readAll([
      model.logits(x, { seed: 7, samples: k, estimator: 'independent' }),
      model.logits(x, { seed: 7, samples: k, estimator: 'independent', maxRows: 3 * k * n }),
      model.logits(x, { seed: 7, samples: k }),
      model.logits(sub, { seed: 7, samples: k, estimator: 'independent', rows: { indices: [2, 0], of: n } }),
      ...perClass,
    ]);
    let differs = 0;
    for (let i = 0; i < n; i++)
      for (let c = 0; c < NUM_CLASSES; c++) {
        const w = Array.from({ length: k }, (_, s) => weights[c][s * n + i]);
        const m = Math.max(...w);
        const want = m + Math.log(w.reduce((a, v) => a + Math.exp(v - m), 0) / k);
        expect(whole[i * NUM_CLASSES + c]).toBeCloseTo(want, 3);
        expect(byClass[i * NUM_CLASSES + c]).toBeCloseTo(want, 3);
        if (Math.abs(shared[i * NUM_CLASSES + c] - want) > 1e-3) differs++;
      }
    // Class 0 draws the shared estimator's draws; the other classes draw their own.
    expect(differs).toBeGreaterThan(NUM_CLASSES);
    for (let c = 0; c < NUM_CLASSES; c++) {
      expect(rows[c]).toBeCloseTo(whole[2 * NUM_CLASSES + c], 3);
      expect(rows[NUM_CLASSES + c]).toBeCloseTo(whole[c], 3);
    }
    expect(() => model.logits(x, { seed: 7, samples: k, estimator: 'both' as never })).toThrow(/estimator must be one of shared, independent, got 'both'/);
    model.params.dispose();
  });

  it('pass plan: every image and as many classes as fit, else as many images as fit with one class', () => {
    expect(passPlan(100, 10, 1e9)).toEqual({ imagesPerPass: 100, classesPerPass: 10 });
    expect(passPlan(100, 10, 2_999)).toEqual({ imagesPerPass: 100, classesPerPass: 2 });
    expect(passPlan(100, 10, 999)).toEqual({ imagesPerPass: 99, classesPerPass: 1 });
    expect(passPlan(3, 4, 2 * 4 + 1)).toEqual({ imagesPerPass: 2, classesPerPass: 1 });
  });

  it('fixed noise follows the image: logits of a subset equal those rows of the whole batch', async () => {
    const model = createModel(tiny('gfz'));
    const { x } = batchTensors(syntheticSplit(5, 6), [0, 1, 2, 3, 4]);
    const rows = [4, 1, 3];
    const sub = T.gather(T.reshape(x, [5, -1]), T.tensor(rows, [3], 'i32'));
    const [whole, part] = await T.readAll([
      model.logits(x, { seed: 9, samples: 3 }),
      model.logits(T.reshape(sub, [3, 1, 28, 28]), { seed: 9, samples: 3, rows: { indices: rows, of: 5 } }),
    ]);
    rows.forEach((r, j) => {
      for (let c = 0; c < NUM_CLASSES; c++) expect(part[j * NUM_CLASSES + c]).toBeCloseTo(whole[r * NUM_CLASSES + c], 4);
    });
    model.params.dispose();
  });

  it('parameter layouts follow PyTorch (Conv2d [out,in,kh,kw], ConvTranspose2d [in,out,kh,kw], Linear [out,in])', () => {
    const model = createModel(tiny('gfz'));
    const shapes = Object.fromEntries(model.params.slots.map((s) => [s.name, s.shape]));
    expect(shapes['encoder.conv.0.weight']).toEqual([3, 1, 5, 5]);
    expect(shapes['encoder.fc.weight']).toEqual([12, 3 * 16]);
    expect(shapes['encoder.head.0.weight']).toEqual([12, 12 + 10]);
    expect(shapes['encoder.head.1.weight']).toEqual([6, 12]);
    expect(shapes['p_x_yz.deconv.2.weight']).toEqual([3, 1, 5, 5]);
    expect(shapes['p_x_yz.fc.0.weight']).toEqual([12, 3 + 10]);
    expect(shapes['p_y_z.1.weight']).toEqual([10, 12]);
    model.params.dispose();
  });
});

// The training loop (resumption, warm-up, stopping, refusing to overwrite) is the same on every adapter; the
// SwiftShader project, there for the gpu profile's kernels, which the factorisations above exercise, skips it.
describe.skipIf(SWIFTSHADER)('training', () => {
  const data = { train: syntheticSplit(60, 11), test: syntheticSplit(20, 12) };
  const trainCfg = { epochs: 2, batchSize: 20, lr: 3e-3, seed: 9, evalSubset: 20, evalSamples: 2, trainLimit: 60 };
  const quiet = () => {};

  it('lowers the negative ELBO and resumes to exactly the weights of an uninterrupted run, also when scored anew', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gencls-train-'));
    const straight = await trainModel(data, { config: tiny('gfz'), train: trainCfg, checkpoint: join(dir, 'a.safetensors'), resume: false, log: quiet });
    expect(straight.history[1].trainNegElbo).toBeLessThan(straight.history[0].trainNegElbo);

    const first = await trainModel(data, { config: tiny('gfz'), train: { ...trainCfg, epochs: 1 }, checkpoint: join(dir, 'b.safetensors'), resume: false, log: quiet });
    first.model.params.dispose();
    // A new per-epoch scoring subset on resume changes what is reported, never the training.
    const resumed = await trainModel(data, { config: tiny('gfz'), train: trainCfg, checkpoint: join(dir, 'b.safetensors'), resume: true, resumeOverrides: { evalSubset: 10 }, log: quiet });
    const [a, b] = await Promise.all([straight.model.params.state(), resumed.model.params.state()]);
    for (const name of Object.keys(a)) expect(Array.from(b[name]), name).toEqual(Array.from(a[name]));
    expect(resumed.history.map((h) => h.epoch)).toEqual([1, 2]);
    expect(resumed.history.map((h) => h.testSubset)).toEqual([20, 10]);
    straight.model.params.dispose();
    resumed.model.params.dispose();
  });

  it('a KL warm-up weighs the latent term linearly, is the bound at weight 1, and resumes exactly across epochs', async () => {
    const x = T.tensor(data.train.images.subarray(0, 4 * 784), [4, 1, 28, 28]);
    const y = T.oneHot(T.tensor([0, 3, 7, 9], [4], 'i32'), 10);
    for (const name of MODEL_NAMES) {
      const model = createModel(tiny(name));
      const at = (klWeight?: number) => T.tidy(() => model.logWeights(x, y, { seed: 5, klWeight }));
      const [w, w1, w0, wHalf] = await T.readAll([at(), at(1), at(0), at(0.5)]);
      expect(Array.from(w1), name).toEqual(Array.from(w));
      // w(beta) = w(1) - (1 - beta)(log p(z|.) - log q): w(1/2) is the mean of w(0) and w(1).
      wHalf.forEach((v, i) => expect(v, name).toBeCloseTo((w0[i] + w1[i]) / 2, 3));
      expect(Array.from(w0).some((v, i) => Math.abs(v - w1[i]) > 1e-3), `${name}: weight 0 drops the latent term`).toBe(true);
      expect(() => model.logWeights(x, y, { seed: 5, klWeight: 2 })).toThrow(/klWeight must lie in \[0, 1\]/);
      model.params.dispose();
    }
    const dir = mkdtempSync(join(tmpdir(), 'gencls-train-'));
    const warm = { ...trainCfg, klWarmup: 5 }; // 3 steps an epoch: the warm-up ends in the second
    const straight = await trainModel(data, { config: tiny('dbx'), train: warm, checkpoint: join(dir, 'w.safetensors'), resume: false, log: quiet });
    const first = await trainModel(data, { config: tiny('dbx'), train: { ...warm, epochs: 1 }, checkpoint: join(dir, 'v.safetensors'), resume: false, log: quiet });
    first.model.params.dispose();
    const resumed = await trainModel(data, { config: tiny('dbx'), train: trainCfg, checkpoint: join(dir, 'v.safetensors'), resume: true, log: quiet });
    const [a, b] = await Promise.all([straight.model.params.state(), resumed.model.params.state()]);
    for (const name of Object.keys(a)) expect(Array.from(b[name]), name).toEqual(Array.from(a[name]));
    expect(readMeta(join(dir, 'v.safetensors')).train.klWarmup).toBe(5);
    const plain = await trainModel(data, { config: tiny('dbx'), train: trainCfg, checkpoint: join(dir, 'p.safetensors'), resume: false, log: quiet });
    const c = await plain.model.params.state();
    expect(Object.keys(a).some((k) => a[k].some((v, i) => v !== c[k][i])), 'the warm-up changes the training').toBe(true);
    [straight, resumed, plain].forEach((r) => r.model.params.dispose());
    x.dispose();
    y.dispose();
  });

  it('refuses to overwrite a checkpoint unless resuming', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gencls-train-'));
    const path = join(dir, 'c.safetensors');
    const run = await trainModel(data, { config: tiny('dfz'), train: { ...trainCfg, epochs: 1 }, checkpoint: path, resume: false, log: quiet });
    run.model.params.dispose();
    await expect(trainModel(data, { config: tiny('dfz'), train: trainCfg, checkpoint: path, resume: false, log: quiet })).rejects.toThrow(/exists: pass --resume/);
  });

  it('stops between steps when asked, keeping the last completed epoch', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gencls-train-'));
    let calls = 0;
    const run = await trainModel(data, { config: tiny('dfz'), train: trainCfg, checkpoint: join(dir, 'd.safetensors'), resume: false, log: quiet, shouldStop: () => ++calls > 4 });
    expect(run.stopped).toBe(true);
    expect(run.history.map((h) => h.epoch)).toEqual([1]);
    run.model.params.dispose();
  });
});

describe('checkpoints', () => {
  it('round-trip weights and metadata; evaluation of the loaded model matches', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gencls-ckpt-'));
    const path = join(dir, 'm.safetensors');
    const model = createModel(tiny('dbx', 4));
    await saveCheckpoint(path, model, { train: { epochs: 1, batchSize: 1, lr: 1, seed: 1, evalSubset: 1, evalSamples: 1, trainLimit: 1 }, epoch: 3, history: [] });
    const { model: loaded, meta } = loadModel(path);
    expect(meta.epoch).toBe(3);
    expect(meta.model).toEqual(model.config);
    expect(meta.adapter).toMatch(/dawn/);
    const test = syntheticSplit(10, 5);
    const [e1, e2] = await Promise.all([
      evaluate(model, test, { count: 10, samples: 2, batchSize: 5, seed: 1 }),
      evaluate(loaded, test, { count: 10, samples: 2, batchSize: 5, seed: 1 }),
    ]);
    expect(e2).toEqual(e1);
    model.params.dispose();
    loaded.params.dispose();
  });

  it('refuses corrupt, truncated and mismatched checkpoints with the reason', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gencls-ckpt-'));
    const path = join(dir, 'm.safetensors');
    const model = createModel(tiny('gfz'));
    await saveCheckpoint(path, model, { train: { epochs: 1, batchSize: 1, lr: 1, seed: 1, evalSubset: 1, evalSamples: 1, trainLimit: 1 }, epoch: 1, history: [] });
    model.params.dispose();
    expect(() => loadModel(path, { model: 'dfz' })).toThrow(/holds model 'gfz', expected 'dfz'/);
    const bytes = readFileSync(path);
    writeFileSync(join(dir, 'trunc.safetensors'), bytes.subarray(0, bytes.length - 100));
    expect(() => loadModel(join(dir, 'trunc.safetensors'))).toThrow(/corrupt: tensor 'p_y_z.1.weight' \[10, 12\] has byte range .* outside the/);
    const garbage = Buffer.from(bytes);
    garbage.writeUInt32LE(0xffffff, 0);
    writeFileSync(join(dir, 'garbage.safetensors'), garbage);
    expect(() => loadModel(join(dir, 'garbage.safetensors'))).toThrow(/corrupt/);
    expect(() => loadModel(join(dir, 'missing.safetensors'))).toThrow(/no such checkpoint file/);
  });

  it('rejects unknown models and presets by name', () => {
    expect(() => modelConfig('xyz', 'compact')).toThrow(/unknown model 'xyz': expected one of gfz, dfz/);
    expect(() => modelConfig('gfz', 'huge')).toThrow(/unknown preset 'huge'/);
    expect(() => modelConfig('gfz', 'compact', { dropout: 1.5 })).toThrow(/dropout must be in \[0, 1\)/);
  });
});
