// Acquires a WebGPU device from Dawn: the native backend first (Vulkan/Metal/D3D12, core feature level),
// then Dawn's OpenGL backend in compatibility mode over EGL surfaceless (Mesa's llvmpipe on CPU-only machines).
import { mkdirSync, chmodSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir, homedir } from 'node:os';
import { join } from 'node:path';
import { create, globals } from 'webgpu';
import { describeAdapter, requestFullDevice, type AcquiredDevice } from './backend/gpu.js';
import { setDefaultTuneStore, type TuneStore } from './kernels/autotune.js';
import { writeFileAtomic } from './fsutil.js';

export { LIMIT_KEYS, type AcquiredDevice } from './backend/gpu.js';

export type Backend = 'auto' | 'native' | 'opengl';

/** The autotuner's cache file: env GENCLS_AUTOTUNE_CACHE, else ~/.cache/gencls-webgpu/autotune.json. */
export function autotuneCachePath(env = process.env): string {
  return env.GENCLS_AUTOTUNE_CACHE || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'gencls-webgpu', 'autotune.json');
}

/** The autotuner's choices in a JSON file, replaced atomically so a crash mid-write never leaves half a cache. */
export function fileTuneStore(path: string): TuneStore {
  return { where: path, read: () => (existsSync(path) ? readFileSync(path, 'utf8') : null), write: (text) => writeFileAtomic(path, text) };
}

// Kernels below this adapter reach the disk only through the store installed here.
setDefaultTuneStore(() => fileTuneStore(autotuneCachePath()));

export class NoAdapterError extends Error {
  constructor(tried: string[]) {
    super(
      `No WebGPU adapter found. Tried: ${tried.join('; ')}.\n` +
        'On a machine with a GPU, install its Vulkan driver (e.g. NVIDIA driver with libvulkan1).\n' +
        'On a CPU-only Debian/Ubuntu machine install Mesa\'s software renderer:\n' +
        '  apt-get install libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri\n' +
        'and run with EGL_PLATFORM=surfaceless (set automatically when unset).',
    );
    this.name = 'NoAdapterError';
  }
}

const BACKENDS: readonly Backend[] = ['auto', 'native', 'opengl'];

export function parseBackend(value: string | undefined): Backend {
  const v = (value ?? 'auto').toLowerCase();
  if (!(BACKENDS as readonly string[]).includes(v)) {
    throw new Error(`Unknown backend '${value}': expected one of ${BACKENDS.join(', ')} (option --backend or env GENCLS_BACKEND)`);
  }
  return v as Backend;
}

let globalsInstalled = false;
function installGlobals(): void {
  if (globalsInstalled) return;
  // GPUBufferUsage, GPUMapMode, ... live on `globals`; Node does not define them.
  for (const [k, v] of Object.entries(globals as Record<string, unknown>)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  globalsInstalled = true;
}

/**
 * Dawn toggles to enable and disable, from GENCLS_DAWN_TOGGLES: comma-separated names, `-name` to disable (for
 * example `disable_robustness,skip_validation`). Dawn applies them to the instance and every device it creates.
 */
export function dawnToggleFlags(value = process.env.GENCLS_DAWN_TOGGLES): string[] {
  const names = (value ?? '').split(',').map((t) => t.trim()).filter(Boolean);
  const bad = names.find((t) => !/^-?[a-z][a-z0-9_]*$/.test(t));
  if (bad) throw new Error(`GENCLS_DAWN_TOGGLES: '${bad}' is not a Dawn toggle name (lower-case snake_case, '-' to disable)`);
  const on = names.filter((t) => !t.startsWith('-'));
  const off = names.filter((t) => t.startsWith('-')).map((t) => t.slice(1));
  return [...(on.length ? [`enable-dawn-features=${on.join(',')}`] : []), ...(off.length ? [`disable-dawn-features=${off.join(',')}`] : [])];
}

// Dawn keeps the GPU instance alive for the process; reuse it so repeated acquisitions don't leak instances.
const gpus = new Map<string, GPU>();
function gpuFor(backend: 'native' | 'opengl'): GPU {
  const flags = [...(backend === 'opengl' ? ['backend=opengl'] : []), ...dawnToggleFlags()];
  const key = flags.join(' ');
  let gpu = gpus.get(key);
  if (!gpu) {
    gpu = create(flags);
    gpus.set(key, gpu);
  }
  return gpu;
}

/**
 * Mesa's drivers complain on stderr while probed ("XDG_RUNTIME_DIR is invalid or not set") on servers, containers
 * and CI, where no login session sets it; a private directory of our own satisfies them.
 */
function ensureRuntimeDir(): void {
  if (process.env.XDG_RUNTIME_DIR) return;
  const dir = join(tmpdir(), `gencls-runtime-${process.getuid?.() ?? 'user'}`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    process.env.XDG_RUNTIME_DIR = dir;
  } catch {
    // Not ours to fix: the drivers then only print their complaint.
  }
}

export async function acquireDevice(opts: { backend?: Backend } = {}): Promise<AcquiredDevice> {
  installGlobals();
  ensureRuntimeDir();
  const backend = opts.backend ?? parseBackend(process.env.GENCLS_BACKEND);
  const tried: string[] = [];
  const order: Array<'native' | 'opengl'> = backend === 'auto' ? ['native', 'opengl'] : [backend];
  for (const b of order) {
    if (b === 'opengl' && !process.env.EGL_PLATFORM) process.env.EGL_PLATFORM = 'surfaceless';
    const featureLevel = b === 'opengl' ? 'compatibility' : 'core';
    let adapter: GPUAdapter | null = null;
    try {
      adapter = await gpuFor(b).requestAdapter({ featureLevel, powerPreference: 'high-performance' } as GPURequestAdapterOptions);
    } catch (e) {
      tried.push(`${b} (${featureLevel}): ${(e as Error).message}`);
      continue;
    }
    if (!adapter) {
      tried.push(`${b} (${featureLevel}): no adapter`);
      continue;
    }
    const device = await requestFullDevice(adapter);
    return { device, adapter, backend: b, description: describeAdapter(adapter.info, `dawn ${b}`, featureLevel), featureLevel };
  }
  throw new NoAdapterError(tried);
}
