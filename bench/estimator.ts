// The Bayes-rule classifier's sampling estimator, measured: accuracy of `logits` (K draws per image shared by all
// ten classes, common random numbers) against the same estimate with independent draws per class (as the
// reference code does), paired on the same test images, weights and seeds.
//   npm run bench:estimator -- [--count N] [--samples K] [--seed S] [--checkpoints A,B] [--json PATH]
import { tidy, readAll, argmax, noGrad, Rng } from '../src/index.js';
import { loadModel } from '../src/models/store.js';
import { loadFashionMnist } from '../src/data/idx.js';
import { batchTensors } from '../src/models/train.js';
import { Progress } from '../src/progress.js';
import { parseOptions, startEngines, printEngines, reportHeader, resultsPath, atomicWriteJson, runMain, round, fail, table, type Column } from './common.js';

const P = 'bench:estimator';
const HELP = `bench/estimator.ts: Bayes-rule accuracy with K draws shared across classes (ours) vs independent draws per class

  --count N          test images, from the first (default 10000)
  --samples K        importance samples per class (default 10)
  --seed S           seed of the per-batch noise seeds, as in \`evaluate --seed\` (default 1)
  --checkpoints A,B  comma-separated checkpoints (default checkpoints/dfz-compact.safetensors,checkpoints/gfz-compact.safetensors)
  --backend B        WebGPU backend: auto|native|opengl (default env GENCLS_BACKEND, else auto)
  --json PATH        where to write results (default bench/results/estimator-<date>.json; written atomically)
`;

async function main(): Promise<void> {
  const o = parseOptions(P, HELP, ['count', 'samples', 'seed', 'checkpoints'], []);
  const count = o.int('count', 1, 10_000);
  const k = o.int('samples', 1, 10);
  const seed = o.int('seed', 0, 1);
  const checkpoints = (o.str('checkpoints') ?? 'checkpoints/dfz-compact.safetensors,checkpoints/gfz-compact.safetensors').split(',').filter(Boolean);
  const engines = await startEngines(o.common.backend, false, 'the estimators are compared on one engine');
  printEngines(engines);
  const date = new Date();
  const test = loadFashionMnist({ split: 'test' });
  if (count > test.count) fail(P, `--count ${count} exceeds the ${test.count} test images`);
  const results = [];
  for (const path of checkpoints) {
    const { model, meta } = loadModel(path);
    const right = { shared: 0, independent: 0, onlyShared: 0, onlyIndependent: 0 };
    const rng = new Rng(seed);
    const bar = new Progress({ total: count, label: `${meta.model.model}: estimators`, unit: 'img' });
    for (let start = 0; start < count; start += 100) {
      const rows = Array.from({ length: Math.min(100, count - start) }, (_, i) => start + i);
      const batchSeed = rng.nextSeed();
      const preds = noGrad(() =>
        tidy(() => {
          const { x } = batchTensors(test, rows);
          return [argmax(model.logits(x, { samples: k, seed: batchSeed })), argmax(model.logits(x, { samples: k, seed: batchSeed, estimator: 'independent' }))];
        }),
      );
      const [shared, independent] = await readAll(preds);
      preds.forEach((t) => t.dispose());
      rows.forEach((r, i) => {
        const s = shared[i] === test.labels[r];
        const d = independent[i] === test.labels[r];
        right.shared += +s;
        right.independent += +d;
        right.onlyShared += +(s && !d);
        right.onlyIndependent += +(d && !s);
      });
      bar.tick(rows.length);
    }
    bar.finish();
    model.dispose();
    results.push({ checkpoint: path, model: meta.model.model, epoch: meta.epoch, images: count, samples: k, seed, accuracy_shared: right.shared / count, accuracy_independent: right.independent / count, right_only_with_shared: right.onlyShared, right_only_with_independent: right.onlyIndependent });
  }
  const cols: Column[] = [['model', 6, 'l'], ['images', 7, 'r'], ['shared draws', 13, 'r'], ['independent', 12, 'r'], ['only shared right', 18, 'r'], ['only indep. right', 18, 'r']];
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  process.stdout.write(table(cols, results.map((r) => [r.model, String(r.images), pct(r.accuracy_shared), pct(r.accuracy_independent), String(r.right_only_with_shared), String(r.right_only_with_independent)])) + '\n');
  const out = resultsPath(o.common.json, 'estimator', date);
  atomicWriteJson(out, { ...reportHeader(engines, date, 'bench/estimator.ts'), results: results.map((r) => ({ ...r, accuracy_shared: round(r.accuracy_shared), accuracy_independent: round(r.accuracy_independent) })) });
  process.stdout.write(`results: ${out}\n`);
}

runMain(import.meta.url, P, main);
