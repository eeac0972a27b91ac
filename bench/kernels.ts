// Kernel benchmark: GFLOP/s of matmul, conv2d and conv_transpose2d (forward, input gradient, filter gradient)
// at the model's shapes, for this engine and, in the same process on the same Dawn adapter, TensorFlow.js's
// WebGPU backend, plus TensorFlow.js's CPU backend, and with --torch PyTorch (bench/peer/torch_peer.py, its own
// process, CUDA when it has a GPU, fp32 with TF32 off) on the same cases.
//
//   npm run bench:kernels -- [--reps N] [--budget S] [--only S]... [--no-cpu] [--no-webgpu] [--torch] [--json PATH] [--list]
//
// FLOPs are nominal: 2 x multiply-adds of the dense computation, padded taps included, the same count for
// the forward pass and both gradients (they do the same multiply-adds). Times are the median over timed reps,
// each rep synchronised with the GPU (ours: runtime().sync(); tfjs-webgpu: submit + onSubmittedWorkDone).
// ratio_vs_* = ours_gflops / other_gflops (> 1: ours is faster). Nothing here asserts a speed.
import * as tfjsCore from '@tensorflow/tfjs-core';
import { runtime, shutdown } from '../src/index.js';
import {
  parseOptions, runMain, fail, startEngines, printEngines, round, atomicWriteJson, resultsPath, reportHeader,
  fmtRatio, fmtRate, tableHead, tableRow, printNotMeasured, printDone, runTorchPeer, torchDescription, type Column, type TorchHeader,
} from './common.js';
import { buildCases, measure, oursRunner, randomValues, size, checkShape, type Case, type Runner, type Op, type Pass } from './cases.js';

const P = 'bench:kernels';

// ---------------------------------------------------------------- cases (bench/cases.ts)

type Engine = 'ours' | 'tfjs_webgpu' | 'tfjs_cpu';
const ENGINES: Engine[] = ['ours', 'tfjs_webgpu', 'tfjs_cpu'];

// ---------------------------------------------------------------- options

const HELP = `Usage: npm run bench:kernels -- [options]

Options:
  --reps N        timed repetitions per engine and case, at most (default 10)
  --budget S      stop timing an engine on a case after S seconds of timed reps, keeping at least one (default 2)
  --warmup N      extra untimed runs on the GPU engines after the first, shape-checking run (default 1;
                  the CPU backend gets none beyond that first run)
  --only S        run only cases whose '<op> <pass> <shape>' contains S (case-insensitive); repeatable
  --no-cpu        skip TensorFlow.js's CPU backend (slow)
  --no-webgpu     skip TensorFlow.js's WebGPU backend
  --torch         also time PyTorch on the same cases (python3, or $PYTHON; CUDA if it sees a GPU)
  --backend B     our WebGPU backend: auto|native|opengl (default env GENCLS_BACKEND, else auto)
  --json PATH     where to write results (default bench/results/kernels-<date>.json; written atomically)
  --list          print the cases and exit
  -h, --help      show this help
`;

function options() {
  const o = parseOptions(P, HELP, ['reps', 'budget', 'warmup'], ['no-cpu', 'no-webgpu', 'torch']);
  return {
    ...o.common,
    reps: o.int('reps', 1, 10),
    budgetMs: o.num('budget', 0, 2) * 1000,
    warmup: o.int('warmup', 0, 1),
    cpu: !o.flag('no-cpu'),
    webgpu: !o.flag('no-webgpu'),
    torch: o.flag('torch'),
  };
}

// ---------------------------------------------------------------- data

// ---------------------------------------------------------------- runners

// TensorFlow.js used untyped: the runners reach into WebGPU backend internals its types do not expose.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type TF = any;

