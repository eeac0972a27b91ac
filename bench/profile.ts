// Per-kernel profile of one training step, one Bayes-rule classification, or one attack gradient (the input
// gradient of the cross-entropy of the Bayes-rule logits, as FGS, PGD and MIM take it) of a model: which shaders
// the time goes to. Ours only (the peer has no equivalent breakdown).
//
//   npm run bench:profile -- [--model gfz] [--preset compact] [--task train|classify|gradient] [--reps N] [--top N] [--json PATH]
//
// The step is run a few times to warm the pipelines and the buffer pool, then once more inside a runtime profile
// (src/backend/profiler.ts): every dispatch in its own compute pass, timed on the GPU by timestamp queries where
// the adapter has them, its encoding timed on the host, and the step's dispatches, submissions and readbacks
// counted. Then each recorded dispatch is replayed alone, `--reps` times, each time submitted and awaited, its
// time the mean minus that of an empty submit-and-wait: the host's view, and the only per-kernel time on adapters
// without timestamps (llvmpipe). Replays bind buffers that have since returned to the pool, so they read stale
// values: the timing of a kernel whose work does not depend on its data (all of ours but gather's index checks) is
// unaffected. "step" is the whole step run batched, as training runs it, for comparison with the sum of its parts.
import { tidy, gradients, readAll, tensor, noGrad, Adam, runtime, type Tensor } from '../src/index.js';
import { createModel, modelConfig, MODEL_NAMES, PRESETS } from '../src/models/factorisations.js';
import type { Dispatch, KernelSource } from '../src/backend/runtime.js';
import { bayesClassifier, lossGradient } from '../src/attacks/classifier.js';
import { atomicWriteJson, fail, parseOptions, printEngines, randomBatch, reportHeader, resultsPath, round, runMain, startEngines, summarise, table, fmtMs, type Column } from './common.js';

const P = 'bench:profile';
const TASKS = ['train', 'classify', 'gradient'] as const;

const HELP = `Usage: npm run bench:profile -- [options]

Options:
  --model M       ${MODEL_NAMES.join('|')} (default gfz)
  --preset P      ${Object.keys(PRESETS).join('|')} (default compact)
  --task T        train (forward, backward, Adam on a batch) | classify (K-sample Bayes-rule logits) |
                  gradient (input gradient of the classifier's cross-entropy, fixed noise) (default train)
  --batch N       images per batch (default 100)
  --samples K     importance samples per class for classify (default 10)
  --steps N       timed steps, after 3 warm-up steps (default 5)
  --reps N        timed replays of each dispatch (default 5)
  --top N         kernels listed (default 25)
  --backend B     our WebGPU backend: auto|native|opengl (default env GENCLS_BACKEND, else auto)
  --json PATH     also write the profile as JSON (atomically; default: none)
  -h, --help      show this help
`;

function options() {
  const o = parseOptions(P, HELP, ['model', 'preset', 'task', 'batch', 'samples', 'steps', 'reps', 'top'], []);
  const model = o.str('model') ?? 'gfz';
  const preset = o.str('preset') ?? 'compact';
  const task = o.str('task') ?? 'train';
  if (!(MODEL_NAMES as readonly string[]).includes(model)) fail(P, `--model must be one of ${MODEL_NAMES.join(', ')}, got '${model}'`);
  if (!(preset in PRESETS)) fail(P, `--preset must be one of ${Object.keys(PRESETS).join(', ')}, got '${preset}'`);
  if (!(TASKS as readonly string[]).includes(task)) fail(P, `--task must be one of ${TASKS.join(', ')}, got '${task}'`);
  return {
    ...o.common,
    model,
    preset,
    task: task as (typeof TASKS)[number],
    batch: o.int('batch', 1, 100),
    samples: o.int('samples', 1, 10),
    steps: o.int('steps', 1, 5),
    reps: o.int('reps', 1, 5),
    top: o.int('top', 1, 25),
  };
}

