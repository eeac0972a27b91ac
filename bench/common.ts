// Shared by the benchmark scripts (bench/kernels.ts, bench/train-step.ts, bench/attacks.ts), so that each thing is
// done one way in all of them: command-line options, engine start-up (ours, then TensorFlow.js's WebGPU backend on
// the same Dawn backend), timing, deterministic inputs, result files, tables, and the ours-against-peer records of
// the model benchmarks (train-step, attacks).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import os from 'node:os';
import { writeFileAtomic } from '../src/fsutil.js';
import { quietStart } from '../src/commands/quiet.js';
import { init, runtime, parseBackend, type Backend } from '../src/index.js';
import { autotuneReport, runPendingTuning } from '../src/kernels/autotune.js';
import { loadTfjsWebgpu, type TfjsWebgpu } from './peer/tfjs-models.js';
import { mulberry32, summarise, type Timing } from './cases.js';

export { mulberry32, summarise, type Timing };

export type TfjsModule = TfjsWebgpu['tf'];
type OptionConfig = NonNullable<ParseArgsConfig['options']>[string];

// ---------------------------------------------------------------- running

export function fail(prefix: string, msg: string): never {
  process.stderr.write(`${prefix}: ${msg}${msg.endsWith('\n') ? '' : '\n'}`);
  process.exit(2);
}

/** Runs `main` when `moduleUrl` is the script node was started with, not when the module is only imported. */
export function runMain(moduleUrl: string, prefix: string, main: () => Promise<void>): void {
  if (!process.argv[1] || moduleUrl !== pathToFileURL(process.argv[1]).href) return;
  const help = process.argv.slice(2).some((a) => a === '--help' || a === '-h');
  (help ? Promise.resolve() : quietStart()).then(main).then(
    () => process.exit(0),
    (e) => {
      process.stderr.write(`${prefix}: ${(e as Error).stack ?? e}\n`);
      process.exit(1);
    },
  );
}

// ---------------------------------------------------------------- options

