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
import { runtime, shutdown, tensor, gradients, Tensor } from '../src/index.js';
import {
  parseOptions, runMain, fail, startEngines, printEngines, summarise, mulberry32, round, atomicWriteJson, resultsPath, reportHeader,
  fmtRatio, fmtRate, tableHead, tableRow, printNotMeasured, printDone, runTorchPeer, torchDescription, type Column, type TorchHeader,
} from './common.js';

const P = 'bench:kernels';

// ---------------------------------------------------------------- cases

type Op = 'matmul' | 'conv2d' | 'conv_transpose2d';
type Pass = 'forward' | 'input_grad' | 'filter_grad';
type Engine = 'ours' | 'tfjs_webgpu' | 'tfjs_cpu';
const PASSES: Pass[] = ['forward', 'input_grad', 'filter_grad'];
const ENGINES: Engine[] = ['ours', 'tfjs_webgpu', 'tfjs_cpu'];

interface ConvGeom {
  n: number;
  cin: number;
  cout: number;
  /** Input and output spatial size (square). */
  hin: number;
  hout: number;
  k: number;
  stride: number;
  pad: number;
  /** conv_transpose2d only. */
  outPad: number;
}
interface MatGeom {
  m: number;
  k: number;
  n: number;
}
interface Case {
  op: Op;
  pass: Pass;
  shape: string;
  flops: number;
  conv?: ConvGeom;
  mat?: MatGeom;
}

const BATCH = 100;
// The models' layers (src/models/layers.ts) in both presets: C = 16 (compact) and C = 64 (paper).
// Conv feature stacks: 5x5 stride-2 convs, padding 2, over 28 -> 14 -> 7 -> 4.
const CONVS: Array<[cin: number, cout: number, hin: number]> = [16, 64].flatMap((c) => [
  [1, c, 28] as [number, number, number],
  [c, c, 14] as [number, number, number],
  [c, c, 7] as [number, number, number],
]);
// Image decoder: transposed convs k5 s2 p2 over 4 -> 7 -> 14 -> 28 (output_padding 0, 1, 1).
const CONV_TS: Array<[cin: number, cout: number, hin: number, outPad: number]> = [16, 64].flatMap((c) => [
  [c, c, 4, 0] as [number, number, number, number],
  [c, c, 7, 1] as [number, number, number, number],
  [c, 1, 14, 1] as [number, number, number, number],
]);
// Dense layers at batch 100 (compact: 16C = 256 -> H = 128; paper: 1024 -> 500 and 500 -> 500), and a square
// 1024^3 matmul as a reference point.
const MATS: MatGeom[] = [
  { m: BATCH, k: 256, n: 128 },
  { m: BATCH, k: 1024, n: 500 },
  { m: BATCH, k: 500, n: 500 },
  { m: 1024, k: 1024, n: 1024 },
];

function buildCases(): Case[] {
  const cases: Case[] = [];
  const K = 5,
    S = 2,
    P = 2;
  for (const [cin, cout, hin] of CONVS) {
    const hout = Math.floor((hin + 2 * P - K) / S) + 1;
    const conv: ConvGeom = { n: BATCH, cin, cout, hin, hout, k: K, stride: S, pad: P, outPad: 0 };
    const flops = 2 * BATCH * hout * hout * cout * cin * K * K;
    const shape = `N${BATCH} ${cin}->${cout} ${hin}->${hout} k${K}s${S}p${P}`;
    for (const pass of PASSES) cases.push({ op: 'conv2d', pass, shape, flops, conv });
  }
  for (const [cin, cout, hin, outPad] of CONV_TS) {
    const hout = (hin - 1) * S - 2 * P + K + outPad;
    const conv: ConvGeom = { n: BATCH, cin, cout, hin, hout, k: K, stride: S, pad: P, outPad };
    const flops = 2 * BATCH * hin * hin * cin * cout * K * K;
    const shape = `N${BATCH} ${cin}->${cout} ${hin}->${hout} k${K}s${S}p${P}op${outPad}`;
    for (const pass of PASSES) cases.push({ op: 'conv_transpose2d', pass, shape, flops, conv });
  }
  for (const mat of MATS) {
    const shape = `[${mat.m},${mat.k}]x[${mat.k},${mat.n}]`;
    for (const pass of PASSES) cases.push({ op: 'matmul', pass, shape, flops: 2 * mat.m * mat.k * mat.n, mat });
  }
  return cases;
}

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

/** Deterministic inputs in [-1, 1). */
function randomValues(n: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: n }, () => 2 * next() - 1);
}
const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

// ---------------------------------------------------------------- runners

/** One prepared measurement: `run` enqueues the work and returns what to dispose after `sync`. */
interface Runner {
  run(): unknown;
  sync(out: unknown): Promise<void>;
  disposeOut(out: unknown): void;
  dispose(): void;
}

class Unavailable extends Error {}

// Our ops are looked up at run time: matmul and conv live in modules other work may not have landed yet.
type AnyFn = (...args: any[]) => any; // eslint-disable-line @typescript-eslint/no-explicit-any
interface OurOps {
  matmul?: AnyFn;
  conv2d?: AnyFn;
  convTranspose2d?: AnyFn;
  notes: Partial<Record<Op, string>>;
}

