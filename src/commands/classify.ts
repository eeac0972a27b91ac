// `classify`: a checkpoint's Bayes-rule logits log p(x, y = c) and its p(y | x) for a few test images, with the
// noise seed given directly to the model (the browser page's seed means the same, so both print the same logits).
import { init, shutdown, tensor, tidy, noGrad, softmax, readAll } from '../index.js';
import { loadFashionMnist, readIdx, resolveDataDir } from '../data/idx.js';
import { loadModel } from '../models/store.js';
import { parseBackend } from '../device.js';
import { CLASS_NAMES } from '../models/factorisations.js';
import { BACKEND_OPTION, CliError, boolOpt, stringOpt, intOpt, type Command } from './command.js';

export const command: Command = {
  name: 'classify',
  summary: "a checkpoint's logits log p(x, y=c) and p(y|x) for test images",
  description:
    'Classifies test images index .. index+count-1 (of the test split, or of --images) as one batch, K importance samples per class, ' +
    'the sampling noise seeded by --seed (the seed goes to the model as it is, as the web page does, so the two agree). ' +
    'The logits are the importance-sampled log p(x, y = c).',
  positionals: '<checkpoint.safetensors>',
  options: {
    index: { type: 'string', valueName: 'i', description: 'first test image', defaultText: '0' },
    count: { type: 'string', valueName: 'n', description: 'number of test images', defaultText: '1' },
    samples: { type: 'string', valueName: 'K', description: 'importance samples per class', defaultText: '10' },
    seed: { type: 'string', valueName: 'n', description: 'seed of the sampling noise', defaultText: '1' },
    data: { type: 'string', valueName: 'dir', description: 'Fashion-MNIST directory', defaultText: 'env FASHION_MNIST_DIR, else data/fashion-mnist' },
    images: { type: 'string', valueName: 'file', description: 'classify the 28x28 images of this IDX file (gzipped or not) instead of the test split, e.g. web/public/data/test-images.idx3-ubyte' },
    labels: { type: 'string', valueName: 'file', description: 'with --images: their labels (an IDX labels file)' },
    json: { type: 'boolean', description: 'print one JSON object' },
    backend: BACKEND_OPTION,
  },
  async run({ values, positionals, stdout, stderr }) {
    if (positionals.length !== 1) throw new CliError('classify: expected exactly one checkpoint path');
    const { images: source, labels, count: available } = readImages(stringOpt(values, 'images'), stringOpt(values, 'labels'), stringOpt(values, 'data'));
    const index = intOpt(values, 'index', 0, { min: 0, max: available - 1 });
    const count = intOpt(values, 'count', 1, { min: 1, max: available - index });
    const samples = intOpt(values, 'samples', 10, { min: 1 });
    const seed = intOpt(values, 'seed', 1, { min: 0 });
    const rt = await init({ backend: parseBackend(stringOpt(values, 'backend') ?? process.env.GENCLS_BACKEND) });
    stderr.write(`adapter: ${rt.description}\n`);
    try {
      const { model, meta } = loadModel(positionals[0]);
      const pixels = source.subarray(index * 784, (index + count) * 784);
      const out = noGrad(() =>
        tidy(() => {
          const logits = model.logits(tensor(pixels, [count, 1, 28, 28]), { samples, seed });
          return [logits, softmax(logits)];
        }),
      );
      const [logits, probs] = (await readAll(out)) as Float32Array[];
      out.forEach((t) => t.dispose());
      const images = Array.from({ length: count }, (_, j) => {
        const row = (a: Float32Array) => Array.from(a.subarray(j * 10, j * 10 + 10));
        const l = row(logits);
        const predicted = l.indexOf(Math.max(...l));
        return { index: index + j, label: labels ? labels[index + j] : null, predicted, logits: l, probabilities: row(probs) };
      });
      const result = { checkpoint: positionals[0], model: meta.model.model, preset: meta.model.preset, epoch: meta.epoch, samples, seed, images, adapter: rt.description };
      if (boolOpt(values, 'json')) stdout.write(JSON.stringify(result, null, 2) + '\n');
      else {
        stdout.write(`${result.model}/${result.preset} (epoch ${result.epoch}), K=${samples}, seed ${seed}, on ${rt.description}\n`);
        for (const im of images) {
          stdout.write(`image ${im.index}: ${im.label === null ? 'no label' : `label ${im.label} (${CLASS_NAMES[im.label]})`}, predicted ${im.predicted} (${CLASS_NAMES[im.predicted]})\n`);
          im.logits.forEach((l, c) => stdout.write(`  ${String(c).padStart(2)} ${CLASS_NAMES[c].padEnd(11)} log p(x, y) ${l.toFixed(3).padStart(10)}   p(y|x) ${im.probabilities[c].toFixed(4)}\n`));
        }
      }
      return 0;
    } finally {
      shutdown();
    }
  },
};

/** The test split, or the images (and labels) of the IDX files given, as [count * 784] pixels in [0, 1]. */
function readImages(imagesPath: string | undefined, labelsPath: string | undefined, dataDir: string | undefined): { images: Float32Array; labels: ArrayLike<number> | null; count: number } {
  if (!imagesPath) {
    if (labelsPath) throw new CliError('classify: --labels goes with --images');
    const test = loadFashionMnist({ dir: resolveDataDir(dataDir), split: 'test' });
    return { images: test.images, labels: test.labels, count: test.count };
  }
  const idx = readIdx(imagesPath, 'images');
  const [count, rows, cols] = idx.dims;
  if (rows !== 28 || cols !== 28) throw new CliError(`classify: ${imagesPath} holds ${rows}x${cols} images; the models take 28x28`);
  if (count === 0) throw new CliError(`classify: ${imagesPath} holds no images`);
  let labels: Uint8Array | null = null;
  if (labelsPath) {
    labels = readIdx(labelsPath, 'labels').data;
    if (labels.length !== count) throw new CliError(`classify: ${labelsPath} holds ${labels.length} labels for the ${count} images of ${imagesPath}`);
  }
  return { images: Float32Array.from(idx.data, (v) => v / 255), labels, count };
}
