// Writes the web page's static data (web/public/data/), from the shipped checkpoints and Fashion-MNIST:
//   test-images.idx3-ubyte, test-labels.idx1-ubyte  the first N test images and labels, uncompressed IDX
//   detectors.json                                  each model's three detectors, fitted as the study fits them
//                                                   (well-classified training images, 5% false positives), with
//                                                   the checkpoints' SHA-256 so a stale file is caught (test/web.test.ts)
//
//   npm run web:assets -- [--images N] [--train-images N] [--samples K] [--seed S] [--backend B]
//
// The checkpoints themselves are not copied: web/vite.config.ts serves and bundles them from checkpoints/.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { init, shutdown, tensor, noGrad, Rng } from '../src/index.js';
import { parseBackend } from '../src/device.js';
import { loadFashionMnist, readIdx, findSplitFile, encodeIdx, resolveDataDir, repoRoot } from '../src/data/idx.js';
import { loadModel } from '../src/models/store.js';
import { fitDetectors } from '../src/attacks/detection.js';
import { writeFileAtomic } from '../src/fsutil.js';
import { intOpt } from '../src/commands/command.js';
import { Progress } from '../src/progress.js';
import { PAGE_MODELS, type PageDetectorsFile } from './format.js';

const HELP = `Usage: npm run web:assets -- [options]

Writes web/public/data/: the first N test images and labels (IDX) and detectors.json (the page's detectors,
fitted on the first M training images of the shipped DFZ and GFZ checkpoints).

Options:
  --images N        test images shipped to the page (default 300)
  --train-images M  training images the detectors are fitted on (default 1000)
  --samples K       importance samples per class (default 10)
  --seed S          seed of the sampling noise's stream, one draw per batch of 100 (default 1)
  --data DIR        Fashion-MNIST directory (default env FASHION_MNIST_DIR, else data/fashion-mnist)
  --backend B       WebGPU backend: auto|native|opengl (default env GENCLS_BACKEND, else auto)
  -h, --help        show this help
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { images: { type: 'string' }, 'train-images': { type: 'string' }, samples: { type: 'string' }, seed: { type: 'string' }, data: { type: 'string' }, backend: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) return void process.stdout.write(HELP);
  const images = intOpt(values, 'images', 300, { min: 1, max: 10_000 });
  const trainImages = intOpt(values, 'train-images', 1000, { min: 1, max: 60_000 });
  const samples = intOpt(values, 'samples', 10, { min: 1, max: 1000 });
  const seed = intOpt(values, 'seed', 1, { min: 1, max: 2 ** 31 });
  const root = repoRoot();
  const out = join(root, 'web', 'public', 'data');
  const dataDir = resolveDataDir(values.data);

  const testImages = readIdx(findSplitFile(dataDir, 'test', 'images'), 'images');
  const testLabels = readIdx(findSplitFile(dataDir, 'test', 'labels'), 'labels');
  const [, rows, cols] = testImages.dims;
  writeFileAtomic(join(out, 'test-images.idx3-ubyte'), encodeIdx('images', testImages.data.subarray(0, images * rows * cols), [images, rows, cols]));
  writeFileAtomic(join(out, 'test-labels.idx1-ubyte'), encodeIdx('labels', testLabels.data.subarray(0, images), [images]));

  const train = loadFashionMnist({ dir: dataDir, split: 'train', limit: trainImages });
  const rt = await init({ backend: parseBackend(values.backend ?? process.env.GENCLS_BACKEND) });
  process.stderr.write(`adapter: ${rt.description}\n`);
  const file: PageDetectorsFile = {
    format: 'gencls-page-detectors-v1',
    command: `npm run web:assets -- --images ${images} --train-images ${trainImages} --samples ${samples} --seed ${seed}`,
    adapter: rt.description,
    createdAt: new Date().toISOString(),
    testImages: { count: images, source: `the first ${images} images of the Fashion-MNIST test split` },
    fit: { trainImages, samples, seed, batchSize: 100, falsePositiveRate: 0.05 },
    models: {},
  };
  try {
    for (const key of PAGE_MODELS) {
      const path = join(root, 'checkpoints', `${key}-compact.safetensors`);
      const { model, meta } = loadModel(path, { model: key, preset: 'compact' });
      const logits = new Float32Array(trainImages * 10);
      const rng = new Rng(seed);
      const bar = new Progress({ label: `${key}: training logits`, total: Math.ceil(trainImages / 100), unit: 'batch' });
      for (let b = 0; b < trainImages; b += 100) {
        const n = Math.min(100, trainImages - b);
        const x = tensor(train.images.subarray(b * 784, (b + n) * 784), [n, 1, 28, 28]);
        const l = noGrad(() => model.logits(x, { samples, seed: rng.nextSeed() }));
        logits.set(await l.data(), b * 10);
        x.dispose();
        l.dispose();
        bar.tick();
      }
      bar.finish();
      const detectors = fitDetectors({ logits, labels: train.labels.subarray(0, trainImages), numClasses: 10 }, { falsePositiveRate: file.fit.falsePositiveRate });
      const sha256 = createHash('sha256').update(readFileSync(path)).digest('hex');
      file.models[key] = { checkpoint: relative(root, path), sha256, epoch: meta.epoch, detectors };
    }
  } finally {
    shutdown();
  }
  writeFileAtomic(join(out, 'detectors.json'), JSON.stringify(file, null, 1) + '\n');
  process.stdout.write(`wrote ${relative(process.cwd(), resolve(out))}/: ${images} test images, detectors for ${PAGE_MODELS.join(', ')}\n`);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).message}\n`);
  process.exit(1);
});
