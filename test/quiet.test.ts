// Quiet start-up: the adapter probe's native messages are held back, everything else passes through unchanged.
import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { ProbeFilter } from '../src/commands/quiet.js';

const root = resolve(__dirname, '..');

/** Feeds `chunks` through a filter and returns what it wrote, and what it held back. */
function filtered(chunks: string[]): { out: string; held: string[] } {
  let out = '';
  const f = new ProbeFilter((t) => (out += t));
  chunks.forEach((c) => f.push(c));
  f.end();
  return { out, held: f.held };
}

const DAWN_BLOCK = [
  'Warning: Vulkan shaderUniform*ArrayDynamicIndexing required.',
  ' - While initializing adapter (backend=BackendType::Vulkan)',
  '    at InitializeImpl (/src/dawn/native/vulkan/PhysicalDeviceVk.cpp:257)',
  '',
  'Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 90 to 16 to fit dynamic offset allocation limit.',
  'error: XDG_RUNTIME_DIR is invalid or not set in the environment.',
].join('\n') + '\n';

describe('probe filter', () => {
  it('holds back Dawn and driver messages, passes the rest through byte for byte', () => {
    const { out, held } = filtered([DAWN_BLOCK, 'study: 3 units\n', '\rstudy [##--] 1/2\x1b[K', '\rstudy [####] 2/2\x1b[K', '\n', 'error: experiment: bad config\n']);
    expect(out).toBe('study: 3 units\n\rstudy [##--] 1/2\x1b[K\rstudy [####] 2/2\x1b[K\nerror: experiment: bad config\n');
    expect(held).toHaveLength(5);
    expect(held[0]).toMatch(/^Warning: Vulkan/);
  });

  it('recognises messages split across chunks, and keeps lines that only look alike', () => {
    const text = DAWN_BLOCK + 'Warnings are fine in prose\n - a list item outside a block\n';
    const split = Array.from({ length: Math.ceil(text.length / 7) }, (_, i) => text.slice(7 * i, 7 * i + 7));
    expect(filtered(split).out).toBe('Warnings are fine in prose\n - a list item outside a block\n');
  });

  it('prints what it held back when no adapter was found', () => {
    const { out } = filtered([DAWN_BLOCK, 'error: No WebGPU adapter found. Tried: native (core): no adapter.\n']);
    expect(out).toMatch(/^error: No WebGPU adapter found[^\n]*\n\nThe adapter probe printed:\nWarning: Vulkan shaderUniform/);
  });
});

describe('quiet start-up, end to end', () => {
  const info = (env: Record<string, string>) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'info'], { cwd: root, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });

  it('info names its adapter on stdout and prints none of the probe messages, which GENCLS_GPU_LOG=1 shows', () => {
    const quiet = info({});
    expect(quiet.status).toBe(0);
    expect(quiet.stdout).toMatch(/adapter/i);
    expect(quiet.stderr).not.toMatch(/^Warning: |XDG_RUNTIME_DIR|^ - While initializing/m);
    const loud = info({ GENCLS_GPU_LOG: '1' });
    expect(loud.status).toBe(0);
    expect(loud.stdout).toBe(quiet.stdout);
  });

  it('a missing adapter is still explained', () => {
    const r = info({ GENCLS_BACKEND: 'native', VK_DRIVER_FILES: '/nonexistent/icd.json', VK_ICD_FILENAMES: '/nonexistent/icd.json' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/No WebGPU adapter found/);
  });
});