function tfjsRunner(tf: TF, engine: Engine, c: Case): Runner {
  const owned: TF[] = [];
  const mk = (shape: number[], seed: number) => {
    const t = tf.tensor(randomValues(size(shape), seed), shape, 'float32');
    owned.push(t);
    return t;
  };
  let run: () => TF;
  let outShape: number[];
  if (c.mat) {
    const { m, k, n } = c.mat;
    const a = mk([m, k], 1);
    const b = mk([k, n], 2);
    const g = mk([m, n], 3);
    if (c.pass === 'forward') [run, outShape] = [() => tf.matMul(a, b), [m, n]];
    else if (c.pass === 'input_grad') [run, outShape] = [() => tf.matMul(g, b, false, true), [m, k]];
    else [run, outShape] = [() => tf.matMul(a, g, true, false), [k, n]];
  } else {
    // NHWC activations; conv2d filters [kh, kw, in, out]; conv2dTranspose filters [kh, kw, out, in].
    const { n, cin, cout, hin, hout, k, stride, pad } = c.conv!;
    const x = mk([n, hin, hin, cin], 1);
    const dy = mk([n, hout, hout, cout], 3);
    const backpropFilter = (input: TF, grad: TF, filterShape: number[]) =>
      tf.engine().runKernel('Conv2DBackpropFilter', { x: input, dy: grad }, { strides: stride, pad, dataFormat: 'NHWC', filterShape });
    if (c.op === 'conv2d') {
      const f = mk([k, k, cin, cout], 2);
      if (c.pass === 'forward') [run, outShape] = [() => tf.conv2d(x, f, stride, pad), [n, hout, hout, cout]];
      // conv2dTranspose is exactly conv2d's input gradient (Conv2DBackpropInput).
      else if (c.pass === 'input_grad') [run, outShape] = [() => tf.conv2dTranspose(dy, f, [n, hin, hin, cin], stride, pad), [n, hin, hin, cin]];
      else [run, outShape] = [() => backpropFilter(x, dy, [k, k, cin, cout]), [k, k, cin, cout]];
    } else {
      const f = mk([k, k, cout, cin], 2);
      if (c.pass === 'forward') [run, outShape] = [() => tf.conv2dTranspose(x, f, [n, hout, hout, cout], stride, pad), [n, hout, hout, cout]];
      // The transposed conv's input gradient is a strided conv2d of the output gradient.
      else if (c.pass === 'input_grad') [run, outShape] = [() => tf.conv2d(dy, f, stride, pad), [n, hin, hin, cin]];
      // Its filter gradient is Conv2DBackpropFilter with the roles of input and gradient swapped (as tfjs's own gradient does).
      else [run, outShape] = [() => backpropFilter(dy, x, [k, k, cout, cin]), [k, k, cout, cin]];
    }
  }
  let checked = false;
  const runChecked = () => {
    const out = run();
    if (!checked) {
      checkShape(`tfjs ${c.op}`, out.shape, outShape);
      checked = true;
    }
    return out;
  };
  const backend = tf.backend();
  const sync =
    engine === 'tfjs_cpu'
      ? async () => {} // the CPU backend computes synchronously inside the op call
      : typeof backend.submitQueue === 'function' && typeof backend.endComputePassEncoder === 'function' && backend.device
        ? async () => {
            backend.ensureCommandEncoderReady();
            backend.endComputePassEncoder();
            backend.submitQueue();
            await backend.device.queue.onSubmittedWorkDone();
          }
        : async (out: unknown) => void (await (out as TF).data()); // fallback: a readback also waits for the work
  return { run: runChecked, sync, disposeOut: (out) => (out as TF).dispose(), dispose: () => owned.forEach((t) => t.dispose()) };
}

// ---------------------------------------------------------------- timing

/** Times `r`; firstRunOnly says the only timed run was the first one (CPU backend, slower than the budget). */
// ---------------------------------------------------------------- output

interface Record_ {
  op: Op;
  pass: Pass;
  shape: string;
  flops: number;
  ours_gflops: number | null;
  tfjs_webgpu_gflops: number | null;
  tfjs_cpu_gflops: number | null;
  torch_gflops: number | null;
  ratio_vs_webgpu: number | null;
  ratio_vs_cpu: number | null;
  ratio_vs_torch: number | null;
  adapter: string;
  ours_ms: number | null;
  tfjs_webgpu_ms: number | null;
  tfjs_cpu_ms: number | null;
  torch_ms: number | null;
  /** Fastest timed rep per engine (the median above is what GFLOP/s uses). */
  min_ms: Partial<Record<Engine | 'torch', number>>;
  reps: Partial<Record<Engine | 'torch', number>>;
  notes?: Partial<Record<Engine | 'torch', string>>;
}

const COLS: Column[] = [
  ['op', 16, 'l'],
  ['pass', 11, 'l'],
  ['shape', 32, 'l'],
  ['GFLOP', 7, 'r'],
  ['ours', 8, 'r'],
  ['tfjs-webgpu', 11, 'r'],
  ['tfjs-cpu', 8, 'r'],
  ['x webgpu', 8, 'r'],
  ['x cpu', 7, 'r'],
];
const TORCH_COLS: Column[] = [
  ['torch', 8, 'r'],
  ['x torch', 7, 'r'],
];

