// The web page end to end: built with Vite (web/vite.config.ts) into a scratch directory, served by a plain static
// server on localhost, opened in Debian's headless Chromium on WebGPU over SwiftShader (playwright-core). The page
// loads the shipped checkpoints, its logits equal the CLI's `classify` on the same checkpoint and noise seed, FGS
// at eps 0.1 changes DFZ's prediction, PGD shows every iterate, drawing changes the readings, the benchmark panel
// times a case, and a screenshot is written and is not blank. The page's static data must match what
// `npm run web:assets` makes from the shipped checkpoints and test set.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve } from 'node:path';
import { promisify } from 'node:util';
import { PNG } from 'pngjs';
import { build } from 'vite';
import { chromium, type Browser, type Page } from 'playwright-core';
import { parseIdx } from '../src/data/idx-format.js';
import { findSplitFile, loadFashionMnist, resolveDataDir } from '../src/data/idx.js';
import type { PageDetectorsFile } from '../web/format.js';
import type { PageState } from '../web/main.js';

const ROOT = resolve(__dirname, '..');
const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan', '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
/** Where the screenshot goes (the README's is docs/images/web.png, copied from here). */
export const SCREENSHOT = join(ROOT, 'dist', 'web-screenshot.png');
/**
 * Logits are sums over 784 pixels and K = 10 importance samples, computed by different kernels (the page's `gpu`
 * profile on SwiftShader, the CLI's default profile on llvmpipe) in f32: they agree to a few 1e-5 relative.
 */
const LOGIT_TOLERANCE = (want: number) => 1e-3 + 1e-4 * Math.abs(want);

const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json' };

let outDir = '';
let server: Server;
let browser: Browser;
let page: Page;
let url = '';
/** The CLI's logits of test image 0, started before the page so the two runs overlap. */
let cliWant: Record<'dfz' | 'gfz', Promise<number[]>>;

/** Sets a range input as a user's drag would (Playwright's fill does not take range inputs). */
const setRange = (selector: string, value: number) =>
  page.$eval(selector, (e, v) => {
    (e as HTMLInputElement).value = String(v);
    e.dispatchEvent(new Event('input', { bubbles: true }));
  }, value);
const pageState = () => page.evaluate(() => JSON.parse(JSON.stringify(window.gencls)) as PageState);

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing; install Debian's chromium package (bash .ci/setup does)`);
  cliWant = { dfz: cliLogits('dfz', 0, 1), gfz: cliLogits('gfz', 0, 1) };
  // Awaited by the first test; a failure here must not surface first as an unhandled rejection.
  Object.values(cliWant).forEach((p) => p.catch(() => {}));
  outDir = mkdtempSync(join(tmpdir(), 'gencls-page-'));
  await build({ configFile: join(ROOT, 'web', 'vite.config.ts'), logLevel: 'silent', build: { outDir, emptyOutDir: true } });
  server = createServer((req, res) => {
    const path = normalize(join(outDir, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)));
    const file = path.endsWith('/') ? join(path, 'index.html') : path;
    if (!file.startsWith(outDir) || !existsSync(file) || !statSync(file).isFile()) return void res.writeHead(404).end('not found');
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(readFileSync(file));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(() => window.gencls?.status !== 'loading', null, { timeout: 300_000 });
}, 400_000);

afterAll(async () => {
  await browser?.close();
  server?.close();
  if (outDir) rmSync(outDir, { recursive: true, force: true });
});

function hasTestSplit(): boolean {
  try {
    findSplitFile(resolveDataDir(), 'test', 'images');
    return true;
  } catch {
    return false;
  }
}

async function cliLogits(model: string, index: number, seed: number): Promise<number[]> {
  const args = ['tsx', 'src/cli.ts', 'classify', `checkpoints/${model}-compact.safetensors`, '--images', 'web/public/data/test-images.idx3-ubyte', '--index', String(index), '--seed', String(seed), '--json'];
  const { stdout } = await promisify(execFile)('npx', args, { cwd: ROOT, maxBuffer: 1 << 24 });
  return JSON.parse(stdout).images[0].logits;
}

