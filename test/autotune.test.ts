// The autotuner's cache (src/kernels/autotune.ts with the Node file store of src/device.ts): round trip, atomic
// replacement, reuse without timing, a corrupt file, per-adapter keys; then one real tuning run on the device.
import { describe, it, expect, beforeEach, afterEach, afterAll, vi } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { useGpu, toGpu, download, expectClose, randomRef } from './helpers.js';
import { autotuneCachePath, fileTuneStore } from '../src/device.js';
import { setTuneStore, tune, tunedTiling, runPendingTuning, autotuneReport, memoryStore, type Tiling, type TuneJob } from '../src/kernels/autotune.js';
import { CONV_GEMM_CANDIDATES } from '../src/kernels/conv-gemm.js';
import * as K from '../src/kernels/conv.js';
import { refConv2d } from '../src/reference/conv.js';

const A: Tiling = { wgX: 16, wgY: 16, rows: 4, cols: 4, depth: 16 };
const B: Tiling = { wgX: 8, wgY: 8, rows: 2, cols: 2, depth: 8 };
const FALLBACK: Tiling = { wgX: 4, wgY: 4, rows: 1, cols: 1, depth: 4 };

/** A job whose candidate B is fastest, counting the timings it is asked for. */
function fakeJob(adapter = 'adapter one'): TuneJob & { calls: number } {
  const job = { adapter, family: 'fam', sizeClass: 'small', candidates: [A, B], calls: 0, time: async (t: Tiling) => (job.calls++, t === B ? 1 : 2) };
  return job;
}

let dir: string;
let path: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'autotune-'));
  path = join(dir, 'sub', 'autotune.json');
  setTuneStore(fileTuneStore(path));
});
afterEach(() => {
  setTuneStore(null);
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
  rmSync(dir, { recursive: true, force: true });
});

describe('autotune cache', () => {
  it('defaults to ~/.cache/gencls-webgpu/autotune.json, or GENCLS_AUTOTUNE_CACHE', () => {
    expect(autotuneCachePath({ HOME: '/h' })).toMatch(/\.cache\/gencls-webgpu\/autotune\.json$/);
    expect(autotuneCachePath({ GENCLS_AUTOTUNE_CACHE: '/x/y.json' })).toBe('/x/y.json');
  });

  it('round-trips the fastest candidate through the file, written atomically', async () => {
    expect(tunedTiling('adapter one', 'fam', 'small', FALLBACK)).toEqual(FALLBACK);
    expect(await tune(fakeJob())).toEqual(B);
    const data = JSON.parse(readFileSync(path, 'utf8'));
    expect(data.version).toBe(1);
    expect(Object.values(data.choices)).toEqual([B]);
    // Written through a temporary file renamed over the target: nothing else is left in the directory.
    expect(readdirSync(join(dir, 'sub'))).toEqual(['autotune.json']);
    setTuneStore(fileTuneStore(path));
    expect(tunedTiling('adapter one', 'fam', 'small', FALLBACK)).toEqual(B);
    expect(autotuneReport().choices).toEqual([{ family: 'fam', sizeClass: 'small', tiling: B, source: 'cache' }]);
    expect(autotuneReport().cache).toBe(path);
  });

  it('reuses a cached choice without timing', async () => {
    await tune(fakeJob());
    setTuneStore(fileTuneStore(path));
    const again = fakeJob();
    expect(await tune(again)).toEqual(B);
    expect(again.calls).toBe(0);
  });

  it('keys choices by adapter', async () => {
    await tune(fakeJob('adapter one'));
    expect(tunedTiling('adapter two', 'fam', 'small', FALLBACK)).toEqual(FALLBACK);
    const other = fakeJob('adapter two');
    other.time = async (t) => (other.calls++, t === A ? 1 : 2);
    expect(await tune(other)).toEqual(A);
    setTuneStore(fileTuneStore(path));
    expect(tunedTiling('adapter one', 'fam', 'small', FALLBACK)).toEqual(B);
    expect(tunedTiling('adapter two', 'fam', 'small', FALLBACK)).toEqual(A);
  });

  it('ignores a corrupt cache file with a warning naming it, then replaces it', async () => {
    for (const bad of ['{not json', '{"version": 1, "choices": {"k": {"wgX": -1}}}', '[]']) {
      writeFileSync(join(dir, 'bad.json'), bad);
      setTuneStore(fileTuneStore(join(dir, 'bad.json')));
      const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
      expect(tunedTiling('adapter one', 'fam', 'small', FALLBACK)).toEqual(FALLBACK);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0][0])).toContain(join(dir, 'bad.json'));
      warn.mockRestore();
      expect(await tune(fakeJob())).toEqual(B);
      expect(JSON.parse(readFileSync(join(dir, 'bad.json'), 'utf8')).version).toBe(1);
    }
  });

  it('queues tuning only when GENCLS_AUTOTUNE=1', async () => {
    const job = fakeJob();
    const make = () => ({ candidates: job.candidates, time: job.time });
    vi.stubEnv('GENCLS_AUTOTUNE', '');
    tunedTiling('adapter one', 'fam', 'small', FALLBACK, make);
    expect(await runPendingTuning()).toBe(0);
    vi.stubEnv('GENCLS_AUTOTUNE', '1');
    tunedTiling('adapter one', 'fam', 'small', FALLBACK, make);
    expect(await runPendingTuning()).toBe(1);
    expect(job.calls).toBe(2);
    expect(tunedTiling('adapter one', 'fam', 'small', FALLBACK, make)).toEqual(B);
    expect(await runPendingTuning()).toBe(0);
    expect(autotuneReport().choices[0].source).toBe('tuned');
  });
});

describe('autotune on the device', () => {
  const gpu = useGpu();
  afterAll(() => setTuneStore(null));

  it('tunes the implicit-GEMM conv, caches the choice and then uses it', async () => {
    setTuneStore(memoryStore());
    const saved = gpu.rt().kernelProfile;
    gpu.rt().kernelProfile = 'gpu';
    try {
      vi.stubEnv('GENCLS_AUTOTUNE', '1');
      const x = randomRef([1, 3, 6, 5], 1);
      const w = randomRef([4, 3, 3, 3], 2);
      const p = { stride: [1, 1] as [number, number], padding: [1, 1] as [number, number], outputSize: [6, 5] as [number, number] };
      const want = refConv2d(x, w, null, p);
      expectClose(await download(K.conv2dForward(toGpu(x), toGpu(w), null, p)), want, {}, 'default tiling');
      expect(await runPendingTuning()).toBe(1);
      const [choice] = autotuneReport().choices;
      expect(choice.family).toBe('convGemm.conv');
      expect(choice.source).toBe('tuned');
      expect(CONV_GEMM_CANDIDATES).toContainEqual(choice.tiling);
      expectClose(await download(K.conv2dForward(toGpu(x), toGpu(w), null, p)), want, {}, 'tuned tiling');
      expect(await runPendingTuning()).toBe(0);
    } finally {
      gpu.rt().kernelProfile = saved;
    }
  });
});
