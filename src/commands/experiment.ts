// `experiment`: the study's main job — models x attacks x detectors from a config, written to report/.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { init, shutdown } from '../index.js';
import { parseBackend } from '../device.js';
import { loadConfig, checkConfig } from '../study/config.js';
import { runUnits, runShare, assembleStudy, shardPlans, IncompleteStudyError } from '../study/run.js';
import { planStudy, parseShard } from '../study/plan.js';
import type { StudyConfig } from '../study/config.js';
import { writeReport } from '../study/report.js';
import { BACKEND_OPTION, CliError, boolOpt, stringOpt, type Command } from './command.js';

/** Of the configurations a merge could mean (CPU or GPU defaults), the one the finished shares recorded. */
function mergedConfig(out: string, candidates: StudyConfig[]): StudyConfig {
  const recorded = shardPlans(out);
  for (const cfg of candidates) {
    let plan;
    try {
      plan = planStudy(cfg);
    } catch (e) {
      throw new CliError(`experiment: ${(e as Error).message}`);
    }
    if (recorded.has(plan.fingerprint)) return cfg;
  }
  return candidates[0];
}

export const command: Command = {
  name: 'experiment',
  summary: 'run the study (models x attacks x detectors) and write report/ (Markdown, JSON, figures)',
  description:
    'Uses the shipped checkpoints in checkpoints/ unless the config says otherwise. Defaults: the full 10,000 test\n' +
    'images on a native GPU adapter, a subset sized for minutes on a software renderer. Finished jobs are kept in\n' +
    '<out>/jobs/, so an interrupted run picks up where it stopped; --fresh discards them.\n' +
    'Across machines: each of N processes runs `--shard I/N` (or takes its share from a Slurm job array or a\n' +
    'Kubernetes Indexed Job) into one shared --out; `--merge`, or a plain run, then assembles the report.',
  options: {
    config: { type: 'string', valueName: 'file.json', description: 'JSON overriding any field of the default configuration' },
    subset: { type: 'string', valueName: 'n', description: 'test images attacked (overrides the config)' },
    models: { type: 'string', valueName: 'a,b', description: 'comma-separated model names (overrides the config)' },
    out: { type: 'string', valueName: 'dir', description: 'report directory', defaultText: 'report' },
    data: { type: 'string', valueName: 'dir', description: 'Fashion-MNIST directory', defaultText: 'env FASHION_MNIST_DIR, else data/fashion-mnist' },
    fresh: { type: 'boolean', description: 'recompute every job instead of reusing finished ones' },
    shard: { type: 'string', valueName: 'I/N|slurm|k8s:N', description: "run only the I-th of N even shares of the work (slurm: from SLURM_ARRAY_TASK_ID/COUNT; k8s:N: from JOB_COMPLETION_INDEX of N)" },
    merge: { type: 'boolean', description: 'compute nothing: assemble the report from finished shares, or name the missing ones' },
    backend: BACKEND_OPTION,
  },
  async run({ values, stderr, stdout }) {
    const shardText = stringOpt(values, 'shard');
    const merge = boolOpt(values, 'merge');
    const fresh = boolOpt(values, 'fresh');
    if (shardText !== undefined && merge) throw new CliError('experiment: --shard and --merge exclude each other (merge once every share has run)');
    if (fresh && (shardText !== undefined || merge)) throw new CliError("experiment: --fresh would delete other shares' results; remove <out>/jobs/ by hand before the shares start");
    let shard;
    try {
      shard = shardText === undefined ? undefined : parseShard(shardText);
    } catch (e) {
      throw new CliError(`experiment: ${(e as Error).message}`);
    }
    // Merging reads files only; everything else needs the GPU (and the defaults depend on which adapter it is).
    const rt = merge ? null : await init({ backend: parseBackend(stringOpt(values, 'backend') ?? process.env.GENCLS_BACKEND) });
    if (rt) stderr.write(`adapter: ${rt.description}\n`);
    try {
      const out = stringOpt(values, 'out') ?? 'report';
      const configFor = (gpu: boolean) => {
        try {
          const cfg = loadConfig(stringOpt(values, 'config'), gpu);
          const subset = stringOpt(values, 'subset');
          if (subset !== undefined) cfg.subset = Number(subset);
          const models = stringOpt(values, 'models');
          if (models !== undefined) cfg.models = models.split(',').map((m) => m.trim());
          return checkConfig(cfg);
        } catch (e) {
          throw new CliError(`experiment: ${(e as Error).message}`);
        }
      };
      // The defaults depend on the adapter the shares ran on; a merge may run where there is none, so it takes
      // the defaults the shares recorded.
      const cfg = rt ? configFor(rt.backend === 'native') : mergedConfig(out, [configFor(false), configFor(true)]);
      const opts = { out, dataDir: stringOpt(values, 'data'), log: (l: string) => stderr.write(l + '\n') };
      if (fresh) rmSync(join(out, 'jobs'), { recursive: true, force: true });
      const started = performance.now();
      if (shard) {
        const r = await runShare(cfg, shard, opts);
        stdout.write(
          `share ${shard.index}/${shard.count}: ${r.units} units (${r.computed} computed, ${r.cached} already done); ` +
            (r.missing ? `${r.missing} units of other shares still missing\n` : `every share is done: run \`experiment --merge\` to write the report\n`),
        );
        return 0;
      }
      let plan;
      try {
        plan = planStudy(cfg);
      } catch (e) {
        throw new CliError(`experiment: ${(e as Error).message}`);
      }
      if (!merge) await runUnits(cfg, plan, plan.units, opts);
      let study;
      try {
        study = assembleStudy(cfg, plan, { ...opts, started });
      } catch (e) {
        if (e instanceof IncompleteStudyError) throw new CliError(`experiment --merge: ${e.message}`, 3);
        throw e;
      }
      // The command that reproduces the report: the study's options, without how its work was divided.
      const argv = process.argv.slice(3).filter((a) => a !== '--merge');
      const command = ['npx tsx src/cli.ts experiment', ...argv].join(' ');
      const files = await writeReport(study, out, command);
      stdout.write(`wrote ${files.length} files to ${out}/ (${(study.seconds / 60).toFixed(1)} min)\n`);
      return 0;
    } finally {
      if (rt) shutdown();
    }
  },
};
