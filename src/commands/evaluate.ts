// `evaluate`: clean test accuracy of a checkpoint by Bayes' rule with K importance samples per class.
import { init, shutdown } from '../index.js';
import { loadFashionMnist, resolveDataDir } from '../data/idx.js';
import { loadModel } from '../models/store.js';
import { evaluate } from '../models/train.js';
import { parseBackend } from '../device.js';
import { BACKEND_OPTION, CliError, boolOpt, stringOpt, intOpt, type Command } from './command.js';

export const command: Command = {
  name: 'evaluate',
  summary: 'clean accuracy of a checkpoint on the test set (Bayes rule, K samples per class)',
  positionals: '<checkpoint.safetensors>',
  options: {
    samples: { type: 'string', valueName: 'K', description: 'importance samples per class', defaultText: '10' },
    count: { type: 'string', valueName: 'n', description: 'test images (the first n)', defaultText: '10000' },
    'batch-size': { type: 'string', valueName: 'n', description: 'images per batch', defaultText: '100' },
    seed: { type: 'string', valueName: 'n', description: 'seed of the sampling noise', defaultText: '1' },
    data: { type: 'string', valueName: 'dir', description: 'Fashion-MNIST directory', defaultText: 'env FASHION_MNIST_DIR, else data/fashion-mnist' },
    json: { type: 'boolean', description: 'print one JSON object' },
    backend: BACKEND_OPTION,
  },
  async run({ values, positionals, stdout, stderr }) {
    if (positionals.length !== 1) throw new CliError('evaluate: expected exactly one checkpoint path');
    const samples = intOpt(values, 'samples', 10, { min: 1 });
    const count = intOpt(values, 'count', 10000, { min: 1, max: 10000 });
    const test = loadFashionMnist({ dir: resolveDataDir(stringOpt(values, 'data')), split: 'test' });
    const rt = await init({ backend: parseBackend(stringOpt(values, 'backend') ?? process.env.GENCLS_BACKEND) });
    stderr.write(`adapter: ${rt.description}\n`);
    try {
      const { model, meta } = loadModel(positionals[0]);
      const t0 = performance.now();
      const r = await evaluate(model, test, { count, samples, batchSize: intOpt(values, 'batch-size', 100, { min: 1 }), seed: intOpt(values, 'seed', 1, { min: 0 }), progress: true });
      const seconds = (performance.now() - t0) / 1000;
      const out = { checkpoint: positionals[0], model: meta.model.model, preset: meta.model.preset, epoch: meta.epoch, samples, count: r.count, accuracy: r.accuracy, negElbo: r.negElbo, seconds, imagesPerSecond: r.count / seconds, adapter: rt.description };
      if (boolOpt(values, 'json')) stdout.write(JSON.stringify(out, null, 2) + '\n');
      else stdout.write(`${out.model}/${out.preset} (epoch ${out.epoch}): accuracy ${(100 * r.accuracy).toFixed(2)}% on ${r.count} test images, K=${samples}; -ELBO ${r.negElbo.toFixed(2)}; ${out.imagesPerSecond.toFixed(1)} img/s on ${rt.description}\n`);
      return 0;
    } finally {
      shutdown();
    }
  },
};