/** Options every benchmark takes; their help lines stay in each script's HELP. */
const COMMON_OPTIONS: Record<string, OptionConfig> = {
  only: { type: 'string', multiple: true },
  backend: { type: 'string' },
  json: { type: 'string' },
  list: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

/**
 * Parses process.argv strictly: the common options plus the benchmark's own, each `strings` option taking a value
 * and each of `flags` none. Prints `help` on -h/--help or on a parse error (exit 2), and returns typed readers that
 * fail with `prefix` on a bad value.
 */
export function parseOptions<K extends string, F extends string>(prefix: string, help: string, strings: readonly K[], flags: readonly F[]) {
  const options: Record<string, OptionConfig> = { ...COMMON_OPTIONS };
  for (const name of strings) options[name] = { type: 'string' };
  for (const name of flags) options[name] = { type: 'boolean' };
  let values: Record<string, string | boolean | Array<string | boolean> | undefined>;
  try {
    values = parseArgs({ args: process.argv.slice(2), strict: true, allowPositionals: false, options }).values;
  } catch (e) {
    fail(prefix, `${(e as Error).message}\n\n${help}`);
  }
  if (values.help) {
    process.stdout.write(help);
    process.exit(0);
  }
  const str = (name: K) => values[name] as string | undefined;
  function int(name: K, min: number): number | undefined;
  function int(name: K, min: number, dflt: number): number;
  function int(name: K, min: number, dflt?: number): number | undefined {
    const s = str(name);
    if (s === undefined) return dflt;
    const x = Number(s);
    if (!Number.isInteger(x) || x < min) fail(prefix, `--${name} expects an integer >= ${min}, got '${s}'`);
    return x;
  }
  const num = (name: K, min: number, dflt: number): number => {
    const s = str(name);
    if (s === undefined) return dflt;
    const x = Number(s);
    if (!Number.isFinite(x) || x < min) fail(prefix, `--${name} expects a number >= ${min}, got '${s}'`);
    return x;
  };
  let backend: Backend | undefined;
  try {
    backend = parseBackend((values.backend as string | undefined) ?? process.env.GENCLS_BACKEND);
  } catch (e) {
    fail(prefix, (e as Error).message);
  }
  const only = (values.only as string[] | undefined)?.map((s) => s.trim().toLowerCase()).filter(Boolean);
  return {
    str,
    int,
    num,
    flag: (name: F) => Boolean(values[name]),
    common: {
      /** --only filters, lower-cased; undefined when none was given. */
      only,
      backend,
      json: values.json as string | undefined,
      list: Boolean(values.list),
      /** Whether a case named `name` passes the --only filters (case-insensitive substrings). */
      selects: (name: string) => !only || only.some((s) => name.toLowerCase().includes(s)),
    },
  };
}

// ---------------------------------------------------------------- engines

/**
 * Both engines on one Dawn backend: ours first (it picks native or opengl), then TensorFlow.js's WebGPU backend
 * unless `withTfjs` is false (tfjsError then names `skipFlag`). A tfjs failure is kept in tfjsError, not thrown.
 */
export async function startEngines(backend: Backend | undefined, withTfjs: boolean, skipFlag = '--no-tfjs') {
  const rt = await init({ backend });
  const ourBackend = rt.backend as 'native' | 'opengl';
  let tfjs: TfjsWebgpu | null = null;
  let tfjsError: string | null = withTfjs ? null : `skipped (${skipFlag})`;
  if (withTfjs) {
    try {
      tfjs = await loadTfjsWebgpu(ourBackend);
    } catch (e) {
      tfjsError = (e as Error).message;
    }
  }
  return { rt, adapter: rt.description, ourBackend, tfjs, tfjsError };
}
type Engines = Awaited<ReturnType<typeof startEngines>>;

/**
 * Runs `fn` inside a WebGPU validation error scope on tfjs's device and throws if anything failed validation:
 * tfjs does not check, and an invalid dispatch (say a binding over maxStorageBufferBindingSize) is skipped, so
 * its time would be that of work never done.
 */
export async function checkedTfjs<T>(tfx: TfjsModule, fn: () => Promise<T>): Promise<T> {
  const device = (tfx.backend() as unknown as { device?: GPUDevice }).device;
  if (!device) return fn();
  device.pushErrorScope('validation');
  let out: T;
  try {
    out = await fn();
  } finally {
    const err = await device.popErrorScope();
    if (err) throw new Error(`tfjs WebGPU validation error: ${err.message.split('\n')[0]}`);
  }
  return out;
}

/** The adapter lines every benchmark prints first. */
export function printEngines(e: Engines): void {
  const tf = e.tfjs?.tf;
  process.stdout.write(`adapter:      ${e.adapter}\n`);
  const toggles = process.env.GENCLS_DAWN_TOGGLES ? `, Dawn toggles ${process.env.GENCLS_DAWN_TOGGLES}` : '';
  process.stdout.write(`engine:       kernel profile ${runtime().kernelProfile}, fusion ${runtime().fusion ? 'on' : 'off (GENCLS_FUSION=0)'}, compiled steps ${runtime().compiling ? 'on' : 'off (GENCLS_COMPILE=0)'}, subgroups ${runtime().subgroups ? `on (size ${runtime().subgroupSize})` : 'off'}${toggles}\n`);
  process.stdout.write(`tfjs-webgpu:  ${e.tfjsError ?? e.tfjs!.adapter} ${tf ? `(tfjs ${tf.version_core})` : ''}\n`);
  process.stdout.write(`platform:     ${platform()}\n`);
}

// ---------------------------------------------------------------- timing and inputs

/**
 * Runs `once` `warmup` times untimed, then up to `reps` timed times, stopping early (after at least one timed rep)
 * once the timed reps have used `budgetMs`. Each call of `once` must return only when its work is done.
 */
export async function timeReps(once: () => Promise<void>, warmup: number, reps: number, budgetMs: number): Promise<Timing> {
  for (let i = 0; i < warmup; i++) await once();
  // With GENCLS_AUTOTUNE=1 the warm-up queued the tile choices it found uncached: tune them, then warm up the
  // chosen kernels. (A compiled step traced during the warm-up keeps its kernels; later runs start from the cache.)
  if (await runPendingTuning()) await once();
  const times: number[] = [];
  let total = 0;
  while (times.length < reps && (times.length === 0 || total < budgetMs)) {
    const t0 = performance.now();
    await once();
    const dt = performance.now() - t0;
    times.push(dt);
    total += dt;
  }
  return { ...summarise(times), warmup };
}


/** Random images in [0, 1] and labels, deterministic per seed. */
export function randomBatch(n: number, seed: number): { x: Float32Array; y: Int32Array } {
  const next = mulberry32(seed);
  const x = Float32Array.from({ length: n * 784 }, next);
  const y = Int32Array.from({ length: n }, () => Math.floor(next() * 10));
  return { x, y };
}

// ---------------------------------------------------------------- the PyTorch peer

/** What every answer of bench/peer/torch_peer.py starts with. */
export interface TorchHeader {
  torch_version: string;
  device: string;
  cuda: string | null;
  tf32: boolean;
}

/** bench/peer/torch_peer.py, found from the repository root (also when run as dist/bench/*.js). */
function torchPeerScript(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const candidate = join(dir, 'bench', 'peer', 'torch_peer.py');
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) throw new Error('bench/peer/torch_peer.py not found above ' + fileURLToPath(import.meta.url));
  }
}

/**
 * Runs the PyTorch peer in `mode` with `input` as JSON on stdin and returns its JSON answer. The peer is a separate
 * process (python3, else $PYTHON) so the two engines never share a process; it is started only after our engine
 * finished its cases, so the two never run on the GPU at once.
 */
