// `train`: fits one latent-variable classifier by maximising the ELBO, with a checkpoint after every epoch.
import { join } from 'node:path';
import { rmSync, existsSync } from 'node:fs';
import { init, shutdown } from '../index.js';
import { loadFashionMnist, resolveDataDir } from '../data/idx.js';
import { modelConfig, MODEL_NAMES, PRESETS } from '../models/factorisations.js';
import { trainModel } from '../models/train.js';
import { optimPath } from '../models/store.js';
import { parseBackend } from '../device.js';
import { BACKEND_OPTION, CliError, boolOpt, stringOpt, intOpt, numberOpt, type Command } from './command.js';

export const DEFAULT_CHECKPOINT_DIR = 'checkpoints';
export const checkpointPath = (dir: string, model: string, preset: string) => join(dir, `${model}-${preset}.safetensors`);

export const command: Command = {
  name: 'train',
  summary: 'train a latent-variable classifier (ELBO, Adam), checkpointing every epoch',
  description:
    'Ctrl-C stops after the current step; the last completed epoch stays on disk and --resume continues from it\n' +
    'with the same data order and noise as an uninterrupted run.',
  options: {
    model: { type: 'string', valueName: MODEL_NAMES.join('|'), description: 'factorisation to train', defaultText: 'gfz' },
    preset: { type: 'string', valueName: Object.keys(PRESETS).join('|'), description: 'network sizes', defaultText: 'compact' },
    epochs: { type: 'string', valueName: 'n', description: 'epochs', defaultText: '20' },
    'batch-size': { type: 'string', valueName: 'n', description: 'minibatch size', defaultText: '100' },
    lr: { type: 'string', valueName: 'x', description: 'Adam learning rate', defaultText: '1e-3' },
    seed: { type: 'string', valueName: 'n', description: 'seed of initialisation, data order and noise', defaultText: '1' },
    dropout: { type: 'string', valueName: 'rate', description: 'dropout on conv feature vectors during training', defaultText: '0' },
    likelihood: { type: 'string', valueName: 'gaussian|bernoulli', description: 'image likelihood', defaultText: 'gaussian' },
    'eval-subset': { type: 'string', valueName: 'n', description: 'test images scored after each epoch', defaultText: '1000' },
    'eval-samples': { type: 'string', valueName: 'K', description: 'importance samples per class when scoring', defaultText: '10' },
    'train-limit': { type: 'string', valueName: 'n', description: 'use only the first n training images', defaultText: '60000' },
    'kl-warmup': {
      type: 'string',
      valueName: 'steps',
      description: "steps over which the weight of the bound's latent term log p(z|.) - log q(z|x,y) rises from 0 to 1 (0: the bound from the start; DBX needs one, see docs/models.md)",
      defaultText: '0',
    },
    out: { type: 'string', valueName: 'dir', description: 'checkpoint directory', defaultText: DEFAULT_CHECKPOINT_DIR },
    data: { type: 'string', valueName: 'dir', description: 'Fashion-MNIST directory', defaultText: 'env FASHION_MNIST_DIR, else data/fashion-mnist' },
    resume: { type: 'boolean', description: 'continue the checkpoint in --out with its settings (--epochs, --eval-subset and --eval-samples may be given anew)' },
    force: { type: 'boolean', description: 'discard an existing checkpoint and start over' },
    backend: BACKEND_OPTION,
  },
  async run({ values, stderr }) {
    const model = stringOpt(values, 'model') ?? 'gfz';
    const preset = stringOpt(values, 'preset') ?? 'compact';
    const seed = intOpt(values, 'seed', 1, { min: 0 });
    let config;
    try {
      config = modelConfig(model, preset, {
        seed,
        dropout: numberOpt(values, 'dropout', 0, { min: 0, max: 0.99 }),
        likelihood: (stringOpt(values, 'likelihood') ?? 'gaussian') as 'gaussian',
      });
    } catch (e) {
      throw new CliError(`train: ${(e as Error).message}`);
    }
    const train = {
      epochs: intOpt(values, 'epochs', 20, { min: 1 }),
      batchSize: intOpt(values, 'batch-size', 100, { min: 1 }),
      lr: numberOpt(values, 'lr', 1e-3, { min: 1e-12, max: 1 }),
      seed,
      evalSubset: intOpt(values, 'eval-subset', 1000, { min: 1 }),
      evalSamples: intOpt(values, 'eval-samples', 10, { min: 1 }),
      trainLimit: intOpt(values, 'train-limit', 60000, { min: 1 }),
      klWarmup: intOpt(values, 'kl-warmup', 0, { min: 0 }),
    };
    // Given explicitly, the per-epoch scoring options also apply to a resumed run (the rest come from its checkpoint).
    const resumeOverrides = Object.fromEntries(
      (['evalSubset', 'evalSamples'] as const).filter((k) => values[k === 'evalSubset' ? 'eval-subset' : 'eval-samples'] !== undefined).map((k) => [k, train[k]]),
    );
    const path = checkpointPath(stringOpt(values, 'out') ?? DEFAULT_CHECKPOINT_DIR, model, preset);
    if (boolOpt(values, 'force') && existsSync(path)) {
      rmSync(path);
      rmSync(optimPath(path), { force: true });
    }
    const dir = resolveDataDir(stringOpt(values, 'data'));
    const data = { train: loadFashionMnist({ dir, split: 'train' }), test: loadFashionMnist({ dir, split: 'test' }) };
    await init({ backend: parseBackend(stringOpt(values, 'backend') ?? process.env.GENCLS_BACKEND) });
    let stop = false;
    const onSigint = () => {
      if (stop) process.exit(130);
      stop = true;
      stderr.write('\nstopping after this step (Ctrl-C again to quit at once)\n');
    };
    process.on('SIGINT', onSigint);
    try {
      const { stopped } = await trainModel(data, { config, train, checkpoint: path, resume: boolOpt(values, 'resume'), resumeOverrides, shouldStop: () => stop, log: (l) => stderr.write(l + '\n') });
      stderr.write(`${stopped ? 'stopped' : 'done'}: ${path}\n`);
      return stopped ? 130 : 0;
    } finally {
      process.off('SIGINT', onSigint);
      shutdown();
    }
  },
};