type TorchTiming = { ms: number; min_ms: number; reps: number } | { error: string };

/** PyTorch on all `cases` in one peer process; a failure of the whole peer becomes every case's error. */
function torchKernels(cases: Case[], opt: { reps: number; warmup: number; budgetMs: number }) {
  try {
    const out = runTorchPeer<{ results: TorchTiming[] }>('kernels', { reps: opt.reps, warmup: opt.warmup, budget_s: opt.budgetMs / 1000, cases });
    return { header: out as TorchHeader, results: out.results };
  } catch (e) {
    return { header: null, results: cases.map((): TorchTiming => ({ error: (e as Error).message })) };
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const opt = options();
  const all = buildCases();
  const cases = all.filter((c) => opt.selects(`${c.op} ${c.pass} ${c.shape}`));
  if (opt.list) {
    for (const c of all) process.stdout.write(`${c.op} ${c.pass} ${c.shape}  (${(c.flops / 1e9).toFixed(3)} GFLOP)\n`);
    return;
  }
  if (cases.length === 0) fail(P, `--only ${opt.only!.map((s) => `'${s}'`).join(' ')} matches no case (see --list)`);

  const engines = await startEngines(opt.backend, opt.webgpu, '--no-webgpu');
  const { adapter } = engines;
  const tf: TF = tfjsCore;
  await import('@tensorflow/tfjs-backend-cpu');
  tf.enableProdMode(); // no per-op debug checks, no "install tfjs-node" banner (also when the WebGPU backend is skipped)
  const engineOk: Record<Engine, string | null> = { ours: null, tfjs_webgpu: engines.tfjsError, tfjs_cpu: null };
  if (!opt.cpu) engineOk.tfjs_cpu = 'skipped (--no-cpu)';
  else if (!(await tf.setBackend('cpu').catch(() => false))) engineOk.tfjs_cpu = 'tfjs cpu backend failed to initialise';

  const date = new Date();
  const jsonPath = resultsPath(opt.json, 'kernels', date);
  const torch = opt.torch ? torchKernels(cases, opt) : null;
  const cols = torch ? [...COLS, ...TORCH_COLS] : COLS;
  const results: Record_[] = [];
  const report = () => ({
    ...reportHeader(engines, date, 'bench/kernels.ts'),
    tfjs_version: tf.version_core, // the CPU backend's too, so set even when the WebGPU backend is skipped
    torch: torch?.header ?? null,
    settings: { reps: opt.reps, budget_s: opt.budgetMs / 1000, warmup: opt.warmup, cpu: opt.cpu, webgpu: opt.webgpu, torch: opt.torch, only: opt.only ?? null },
    conventions: {
      flops: '2 x multiply-adds of the dense op (padded taps included); same count for forward, input_grad, filter_grad',
      time: 'median over timed reps, each synchronised with the device; gradients time the backward pass only',
      ratio: 'ours_gflops / other_gflops (> 1 means ours is faster)',
      torch: 'bench/peer/torch_peer.py in its own process after ours: same cases, NCHW, fp32 with TF32 off, cudnn.benchmark on; gradients via torch.autograd.grad on a recorded forward (backward only)',
      tfjs_gradients: 'conv2d input_grad = tf.conv2dTranspose; filter grads = Conv2DBackpropFilter kernel; convT input_grad = tf.conv2d; matmul grads = tf.matMul with transposes',
      layouts: 'ours NCHW (PyTorch layouts), tfjs NHWC',
    },
    results,
  });

  printEngines(engines);
  process.stdout.write(`tfjs-cpu:     ${engineOk.tfjs_cpu ?? `tfjs ${tf.version_core} cpu backend`}\n`);
  if (torch) process.stdout.write(`torch:        ${torch.header ? torchDescription(torch.header) : torch.results[0]}\n`);
  process.stdout.write(`${cases.length} cases, up to ${opt.reps} reps / ${opt.budgetMs / 1000}s each; GFLOP/s (higher is better)\n\n`);
  process.stdout.write(tableHead(cols) + '\n');

  const t0 = performance.now();
  for (const [ci, c] of cases.entries()) {
    const gflops: Record<Engine, number | null> = { ours: null, tfjs_webgpu: null, tfjs_cpu: null };
    const ms: Record<Engine, number | null> = { ours: null, tfjs_webgpu: null, tfjs_cpu: null };
    const reps: Partial<Record<Engine | 'torch', number>> = {};
    const minMs: Partial<Record<Engine | 'torch', number>> = {};
    const notes: Partial<Record<Engine | 'torch', string>> = {};
    for (const engine of ENGINES) {
      if (engineOk[engine]) {
        if (engine !== 'ours') notes[engine] = engineOk[engine]!;
        continue;
      }
      let runner: Runner | null = null;
      try {
        if (engine === 'ours') runner = oursRunner(c);
        else {
          await tf.setBackend(engine === 'tfjs_webgpu' ? 'webgpu' : 'cpu');
          runner = tfjsRunner(tf, engine, c);
        }
        const cpu = engine === 'tfjs_cpu';
        const t = await measure(runner, cpu ? 0 : opt.warmup, opt.reps, opt.budgetMs, cpu);
        ms[engine] = t.medianMs;
        gflops[engine] = c.flops / (t.medianMs / 1000) / 1e9;
        reps[engine] = t.reps;
        minMs[engine] = round(t.minMs, 5)!;
        if (t.firstRunOnly) notes[engine] = `one run of ${(t.medianMs / 1000).toFixed(1)} s (longer than the budget, not repeated)`;
      } catch (e) {
        notes[engine] = `error: ${(e as Error).message.split('\n')[0]}`;
        if (engine === 'ours') await runtime().sync().catch(() => {});
      } finally {
        try {
          runner?.dispose();
        } catch {
          /* a failed case may leave tensors half-made */
        }
      }
    }
    const ratio = (other: number | null) => (gflops.ours !== null && other ? gflops.ours / other : null);
    const t = torch?.results[ci];
    const torchMs = t && 'ms' in t ? t.ms : null;
    const torchGflops = torchMs ? c.flops / (torchMs / 1000) / 1e9 : null;
    if (t && 'ms' in t) {
      minMs.torch = round(t.min_ms, 5)!;
      reps.torch = t.reps;
    } else if (t) notes.torch = `error: ${t.error.split('\n')[0]}`;
    const rec: Record_ = {
      op: c.op,
      pass: c.pass,
      shape: c.shape,
      flops: c.flops,
      ours_gflops: round(gflops.ours),
      tfjs_webgpu_gflops: round(gflops.tfjs_webgpu),
      tfjs_cpu_gflops: round(gflops.tfjs_cpu),
      torch_gflops: round(torchGflops),
      ratio_vs_webgpu: round(ratio(gflops.tfjs_webgpu)),
      ratio_vs_cpu: round(ratio(gflops.tfjs_cpu)),
      ratio_vs_torch: round(ratio(torchGflops)),
      adapter,
      ours_ms: round(ms.ours, 5),
      tfjs_webgpu_ms: round(ms.tfjs_webgpu, 5),
      tfjs_cpu_ms: round(ms.tfjs_cpu, 5),
      torch_ms: round(torchMs, 5),
      min_ms: minMs,
      reps,
      ...(Object.keys(notes).length ? { notes } : {}),
    };
    results.push(rec);
    process.stdout.write(
      tableRow(cols, [
        c.op,
        c.pass,
        c.shape,
        (c.flops / 1e9).toFixed(3),
        fmtRate(gflops.ours),
        fmtRate(gflops.tfjs_webgpu),
        fmtRate(gflops.tfjs_cpu),
        fmtRatio(ratio(gflops.tfjs_webgpu)),
        fmtRatio(ratio(gflops.tfjs_cpu)),
        ...(torch ? [fmtRate(torchGflops), fmtRatio(ratio(torchGflops))] : []),
      ]) + '\n',
    );
    // Rewritten after every case so an interrupted run keeps what it measured.
    atomicWriteJson(jsonPath, report());
  }
  const problems = new Map<string, string>();
  for (const r of results)
    for (const [e, n] of Object.entries(r.notes ?? {})) if (!n.startsWith('skipped') && !n.startsWith('one run')) problems.set(`${e} ${r.op}`, n);
  printNotMeasured([...problems].map(([k, n]) => `  ${k}: ${n}`));
  printDone(results.length, t0, jsonPath);
  shutdown();
}

runMain(import.meta.url, P, main);