export function runTorchPeer<T>(mode: 'kernels' | 'train' | 'logweights', input: unknown): TorchHeader & T {
  const python = process.env.PYTHON || 'python3';
  const r = spawnSync(python, [torchPeerScript(), mode], { input: JSON.stringify(input), encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'inherit'] });
  if (r.error) throw new Error(`PyTorch peer: cannot run ${python}: ${r.error.message} (set PYTHON to an interpreter with torch)`);
  if (r.status !== 0) throw new Error(`PyTorch peer (${mode}) exited with ${r.status ?? r.signal}; its stderr is above`);
  return JSON.parse(r.stdout) as TorchHeader & T;
}

export const torchDescription = (h: TorchHeader) => `torch ${h.torch_version} on ${h.device}${h.cuda ? ` (CUDA ${h.cuda})` : ''}, fp32${h.tf32 ? ' (TF32 on)' : ', TF32 off'}`;

// ---------------------------------------------------------------- results

export const round = (x: number | null | undefined, digits = 4): number | null => (x === null || x === undefined || !Number.isFinite(x) ? null : Number(x.toPrecision(digits)));

export function atomicWriteJson(path: string, value: unknown): void {
  writeFileAtomic(path, JSON.stringify(value, null, 2) + '\n');
}

/** --json PATH, else bench/results/<name>-<date>.json. */
export function resultsPath(json: string | undefined, name: string, date: Date): string {
  const stamp = date.toISOString().replace(/\.\d+Z$/, '').replace(/:/g, '-');
  return resolve(json ?? fileURLToPath(new URL(`./results/${name}-${stamp}.json`, import.meta.url)));
}

function commandLine(defaultScript: string): string {
  return ['tsx', relative(process.cwd(), process.argv[1] ?? defaultScript), ...process.argv.slice(2)].join(' ');
}

const platform = () => `${os.platform()} ${os.arch()}, ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`;

/** The fields a results file starts with: where and how it was measured. */
export function reportHeader(e: Engines, date: Date, script: string) {
  return {
    adapter: e.adapter,
    backend: e.ourBackend,
    // The engine's settings that change what a measurement means.
    kernel_profile: runtime().kernelProfile,
    fusion: runtime().fusion,
    compiled: runtime().compiling,
    subgroups: runtime().subgroups ? runtime().subgroupSize : false,
    dawn_toggles: process.env.GENCLS_DAWN_TOGGLES ?? '',
    // The tile sizes the shared-memory kernels used (gpu profile): cached per adapter by the autotuner, or defaults.
    autotune: autotuneReport(),
    tfjs_webgpu_adapter: e.tfjs?.adapter ?? null,
    tfjs_version: e.tfjs?.tf.version_core ?? null,
    date: date.toISOString(),
    command: commandLine(script),
    node: process.version,
    platform: platform(),
  };
}

// ---------------------------------------------------------------- ours against the tfjs peer

type PeerEngine = 'ours' | 'tfjs_webgpu';
export type PerEngine<T> = { ours?: T; tfjs_webgpu?: T };
const PEER_ENGINES: PeerEngine[] = ['ours', 'tfjs_webgpu'];

/** `f` of each engine's run, for the engines that ran and where `f` gives a value. */
export function perEngine<R, T>(runs: PerEngine<R>, f: (r: R) => T | undefined): PerEngine<T> {
  const out: PerEngine<T> = {};
  for (const e of PEER_ENGINES) {
    const v = runs[e] === undefined ? undefined : f(runs[e]!);
    if (v !== undefined) out[e] = v;
  }
  return out;
}

/**
 * Runs one case on ours, then on the peer inside checkedTfjs (unless tfjs is not loaded or `peer` is a reason
 * to skip it). A failure becomes that engine's note, its stack goes to stderr, and the other engine still runs.
 */
export async function timeBoth<R extends { t: Timing }>(
  prefix: string,
  name: string,
  engines: Engines,
  ours: () => Promise<R>,
  peer: (() => Promise<R>) | { skip: string },
): Promise<{ runs: PerEngine<R>; notes: PerEngine<string> | undefined }> {
  const runs: PerEngine<R> = {};
  const notes: PerEngine<string> = {};
  for (const engine of PEER_ENGINES) {
    try {
      if (engine === 'ours') runs.ours = await ours();
      else if ('skip' in peer) notes.tfjs_webgpu = peer.skip;
      else if (!engines.tfjs) notes.tfjs_webgpu = engines.tfjsError!;
      else runs.tfjs_webgpu = await checkedTfjs(engines.tfjs.tf, peer);
    } catch (e) {
      notes[engine] = `error: ${(e as Error).message.split('\n')[0]}`;
      process.stderr.write(`${prefix}: ${engine} ${name}: ${(e as Error).stack ?? e}\n`);
    }
  }
  return { runs, notes: Object.keys(notes).length ? notes : undefined };
}

