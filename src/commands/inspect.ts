// `inspect`: what a checkpoint holds (model, sizes, tensors, parameter count) and the run that made it, read on
// the host from the safetensors file, so it works on a machine with no adapter at all and never waits for one.
import { readSafetensors } from '../models/checkpoint.js';
import { readMeta, type CheckpointMeta, type EpochRecord } from '../models/store.js';
import { MODEL_STRUCTURE, type ModelName } from '../models/factorisations.js';
import { CliError, boolOpt, type Command } from './command.js';

export interface TensorInfo {
  name: string;
  shape: number[];
  parameters: number;
}

export interface CheckpointSummary {
  checkpoint: string;
  model: string;
  factorisation: string;
  preset: string;
  config: CheckpointMeta['model'];
  tensorCount: number;
  parameters: number;
  tensors: TensorInfo[];
  train: CheckpointMeta['train'];
  epochsDone: number;
  /** The last epoch's record and the best scored test accuracy; null before the first epoch ends. */
  lastEpoch: EpochRecord | null;
  bestTestAccuracy: { epoch: number; testAccuracy: number; testSubset: number } | null;
  trainingSeconds: number;
  adapter: string;
  savedAt: string;
  /** Every epoch's record; only with --history. */
  history?: EpochRecord[];
}

/** Reads a checkpoint's header and metadata; a missing, corrupt or foreign file throws an error naming it. */
export function summarizeCheckpoint(path: string, withHistory = false): CheckpointSummary {
  const meta = readMeta(path);
  const { tensors } = readSafetensors(path);
  const list = Object.entries(tensors).map(([name, t]) => ({ name, shape: [...t.shape], parameters: t.data.length }));
  const history = meta.history ?? [];
  const best = history.reduce<EpochRecord | null>((b, r) => (b === null || r.testAccuracy > b.testAccuracy ? r : b), null);
  return {
    checkpoint: path,
    model: meta.model.model,
    factorisation: MODEL_STRUCTURE[meta.model.model as ModelName]?.factorisation ?? '?',
    preset: meta.model.preset,
    config: meta.model,
    tensorCount: list.length,
    parameters: list.reduce((n, t) => n + t.parameters, 0),
    tensors: list,
    train: meta.train,
    epochsDone: meta.epoch,
    lastEpoch: history.at(-1) ?? null,
    bestTestAccuracy: best && { epoch: best.epoch, testAccuracy: best.testAccuracy, testSubset: best.testSubset },
    trainingSeconds: history.reduce((s, r) => s + r.seconds, 0),
    adapter: meta.adapter,
    savedAt: meta.savedAt,
    ...(withHistory ? { history } : {}),
  };
}

const int = (n: number) => n.toLocaleString('en-US');
const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

function table(rows: string[][], rightAligned: Set<number>): string[] {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => '  ' + r.map((cell, c) => (rightAligned.has(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('  ').trimEnd());
}

export function formatSummary(s: CheckpointSummary): string {
  const { config: m, train: t } = s;
  const fields: [string, string][] = [
    ['model', `${s.model.toUpperCase()}: ${s.factorisation}`],
    ['preset', `${s.preset} (channels ${m.channels}, hidden ${m.hidden}, latent ${m.latent}; ${m.likelihood} likelihood, dropout ${m.dropout}, init seed ${m.seed})`],
    ['parameters', `${int(s.parameters)} in ${s.tensorCount} tensors`],
    ['training', `${t.epochs} epochs, batch ${t.batchSize}, Adam lr ${t.lr}, seed ${t.seed}, first ${int(t.trainLimit)} training images${t.klWarmup ? `, KL warm-up over ${int(t.klWarmup)} steps` : ''}; each epoch scored on the first ${int(t.evalSubset)} test images, K=${t.evalSamples}`],
    ['epochs done', `${s.epochsDone} of ${t.epochs}${s.trainingSeconds > 0 ? ` (${(s.trainingSeconds / 60).toFixed(1)} min of training)` : ''}`],
  ];
  const e = s.lastEpoch;
  if (e) {
    fields.push(['last epoch', `${e.epoch}: train -ELBO ${e.trainNegElbo.toFixed(2)}, test -ELBO ${e.testNegElbo.toFixed(2)}, test accuracy ${pct(e.testAccuracy)} (first ${int(e.testSubset)})`]);
  }
  const b = s.bestTestAccuracy;
  if (b) fields.push(['best epoch', `${b.epoch}: test accuracy ${pct(b.testAccuracy)} (first ${int(b.testSubset)})`]);
  fields.push(['adapter', s.adapter], ['saved', s.savedAt]);
  const w = Math.max(...fields.map(([k]) => k.length));
  const lines = [s.checkpoint, ...fields.map(([k, v]) => `  ${(k + ':').padEnd(w + 1)} ${v}`), '', 'tensors:'];
  lines.push(...table([['name', 'shape', 'parameters'], ...s.tensors.map((x) => [x.name, `[${x.shape.join(', ')}]`, int(x.parameters)]), ['total', '', int(s.parameters)]], new Set([2])));
  if (s.history) {
    lines.push('', 'history:');
    const rows = s.history.map((r) => [String(r.epoch), r.trainNegElbo.toFixed(2), r.testNegElbo.toFixed(2), pct(r.testAccuracy), int(r.testSubset), r.seconds.toFixed(0)]);
    lines.push(...table([['epoch', 'train -ELBO', 'test -ELBO', 'test acc.', 'test images', 'seconds'], ...rows], new Set([0, 1, 2, 3, 4, 5])));
  }
  return lines.join('\n') + '\n';
}

export const command: Command = {
  name: 'inspect',
  summary: "print a checkpoint's model, tensors, parameter count and training run (no GPU needed)",
  description: 'Reads the file alone, without a GPU: tensor names and shapes from the safetensors header, and the run\n' +
    'metadata that train writes beside them (model and training config, per-epoch history, adapter).',
  positionals: '<checkpoint.safetensors>',
  options: {
    history: { type: 'boolean', description: "also list every epoch's train/test -ELBO, test accuracy and time" },
    json: { type: 'boolean', description: 'print one JSON object' },
  },
  async run({ values, positionals, stdout }) {
    if (positionals.length !== 1) throw new CliError(`inspect: expected exactly one checkpoint path, got ${positionals.length}`);
    const summary = summarizeCheckpoint(positionals[0], boolOpt(values, 'history'));
    stdout.write(boolOpt(values, 'json') ? JSON.stringify(summary, null, 2) + '\n' : formatSummary(summary));
    return 0;
  },
};
