// The layout's layering, from the source itself: each layer (core, backend, kernels, autograd, models, attacks,
// study, commands) imports only its own and the layers below it, the op families import each other without a
// circle, and nothing the engine, the models or the attacks are built from imports a Node module except the few
// files that read and write files or acquire Dawn.
import { describe, it, expect } from 'vitest';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, dirname, normalize, relative } from 'node:path';

const ROOT = join(__dirname, '..');

function files(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((f) => {
    const p = join(dir, f);
    return statSync(join(ROOT, p)).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Relative imports (resolved to repository paths) and bare module names of a file. */
function importsOf(file: string): { local: string[]; modules: string[] } {
  const src = readFileSync(join(ROOT, file), 'utf8');
  const specs = [...src.matchAll(/^(?:import|export)\s[^'";]*?from\s+'([^']+)'/gm)].map((m) => m[1]);
  const isType = (spec: string) => new RegExp(`^import type [^;]*'${spec.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}'`, 'm').test(src);
  return {
    local: specs.filter((s) => s.startsWith('.') && !isType(s)).map((s) => normalize(join(dirname(file), s)).replace(/\.js$/, '.ts')),
    modules: specs.filter((s) => !s.startsWith('.')),
  };
}

const SRC = files('src');
const graph = new Map(SRC.map((f) => [f, importsOf(f)]));

describe('layers', () => {
  it('src/core imports nothing of the engine', () => {
    for (const f of SRC.filter((f) => f.startsWith('src/core/'))) {
      expect(graph.get(f)!.local.filter((d) => !d.startsWith('src/core/')), f).toEqual([]);
    }
  });

  it('each layer imports only its own and lower layers', () => {
    const LAYERS = ['core', 'backend', 'kernels', 'autograd', 'models', 'attacks', 'study', 'commands'];
    const layerOf = (f: string) => LAYERS.indexOf(f.split('/')[1]);
    const offenders: string[] = [];
    for (const f of SRC.filter((f) => layerOf(f) >= 0)) {
      for (const d of graph.get(f)!.local) {
        if (layerOf(d) > layerOf(f) || (layerOf(d) < 0 && d.startsWith('src/') && !['src/fsutil.ts', 'src/progress.ts'].includes(d) && layerOf(f) < LAYERS.indexOf('models'))) {
          offenders.push(`${f} -> ${d}`);
        }
      }
    }
    expect(offenders).toEqual([]);
  });

  it('the op families import each other without a circle', () => {
    const ops = SRC.filter((f) => f.startsWith('src/autograd/ops/') && !f.endsWith('index.ts'));
    const state = new Map<string, 'open' | 'done'>();
    const visit = (f: string, path: string[]): void => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') expect.fail(`import cycle: ${[...path, f].map((p) => relative('src/autograd/ops', p)).join(' -> ')}`);
      state.set(f, 'open');
      for (const d of graph.get(f)!.local.filter((d) => ops.includes(d))) visit(d, [...path, f]);
      state.set(f, 'done');
    };
    for (const f of ops) visit(f, []);
    expect(state.size).toBe(ops.length);
  });

  it('below the commands, only the file, data and Dawn modules import Node', () => {
    const allowed = new Set(['src/device.ts', 'src/index.ts', 'src/fsutil.ts', 'src/models/checkpoint.ts', 'src/models/store.ts', 'src/models/train.ts', 'src/data/idx.ts', 'src/data/fetch.ts']);
    const engine = SRC.filter((f) => /^src\/(core|backend|kernels|autograd|models|attacks|data)\//.test(f) || ['src/engine.ts', 'src/browser.ts', 'src/device-browser.ts'].includes(f));
    const offenders = engine.filter((f) => !allowed.has(f) && graph.get(f)!.modules.some((m) => m.startsWith('node:') || m === 'webgpu'));
    expect(offenders).toEqual([]);
  });
});
