// Per-adapter tile choices for the `gpu` profile's shared-memory kernels (matmul's staged kernel, the conv implicit
// GEMMs). A kernel asks `tunedTiling` for its family and problem-size class and gets the cached choice for this
// adapter, or its deterministic default: kernels never time anything themselves, so results never depend on
// timing. Tuning is opt-in (GENCLS_AUTOTUNE=1, or a benchmark's --autotune): kernels then queue one job per
// size class they meet, and `runPendingTuning` times each job's candidates on the device and caches the fastest.
//
// The cache is a JSON object keyed by adapter description, family and size class. This module imports nothing
// from Node: the Node device adapter (src/device.ts) installs a file store; elsewhere choices live in memory.

export interface Tiling {
  wgX: number;
  wgY: number;
  rows: number;
  cols: number;
  depth: number;
}

/** Where the choices persist: the whole cache as text (null when there is none yet). */
export interface TuneStore {
  /** Shown in warnings and reports (a file path, or 'memory'). */
  readonly where: string;
  read(): string | null;
  write(text: string): void;
}

export function memoryStore(): TuneStore {
  let text: string | null = null;
  return { where: 'memory', read: () => text, write: (t) => void (text = t) };
}

interface CacheFile {
  version: 1;
  choices: Record<string, Tiling>;
}

let defaultStore: () => TuneStore = memoryStore;
let store: TuneStore | null = null;
let cache: Map<string, Tiling> | null = null;

/** The store used when none is set explicitly (the Node device adapter installs the file store this way). */
export function setDefaultTuneStore(make: () => TuneStore): void {
  defaultStore = make;
}

/** Uses `s` from now on, dropping what was loaded from the previous store. */
export function setTuneStore(s: TuneStore | null): void {
  store = s;
  cache = null;
  used.clear();
  pending.clear();
}

export function tuneStore(): TuneStore {
  return (store ??= defaultStore());
}

const isTiling = (t: unknown): t is Tiling =>
  typeof t === 'object' && t !== null && ['wgX', 'wgY', 'rows', 'cols', 'depth'].every((k) => Number.isInteger((t as Record<string, unknown>)[k]) && (t as Record<string, number>)[k] > 0);

/**
 * The cached choices. A file that does not parse, or holds anything but tilings, is ignored with a warning (the
 * defaults are always correct, only slower) and replaced at the next save.
 */
function loaded(): Map<string, Tiling> {
  if (cache) return cache;
  cache = new Map();
  const s = tuneStore();
  const text = s.read();
  if (text === null) return cache;
  try {
    const data = JSON.parse(text) as CacheFile;
    if (data?.version !== 1 || typeof data.choices !== 'object' || data.choices === null) throw new Error('not an autotune cache (version 1)');
    for (const [k, t] of Object.entries(data.choices)) {
      if (!isTiling(t)) throw new Error(`entry '${k}' is not a tiling`);
      cache.set(k, t);
    }
  } catch (e) {
    cache.clear();
    console.warn(`autotune: ignoring the cache at ${s.where}: ${(e as Error).message}`);
  }
  return cache;
}

function save(): void {
  const choices: Record<string, Tiling> = {};
  for (const [k, t] of [...loaded()].sort(([a], [b]) => (a < b ? -1 : 1))) choices[k] = t;
  tuneStore().write(`${JSON.stringify({ version: 1, choices } satisfies CacheFile, null, 1)}\n`);
}

export const tuneKey = (adapter: string, family: string, sizeClass: string) => `${adapter} | ${family} | ${sizeClass}`;

/** Size class of one problem dimension: small ones exactly by power of two, then coarse buckets. */
export function sizeBucket(n: number): string {
  if (n <= 16) return `${2 ** Math.ceil(Math.log2(Math.max(1, n)))}`;
  if (n <= 256) return '<=256';
  if (n <= 4096) return '<=4k';
  return '>4k';
}

export interface Choice {
  family: string;
  sizeClass: string;
  tiling: Tiling;
  source: 'cache' | 'default' | 'tuned';
}

// The choices kernels have made in this process, for benchmark reports.
const used = new Map<string, Choice>();

/** A tuning job: times one candidate (ms per run), on problems of the size class it was queued for. */
export interface TuneJob {
  adapter: string;
  family: string;
  sizeClass: string;
  candidates: Tiling[];
  time: (t: Tiling) => Promise<number>;
}
const pending = new Map<string, TuneJob>();

export function autotuneEnabled(): boolean {
  return typeof process !== 'undefined' && process.env?.GENCLS_AUTOTUNE === '1';
}

/**
 * The tiling for `family` at `sizeClass` on `adapter`: the cached choice, else `fallback`. With tuning enabled and
 * no cached choice, `job` (made lazily) is queued for `runPendingTuning`.
 */
export function tunedTiling(adapter: string, family: string, sizeClass: string, fallback: Tiling, job?: () => Omit<TuneJob, 'adapter' | 'family' | 'sizeClass'>): Tiling {
  const key = tuneKey(adapter, family, sizeClass);
  const hit = loaded().get(key);
  if (!hit && job && autotuneEnabled() && !pending.has(key)) pending.set(key, { adapter, family, sizeClass, ...job() });
  const prev = used.get(key);
  if (!prev || prev.source === 'default' || hit) used.set(key, { family, sizeClass, tiling: hit ?? fallback, source: hit ? (prev?.source === 'tuned' ? 'tuned' : 'cache') : 'default' });
  return hit ?? fallback;
}

/**
 * Times the candidates of `job` (each once to compile, then measured) and caches the fastest; a cached choice is
 * returned without timing anything. A candidate that fails (e.g. exceeds the device's workgroup limits) is skipped.
 */
export async function tune(job: TuneJob): Promise<Tiling> {
  const key = tuneKey(job.adapter, job.family, job.sizeClass);
  const hit = loaded().get(key);
  if (hit) return hit;
  let best: { t: Tiling; ms: number } | null = null;
  for (const t of job.candidates) {
    let ms: number;
    try {
      ms = await job.time(t);
    } catch {
      continue;
    }
    if (Number.isFinite(ms) && (!best || ms < best.ms)) best = { t, ms };
  }
  if (!best) throw new Error(`autotune: no candidate of ${job.family} (${job.sizeClass}) ran`);
  loaded().set(key, best.t);
  used.set(key, { family: job.family, sizeClass: job.sizeClass, tiling: best.t, source: 'tuned' });
  save();
  return best.t;
}

/** Tunes every size class queued since the last call; returns how many were tuned. */
export async function runPendingTuning(): Promise<number> {
  const jobs = [...pending.values()];
  pending.clear();
  for (const j of jobs) await tune(j);
  return jobs.length;
}

/** Host time per run of `run` in ms: one warm-up (compiles), then `reps` runs between two queue drains. */
export async function hostTime(sync: () => Promise<void>, run: () => void, reps = 5): Promise<number> {
  run();
  await sync();
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) run();
  await sync();
  return (performance.now() - t0) / reps;
}

/** What benchmark reports record: the cache's location and every choice made in this process. */
export function autotuneReport(): { cache: string; enabled: boolean; choices: Choice[] } {
  return { cache: tuneStore().where, enabled: autotuneEnabled(), choices: [...used.values()] };
}