async function main(): Promise<void> {
  const opt = options();
  const engines = await startEngines(opt.backend, false);
  printEngines(engines);
  const rt = runtime();
  const model = createModel(modelConfig(opt.model, opt.preset));
  const adam = new Adam(model.params, { lr: 1e-3 });
  const classifier = bayesClassifier(model, { samples: opt.samples, noise: { kind: 'fixed', seed: 1 } });
  const { x: xs, y: ys } = randomBatch(opt.batch, 1);
  const x = tensor(xs, [opt.batch, 1, 28, 28]);
  const y = tensor(ys, [opt.batch], 'i32');
  const step = async () => {
    const out = tidy((): Tensor => {
      if (opt.task === 'classify') return noGrad(() => model.logits(x, { samples: opt.samples, seed: 1 }));
      if (opt.task === 'gradient') return lossGradient(classifier, x, y).grad;
      const loss = model.negElbo(x, y, { seed: 1, training: true });
      adam.step(gradients(loss));
      return loss;
    });
    await readAll([out]);
    out.dispose();
  };

  for (let i = 0; i < 3; i++) await step();
  const stepTimes: number[] = [];
  for (let i = 0; i < opt.steps; i++) {
    const t0 = performance.now();
    await step();
    stepTimes.push(performance.now() - t0);
  }

  const recorded: { src: KernelSource; d: Dispatch }[] = [];
  const dispatch = rt.dispatch.bind(rt);
  rt.dispatch = (src, d) => {
    recorded.push({ src, d });
    dispatch(src, d);
  };
  rt.beginProfile();
  await step();
  const prof = await rt.endProfile();
  rt.dispatch = dispatch;

  const submitAndWait = async () => {
    rt.flush();
    await rt.device.queue.onSubmittedWorkDone();
  };
  const emptyTimes: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    await submitAndWait();
    emptyTimes.push(performance.now() - t0);
  }
  const empty = summarise(emptyTimes).medianMs;

  const byKernel = new Map<string, { ms: number; dispatches: number }>();
  for (const { src, d } of recorded) {
    const t0 = performance.now();
    for (let r = 0; r < opt.reps; r++) {
      dispatch(src, d);
      await submitAndWait();
    }
    const ms = Math.max(0, (performance.now() - t0) / opt.reps - empty);
    const e = byKernel.get(src.key) ?? { ms: 0, dispatches: 0 };
    e.ms += ms;
    e.dispatches++;
    byKernel.set(src.key, e);
  }
  const total = [...byKernel.values()].reduce((a, e) => a + e.ms, 0);
  const inStep = new Map(prof.kernels.map((k) => [k.key, k]));
  // Ranked by GPU time where the adapter measures it, else by the replayed host time.
  const kernels = [...byKernel.entries()]
    .map(([key, e]) => ({ kernel: key, ms: e.ms, dispatches: e.dispatches, gpuMs: inStep.get(key)?.gpuMs ?? null, encodeMs: inStep.get(key)?.encodeMs ?? 0 }))
    .map((k) => ({ ...k, share: prof.gpuMs ? k.gpuMs! / prof.gpuMs : k.ms / total }))
    .sort((a, b) => (b.gpuMs ?? b.ms) - (a.gpuMs ?? a.ms));
  const stepMs = summarise(stepTimes).medianMs;

  const what = `${opt.model} ${opt.preset} ${opt.task}, batch ${opt.batch}${opt.task === 'train' ? '' : `, K=${opt.samples}`}`;
  const gpu = prof.gpuMs === null ? 'GPU time: no timestamp-query on this adapter (host times only)' : `GPU busy ${fmtMs(prof.gpuMs)} (timestamps, one pass per dispatch)`;
  process.stdout.write(
    `\n${what}: step ${fmtMs(stepMs)} batched (median of ${opt.steps})\n` +
      `in the step: ${prof.dispatches} dispatches, ${prof.submits} submits, ${prof.readbacks} readbacks; host encoding ${fmtMs(prof.encodeMs)}; ${gpu}\n` +
      `replayed one dispatch at a time: ${fmtMs(total)} (empty submit ${fmtMs(empty)} subtracted)\n\n`,
  );
  const cols: Column[] = [['kernel', 56, 'l'], ['GPU ms', 9, 'r'], ['replay ms', 9, 'r'], ['encode ms', 9, 'r'], ['share', 6, 'r'], ['dispatches', 10, 'r']];
  process.stdout.write(
    table(cols, kernels.slice(0, opt.top).map((k) => [k.kernel, k.gpuMs === null ? '-' : k.gpuMs.toFixed(3), k.ms.toFixed(2), k.encodeMs.toFixed(3), `${(100 * k.share).toFixed(1)}%`, String(k.dispatches)])) + '\n',
  );
  if (kernels.length > opt.top) process.stdout.write(`(+${kernels.length - opt.top} more kernels, ${fmtMs(kernels.slice(opt.top).reduce((a, k) => a + (k.gpuMs ?? k.ms), 0))})\n`);

  if (opt.json) {
    const path = resultsPath(opt.json, 'profile', new Date());
    atomicWriteJson(path, {
      ...reportHeader(engines, new Date(), 'bench/profile.ts'),
      settings: { model: opt.model, preset: opt.preset, task: opt.task, batch: opt.batch, samples: opt.samples, steps: opt.steps, reps: opt.reps },
      step_ms: round(stepMs),
      dispatches: prof.dispatches,
      submits: prof.submits,
      readbacks: prof.readbacks,
      timestamps: prof.timestamps,
      gpu_ms: prof.gpuMs === null ? null : round(prof.gpuMs, 4),
      encode_ms: round(prof.encodeMs, 4),
      replayed_ms: round(total),
      empty_submit_ms: round(empty),
      kernels: kernels.map((k) => ({ kernel: k.kernel, gpu_ms: k.gpuMs === null ? null : round(k.gpuMs, 4), ms: round(k.ms), encode_ms: round(k.encodeMs, 4), share: round(k.share, 3), dispatches: k.dispatches })),
    });
    process.stdout.write(`profile: ${path}\n`);
  }
}

runMain(import.meta.url, P, main);
