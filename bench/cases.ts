// The kernel benchmark's cases and this engine's side of it: matmul, conv2d and conv_transpose2d at the models'
// shapes, forward and both gradients, with deterministic inputs and the timing loop. Imports only the engine's
// browser-safe surface, so bench/kernels.ts (Node, against TensorFlow.js and PyTorch) and the web page's
// benchmark panel run the same cases the same way.
import { runtime, tensor, gradients, matmul, conv2d, convTranspose2d, type Tensor } from '../src/engine.js';

export type Op = 'matmul' | 'conv2d' | 'conv_transpose2d';
export type Pass = 'forward' | 'input_grad' | 'filter_grad';
export const PASSES: Pass[] = ['forward', 'input_grad', 'filter_grad'];

export interface ConvGeom {
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
export interface MatGeom {
  m: number;
  k: number;
  n: number;
}
export interface Case {
  op: Op;
  pass: Pass;
  shape: string;
  flops: number;
  conv?: ConvGeom;
  mat?: MatGeom;
}

export const BATCH = 100;
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

export function buildCases(): Case[] {
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

/** mulberry32: a deterministic stream of numbers in [0, 1) per seed, so both engines see the same inputs. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Deterministic inputs in [-1, 1). */
export function randomValues(n: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: n }, () => 2 * next() - 1);
}
export const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

export interface Timing {
  medianMs: number;
  minMs: number;
  /** Timed reps actually run (fewer than asked when the time budget ran out). */
  reps: number;
  warmup: number;
}

/** Median, minimum and count of the timed reps (at least one). */
export function summarise(times: number[]): Omit<Timing, 'warmup'> {
  const sorted = [...times].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return { medianMs: sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2, minMs: sorted[0], reps: times.length };
}

/** One prepared measurement: `run` enqueues the work and returns what to dispose after `sync`. */
export interface Runner {
  run(): unknown;
  sync(out: unknown): Promise<void>;
  disposeOut(out: unknown): void;
  dispose(): void;
}

export function checkShape(what: string, got: readonly number[], want: readonly number[]): void {
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new Error(`${what}: got shape [${got.join(',')}], expected [${want.join(',')}]`);
  }
}

/** This engine's runner for a case: inputs made once, `run` enqueues the forward pass or the recorded backward. */
export function oursRunner(c: Case): Runner {
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
    fwd = () => matmul(a, b);
  } else {
    const g = c.conv!;
    if (c.op === 'conv2d') {
      a = mk([g.n, g.cin, g.hin, g.hin], 1);
      b = mk([g.cout, g.cin, g.k, g.k], 2);
      outShape = [g.n, g.cout, g.hout, g.hout];
      fwd = () => conv2d(a, b, null, { stride: g.stride, padding: g.pad });
    } else {
      a = mk([g.n, g.cin, g.hin, g.hin], 1);
      b = mk([g.cin, g.cout, g.k, g.k], 2); // PyTorch ConvTranspose2d layout [in, out, kh, kw]
      outShape = [g.n, g.cout, g.hout, g.hout];
      fwd = () => convTranspose2d(a, b, null, { stride: g.stride, padding: g.pad, outputPadding: g.outPad });
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

/**
 * Times a runner: one untimed first run (shape check, pipeline compilation, pool fill), `warmup` more, then up to
 * `reps` timed runs within `budgetMs`; with `firstRunCounts`, a first run longer than the budget is the measurement.
 */
export async function measure(r: Runner, warmup: number, reps: number, budgetMs: number, firstRunCounts: boolean) {
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