describe('the web page in headless Chromium', () => {
  it('loads the shipped models on navigator.gpu and gives test image 0 the logits the CLI gives', async () => {
    const s = await pageState();
    expect(s.error).toBeUndefined();
    expect(s.status).toBe('ready');
    expect(s.adapter).toMatch(/swiftshader/i);
    expect(await page.textContent('#adapter')).toContain(s.adapter!);
    for (const model of ['dfz', 'gfz'] as const) {
      const want = await cliWant[model];
      const got = s.clean[model]!.logits;
      expect(got).toHaveLength(10);
      got.forEach((g, c) => {
        if (!(Math.abs(g - want[c]) <= LOGIT_TOLERANCE(want[c]))) expect.fail(`${model} logit ${c}: page ${g}, CLI ${want[c]}`);
      });
      // The bars show p(y|x), the readings' softmax, and the detector table its three statistics.
      const shown = await page.$$eval(`#clean .model[data-model="${model}"] .bar .p`, (els) => els.map((e) => Number(e.textContent)));
      shown.forEach((p, c) => expect(p).toBeCloseTo(s.clean[model]!.probabilities[c], 3));
      expect(await page.$$eval(`#clean .model[data-model="${model}"] .detectors tbody tr`, (r) => r.length)).toBe(3);
    }
  }, 120_000);

  it('FGS at eps 0.1 changes DFZ\'s prediction, and shows the image, the perturbation and its scale in a screenshot that is not blank', async () => {
    const before = (await pageState()).clean.dfz!.predicted;
    await page.selectOption('#attack-model', 'dfz');
    await page.selectOption('#attack-kind', 'fgs');
    await setRange('#eps', 0.1);
    await page.click('#run');
    await page.waitForFunction(() => window.gencls?.attack?.done || window.gencls?.attack?.error, null, { timeout: 120_000 });
    const s = await pageState();
    expect(s.attack!.error).toBeUndefined();
    expect(s.attack!.linf).toBeCloseTo(0.1, 5);
    expect(s.adversarial!.dfz!.predicted).not.toBe(before);
    expect(await page.getAttribute('#attack-summary', 'data-flipped')).toBe('true');
    expect(await page.textContent('#perturbation-scale')).toContain('±0.100');
    // The screenshot (the README's) shows this attack, and is not blank.
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    const png = PNG.sync.read(readFileSync(SCREENSHOT));
    expect(png.width).toBeGreaterThanOrEqual(1000);
    const colours = new Set<number>();
    let sum = 0;
    let sum2 = 0;
    const n = png.width * png.height;
    for (let i = 0; i < n; i++) {
      const [r, g, b] = [png.data[4 * i], png.data[4 * i + 1], png.data[4 * i + 2]];
      colours.add((r << 16) | (g << 8) | b);
      const y = 0.299 * r + 0.587 * g + 0.114 * b;
      sum += y;
      sum2 += y * y;
    }
    const std = Math.sqrt(sum2 / n - (sum / n) ** 2);
    expect(colours.size).toBeGreaterThan(100);
    expect(std).toBeGreaterThan(10);
  }, 180_000);

  it('PGD shows every iterate, within the eps-ball', async () => {
    await page.selectOption('#attack-kind', 'pgd');
    await setRange('#eps', 0.05);
    await page.fill('#iterations', '2');
    await page.evaluate(() => ((window as unknown as { iterates: number[] }).iterates = []));
    // Record each iterate the page shows as it runs.
    await page.evaluate(() => {
      const w = window as unknown as { iterates: number[] };
      new MutationObserver(() => w.iterates.push(window.gencls!.attack!.iteration)).observe(document.getElementById('attack-progress')!, { childList: true, characterData: true, subtree: true });
    });
    await page.click('#run');
    await page.waitForFunction(() => window.gencls?.attack?.kind === 'pgd' && (window.gencls.attack.done || window.gencls.attack.error), null, { timeout: 240_000 });
    const s = await pageState();
    expect(s.attack!.error).toBeUndefined();
    expect(s.attack!.iteration).toBe(1);
    expect(await page.evaluate(() => (window as unknown as { iterates: number[] }).iterates)).toEqual([0, 1]);
    expect(s.attack!.linf!).toBeLessThanOrEqual(0.05 + 1e-6);
  }, 300_000);

  it('drawing on the image changes it and the models read the new image', async () => {
    const before = (await pageState()).clean.gfz!.logits;
    await page.click('#clear');
    await page.waitForFunction(() => window.gencls?.edited && !window.gencls.adversarial, null, { timeout: 10_000 });
    const box = (await page.locator('#image').boundingBox())!;
    await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.2);
    await page.mouse.down();
    for (let t = 0; t <= 1; t += 0.1) await page.mouse.move(box.x + box.width * (0.3 + 0.4 * t), box.y + box.height * (0.2 + 0.6 * t));
    await page.mouse.up();
    await page.waitForFunction((old) => window.gencls!.clean.gfz && window.gencls!.clean.gfz.logits[0] !== old[0], before, { timeout: 120_000 });
    expect(await page.textContent('#label')).toContain('edited');
    // The canvas shows the stroke: its pixels are no longer all black.
    const lit = await page.evaluate(() => {
      const c = document.getElementById('image') as HTMLCanvasElement;
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++;
      return n;
    });
    expect(lit).toBeGreaterThan(200);
    await page.click('#reset');
    await page.waitForFunction(() => window.gencls && !window.gencls.edited, null, { timeout: 10_000 });
  }, 180_000);

  it('the benchmark panel times a bench:kernels case on the adapter and shows GFLOP/s', async () => {
    await page.fill('#bench-only', 'matmul forward [100,256]');
    await page.fill('#bench-reps', '2');
    await page.click('#bench-run');
    await page.waitForFunction(() => window.gencls!.bench.length === 1 && !window.gencls!.benchRunning, null, { timeout: 120_000 });
    const [row] = (await pageState()).bench;
    expect(row.error).toBeUndefined();
    expect(row.shape).toBe('[100,256]x[256,128]');
    expect(row.gflops!).toBeGreaterThan(0);
    expect(row.flops).toBe(2 * 100 * 256 * 128);
    expect(await page.textContent('#bench-adapter')).toMatch(/swiftshader/i);
    expect(await page.$$eval('#bench-table tbody tr', (r) => r.length)).toBe(1);
  }, 180_000);

});

