// The engine as a library: `npm pack` builds the project and packs the built JavaScript with its declarations;
// the tarball installs into a scratch project, which trains a model for a few steps through the public imports
// alone (plain Node, no TypeScript loader) and type-checks against the shipped declarations.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(__dirname, '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

const CONSUMER = `
import { init, tensor, tidy, gradients, readAll, Adam, shutdown } from 'gencls-webgpu';
import { createModel, modelConfig } from 'gencls-webgpu/models';
import { bayesClassifier, fgs } from 'gencls-webgpu/attacks';

const rt = await init();
const model = createModel(modelConfig('gfz', 'compact', { channels: 2, hidden: 8, latent: 3, seed: 1, preset: 'custom' }));
const adam = new Adam(model.params, { lr: 1e-2 });
const n = 8;
const x = tensor(Float32Array.from({ length: n * 784 }, (_, i) => ((i * 7919) % 256) / 255), [n, 1, 28, 28]);
const y = tensor(Int32Array.from({ length: n }, (_, i) => i % 10), [n], 'i32');
const losses = [];
for (let step = 0; step < 6; step++) {
  const loss = tidy(() => {
    const l = model.negElbo(x, y, { seed: 1, training: true });
    adam.step(gradients(l));
    return l;
  });
  losses.push((await readAll([loss]))[0][0]);
  loss.dispose();
}
const clf = bayesClassifier(model, { samples: 2, noise: { kind: 'fixed', seed: 1 } });
const adv = await fgs(clf, x, y, { eps: 0.1 });
const [a] = await readAll([adv]);
process.stdout.write(JSON.stringify({ adapter: rt.description, losses, advMin: Math.min(...a), advMax: Math.max(...a) }));
shutdown();
process.exit(0);
`;

const TYPED = `
import { init, tensor, type Tensor } from 'gencls-webgpu';
import { createModel, modelConfig, type ModelConfig } from 'gencls-webgpu/models';
import { deepfool, type DeepFoolOptions } from 'gencls-webgpu/attacks';
const cfg: ModelConfig = modelConfig('dfz', 'compact');
const opts: DeepFoolOptions = { p: 2 };
export async function f(): Promise<Tensor> {
  await init();
  const t: Tensor = tensor([1, 2, 3], [3]);
  void createModel(cfg);
  void deepfool;
  void opts;
  // @ts-expect-error: the runtime's internals are not exported
  await import('gencls-webgpu/src/backend/runtime.js');
  return t;
}
`;

describe('the installed package', () => {
  let dir = '';
  let tarball = '';

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'gencls-pack-'));
    execFileSync(npm, ['pack', '--pack-destination', dir, '--silent'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    tarball = join(dir, readdirSync(dir).find((f) => f.endsWith('.tgz'))!);
    const app = join(dir, 'app');
    execFileSync('mkdir', ['-p', app]);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'scratch', version: '1.0.0', type: 'module', private: true }));
    // Dependencies come from npm's cache where `npm ci` already put them.
    execFileSync(npm, ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund', '--silent'], { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] });
  }, 600_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('packs built JavaScript and declarations only', () => {
    const list = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n').filter(Boolean);
    expect(list).toContain('package/dist/src/index.js');
    expect(list).toContain('package/dist/src/index.d.ts');
    expect(list).toContain('package/dist/src/models/index.d.ts');
    expect(list).toContain('package/dist/src/attacks/index.js');
    expect(list).toContain('package/dist/src/browser.js');
    expect(list.some((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toBe(false);
    expect(list.some((f) => f.includes('/test/') || f.includes('/bench/') || f.includes('checkpoints/'))).toBe(false);
  });

  it('trains a few steps and attacks through the public imports, in plain Node', () => {
    const app = join(dir, 'app');
    writeFileSync(join(app, 'consumer.mjs'), CONSUMER);
    const r = spawnSync(process.execPath, ['consumer.mjs'], { cwd: app, encoding: 'utf8', timeout: 300_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { adapter: string; losses: number[]; advMin: number; advMax: number };
    expect(out.losses).toHaveLength(6);
    out.losses.forEach((l) => expect(Number.isFinite(l)).toBe(true));
    // The same batch and noise every step: Adam lowers the loss.
    expect(out.losses[5]).toBeLessThan(out.losses[0]);
    expect(out.advMin).toBeGreaterThanOrEqual(0);
    expect(out.advMax).toBeLessThanOrEqual(1);
    // Internals stay behind the exports map.
    const deep = spawnSync(process.execPath, ['-e', "import('gencls-webgpu/dist/src/backend/runtime.js').then(() => process.exit(0), (e) => { console.error(e.code); process.exit(1); })"], { cwd: app, encoding: 'utf8' });
    expect(deep.stderr).toMatch(/ERR_PACKAGE_PATH_NOT_EXPORTED/);
  });

  it('type-checks a TypeScript consumer against the shipped declarations', () => {
    const app = join(dir, 'app');
    writeFileSync(join(app, 'typed.ts'), TYPED);
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true, typeRoots: [join(root, 'node_modules/@types')], types: ['node'] }, files: ['typed.ts'] }),
    );
    const r = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: app, encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