/** Median ms per engine, unrounded (null where it did not run). */
const medians = (runs: PerEngine<{ t: Timing }>) => ({ ours: runs.ours?.t.medianMs ?? null, tfjs_webgpu: runs.tfjs_webgpu?.t.medianMs ?? null });

export interface Comparison {
  ours_ms: number | null;
  tfjs_webgpu_ms: number | null;
  /** tfjs_webgpu_ms / ours_ms (> 1: ours is faster). */
  ratio: number | null;
  ours_images_per_s: number | null;
  tfjs_webgpu_images_per_s: number | null;
  ours_min_ms: number | null;
  tfjs_webgpu_min_ms: number | null;
  reps: PerEngine<number>;
}
export interface PerImage {
  ours_ms_per_image: number | null;
  tfjs_webgpu_ms_per_image: number | null;
}

/** The timing fields of a result on `images` images per run, in the order the results files list them. */
export function comparison(runs: PerEngine<{ t: Timing }>, images: number): Comparison;
export function comparison(runs: PerEngine<{ t: Timing }>, images: number, withPerImage: true): Comparison & PerImage;
export function comparison(runs: PerEngine<{ t: Timing }>, images: number, withPerImage = false): Comparison | (Comparison & PerImage) {
  const ms = medians(runs);
  const rate = (x: number | null) => (x ? round((images * 1000) / x) : null);
  const perImage = (x: number | null) => (x ? round(x / images) : null);
  return {
    ours_ms: round(ms.ours),
    tfjs_webgpu_ms: round(ms.tfjs_webgpu),
    ratio: ms.ours && ms.tfjs_webgpu ? round(ms.tfjs_webgpu / ms.ours, 3) : null,
    ours_images_per_s: rate(ms.ours),
    tfjs_webgpu_images_per_s: rate(ms.tfjs_webgpu),
    ...(withPerImage ? { ours_ms_per_image: perImage(ms.ours), tfjs_webgpu_ms_per_image: perImage(ms.tfjs_webgpu) } : {}),
    ours_min_ms: round(runs.ours?.t.minMs),
    tfjs_webgpu_min_ms: round(runs.tfjs_webgpu?.t.minMs),
    reps: perEngine(runs, (r) => r.t.reps),
  };
}

// ---------------------------------------------------------------- printing

export const fmtMs = (x: number | null) => (x === null ? '-' : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(x >= 100 ? 0 : 1)} ms`);
export const fmtRatio = (x: number | null) => (x === null ? '-' : `${x >= 10 ? x.toFixed(1) : x.toFixed(2)}x`);
export const fmtRate = (x: number | null) => (x === null ? '-' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

/** A table column: header, width, left or right aligned. */
export type Column = [header: string, width: number, align: 'l' | 'r'];

export const tableRow = (cols: Column[], cells: string[]): string => cells.map((c, i) => (cols[i][2] === 'l' ? c.padEnd(cols[i][1]) : c.padStart(cols[i][1]))).join('  ');

/** The header and rule lines; benchmarks that print rows as they go write this first. */
export const tableHead = (cols: Column[]): string => [tableRow(cols, cols.map(([h]) => h)), tableRow(cols, cols.map(([, w]) => '-'.repeat(w)))].join('\n');

export function table(cols: Column[], rows: string[][]): string {
  return [tableHead(cols), ...rows.map((r) => tableRow(cols, r))].join('\n');
}

/** The table columns of a Comparison, in the order comparisonCells fills them. */
export const COMPARISON_COLUMNS: Column[] = [
  ['ours', 9, 'r'],
  ['tfjs-webgpu', 11, 'r'],
  ['ratio', 7, 'r'],
  ['ours img/s', 10, 'r'],
  ['tfjs img/s', 10, 'r'],
];

/** The COMPARISON_COLUMNS cells of a case: times from the unrounded medians, the rest from the record. */
export function comparisonCells(runs: PerEngine<{ t: Timing }>, rec: Comparison): string[] {
  const ms = medians(runs);
  return [fmtMs(ms.ours), fmtMs(ms.tfjs_webgpu), fmtRatio(rec.ratio), fmtRate(rec.ours_images_per_s), fmtRate(rec.tfjs_webgpu_images_per_s)];
}

export function printNotMeasured(lines: string[]): void {
  if (lines.length) process.stdout.write(`\nnot measured:\n${lines.join('\n')}\n`);
}

export function printDone(cases: number, t0: number, jsonPath: string): void {
  process.stdout.write(`\n${cases} cases in ${((performance.now() - t0) / 1000).toFixed(0)} s; results: ${relative(process.cwd(), jsonPath)}\n`);
}