describe("the page's static data", () => {
  const dir = join(ROOT, 'web', 'public', 'data');
  it('was fitted on the shipped checkpoints (npm run web:assets after retraining)', () => {
    const file = JSON.parse(readFileSync(join(dir, 'detectors.json'), 'utf8')) as PageDetectorsFile;
    expect(file.format).toBe('gencls-page-detectors-v1');
    for (const m of ['dfz', 'gfz'] as const) {
      const entry = file.models[m]!;
      const sha = createHash('sha256').update(readFileSync(join(ROOT, entry.checkpoint))).digest('hex');
      expect(sha, `${entry.checkpoint} changed since web/public/data/detectors.json was written: run npm run web:assets`).toBe(entry.sha256);
      expect(entry.detectors.logit).toHaveLength(10);
    }
  });

  // Where Fashion-MNIST is at hand (CI keeps a copy in ../shared): the shipped images are its test split's first.
  it.runIf(hasTestSplit())('holds the first test images and labels of the test split', () => {
    const images = parseIdx(readFileSync(join(dir, 'test-images.idx3-ubyte')), 'images', 'test-images');
    const labels = parseIdx(readFileSync(join(dir, 'test-labels.idx1-ubyte')), 'labels', 'test-labels');
    const n = images.dims[0];
    expect(labels.dims[0]).toBe(n);
    const test = loadFashionMnist({ dir: resolveDataDir(), split: 'test', limit: n });
    expect(Array.from(labels.data)).toEqual(Array.from(test.labels));
    for (let i = 0; i < n * 784; i++) if (images.data[i] !== Math.round(test.images[i] * 255)) expect.fail(`pixel ${i} differs from the test split`);
  });
});