async function tryImport(rel: string): Promise<{ mod: Record<string, unknown> | null; error?: string }> {
  try {
    return { mod: (await import(new URL(rel, import.meta.url).href)) as Record<string, unknown> };
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code === 'ERR_MODULE_NOT_FOUND' && err.message.includes(rel.replace(/^\.\.\//, '').replace(/\.js$/, ''))) return { mod: null };
    return { mod: null, error: `${rel}: ${err.message.split('\n')[0]}` };
  }
}

async function loadOurOps(): Promise<OurOps> {
  const index = (await import('../src/index.js')) as Record<string, unknown>;
  const ops: OurOps = { notes: {} };
  const pick = async (op: Op, name: 'matmul' | 'conv2d' | 'convTranspose2d', module: string) => {
    if (typeof index[name] === 'function') return void (ops[name] = index[name] as AnyFn);
    const { mod, error } = await tryImport(module);
    if (mod && typeof mod[name] === 'function') ops[name] = mod[name] as AnyFn;
    else ops.notes[op] = error ?? `'${name}' not available (not exported by src/index.ts; ${module.replace('../', '').replace(/\.js$/, '.ts')} ${mod ? 'does not export it' : 'not found'})`;
  };
  await pick('matmul', 'matmul', '../src/autograd/ops/matmul.js');
  await pick('conv2d', 'conv2d', '../src/autograd/ops/conv.js');
  await pick('conv_transpose2d', 'convTranspose2d', '../src/autograd/ops/conv.js');
  return ops;
}

function checkShape(what: string, got: readonly number[], want: readonly number[]): void {
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new Error(`${what}: got shape [${got.join(',')}], expected [${want.join(',')}]`);
  }
}

function oursRunner(c: Case, ops: OurOps): Runner {
  const fn = c.op === 'matmul' ? ops.matmul : c.op === 'conv2d' ? ops.conv2d : ops.convTranspose2d;
  if (!fn) throw new Unavailable(ops.notes[c.op] ?? `${c.op} not available`);
  const owned: Tensor[] = [];
  const mk = (shape: number[], seed: number) => {
    const t = tensor(randomValues(size(shape), seed), shape);
    owned.push(t);
    return t;
  };
  let a: Tensor, b: Tensor, outShape: number[], fwd: () => Tensor;
  if (c.mat) {
    const { m, k, n } = c.mat;
    a = mk([m, k], 1);
    b = mk([k, n], 2);
    outShape = [m, n];
    fwd = () => fn(a, b);
  } else {
    const g = c.conv!;
    if (c.op === 'conv2d') {
      a = mk([g.n, g.cin, g.hin, g.hin], 1);
      b = mk([g.cout, g.cin, g.k, g.k], 2);
      outShape = [g.n, g.cout, g.hout, g.hout];
      fwd = () => fn(a, b, null, { stride: g.stride, padding: g.pad });
    } else {
      a = mk([g.n, g.cin, g.hin, g.hin], 1);
      b = mk([g.cin, g.cout, g.k, g.k], 2); // PyTorch ConvTranspose2d layout [in, out, kh, kw]
      outShape = [g.n, g.cout, g.hout, g.hout];
      fwd = () => fn(a, b, null, { stride: g.stride, padding: g.pad, outputPadding: g.outPad });
    }
  }
  const sync = async () => runtime().sync();
  const disposeOut = (out: unknown) => {
    for (const t of out as Tensor[]) t.dispose();
  };
  const dispose = () => {
    for (const t of owned) t.dispose();
  };
  if (c.pass === 'forward') {
    let checked = false;
    const run = () => {
      const y = fwd();
      if (!checked) {
        checked = true;
        try {
          checkShape(`ours ${c.op}`, y.shape, outShape);
        } catch (e) {
          y.dispose();
          throw e;
        }
      }
      return [y];
    };
    return { run, sync, disposeOut, dispose };
  }
  // Gradients: record the forward once, then time only the backward pass (gradients() with a seed),
  // tracking just the input (input_grad) or just the weights/second operand (filter_grad).
  const wrt = c.pass === 'input_grad' ? a : b;
  wrt.requireGrad(true);
  const y = fwd();
  owned.push(y);
  checkShape(`ours ${c.op}`, y.shape, outShape);
  const seed = mk([...outShape], 3);
  const keepSet = new Set<Tensor>([...owned]);
  const run = () => {
    const grads = gradients(y, seed);
    const g = grads.get(wrt);
    if (!g) throw new Error(`ours ${c.op}: no gradient reached the ${c.pass === 'input_grad' ? 'input' : 'filter'}`);
    const out = new Set<Tensor>();
    for (const t of grads.values()) if (!keepSet.has(t)) out.add(t);
    return [...out];
  };
  return { run, sync, disposeOut, dispose };
}

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
async function measure(r: Runner, warmup: number, reps: number, budgetMs: number, firstRunCounts: boolean) {
  const once = async (): Promise<number> => {
    const t0 = performance.now();
    const out = r.run();
    await r.sync(out);
    const dt = performance.now() - t0;
    r.disposeOut(out);
    return dt;
  };
  const times: number[] = [];
  let total = 0;
  // The first run checks shapes and, on the GPU, compiles pipelines and fills buffer pools: untimed. On the
  // CPU backend there is nothing to compile, and its slowest kernels take tens of seconds a run, so a first
  // run longer than the budget is kept as the (single) measurement instead of being repeated.
  const first = await once();
  const firstRunOnly = firstRunCounts && first > budgetMs;
  if (firstRunOnly) {
    times.push(first);
    total = first;
  } else {
    for (let i = 0; i < warmup; i++) if ((await once()) > budgetMs) break; // that slow is warm enough
  }
  while (times.length < reps && (times.length === 0 || total < budgetMs)) {
    const dt = await once();
    times.push(dt);
    total += dt;
  }
  return { ...summarise(times), firstRunOnly };
}

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
  const ops = await loadOurOps();
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
  for (const [op, note] of Object.entries(ops.notes)) process.stdout.write(`ours ${op}:  ${note}\n`);
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
        if (engine === 'ours') runner = oursRunner(c, ops);
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
        notes[engine] = e instanceof Unavailable ? e.message : `error: ${(e as Error).message.split('\n')[0]}`;
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
