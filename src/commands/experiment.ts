// `experiment`: the study's main job — models x attacks x detectors from a config, written to report/.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { init, shutdown } from '../index.js';
import { parseBackend } from '../device.js';
import { loadConfig, checkConfig } from '../study/config.js';
import { runStudy } from '../study/run.js';
import { writeReport } from '../study/report.js';
import { BACKEND_OPTION, CliError, boolOpt, stringOpt, type Command } from './command.js';

export const command: Command = {
  name: 'experiment',
  summary: 'run the study (models x attacks x detectors) and write report/ (Markdown, JSON, figures)',
  description:
    'Uses the shipped checkpoints in checkpoints/ unless the config says otherwise. Defaults: the full 10,000 test\n' +
    'images on a native GPU adapter, a subset sized for minutes on a software renderer. Finished jobs are kept in\n' +
    '<out>/jobs/, so an interrupted run picks up where it stopped; --fresh discards them.',
  options: {
    config: { type: 'string', valueName: 'file.json', description: 'JSON overriding any field of the default configuration' },
    subset: { type: 'string', valueName: 'n', description: 'test images attacked (overrides the config)' },
    models: { type: 'string', valueName: 'a,b', description: 'comma-separated model names (overrides the config)' },
    out: { type: 'string', valueName: 'dir', description: 'report directory', defaultText: 'report' },
    data: { type: 'string', valueName: 'dir', description: 'Fashion-MNIST directory', defaultText: 'env FASHION_MNIST_DIR, else data/fashion-mnist' },
    fresh: { type: 'boolean', description: 'recompute every job instead of reusing finished ones' },
    backend: BACKEND_OPTION,
  },
  async run({ values, stderr, stdout }) {
    const rt = await init({ backend: parseBackend(stringOpt(values, 'backend') ?? process.env.GENCLS_BACKEND) });
    try {
      let cfg;
      try {
        cfg = loadConfig(stringOpt(values, 'config'), rt.backend === 'native');
        const subset = stringOpt(values, 'subset');
        if (subset !== undefined) cfg.subset = Number(subset);
        const models = stringOpt(values, 'models');
        if (models !== undefined) cfg.models = models.split(',').map((m) => m.trim());
        cfg = checkConfig(cfg);
      } catch (e) {
        throw new CliError(`experiment: ${(e as Error).message}`);
      }
      const out = stringOpt(values, 'out') ?? 'report';
      if (boolOpt(values, 'fresh')) rmSync(join(out, 'jobs'), { recursive: true, force: true });
      const study = await runStudy(cfg, { out, dataDir: stringOpt(values, 'data'), log: (l) => stderr.write(l + '\n') });
      const command = ['npx tsx src/cli.ts experiment', ...process.argv.slice(3)].join(' ');
      const files = await writeReport(study, out, command);
      stdout.write(`wrote ${files.length} files to ${out}/ (${(study.seconds / 60).toFixed(1)} min)\n`);
      return 0;
    } finally {
      shutdown();
    }
  },
};
