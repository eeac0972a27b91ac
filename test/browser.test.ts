// The engine in a browser: src/browser.ts bundled for the browser platform (a Node module anywhere in what it
// imports fails the bundle), served from localhost, run in Debian's headless Chromium on WebGPU over SwiftShader,
// driven by playwright-core. Its outputs and gradients equal the same computation in Node.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { build } from 'esbuild';
import { chromium, type Browser } from 'playwright-core';
import { init, shutdown } from '../src/autograd/tensor.js';
import { acquireDevice } from '../src/device.js';
import { compute } from './browser/page.js';

const CHROMIUM = '/usr/bin/chromium';
// Headless Chromium with WebGPU on SwiftShader; no sandbox as root, no network beyond localhost.
const ARGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan', '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

let server: Server;
let browser: Browser;
let url = '';

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing; install Debian's chromium package (bash .ci/setup does)`);
  const bundle = await build({ entryPoints: [resolve(__dirname, 'browser/page.ts')], bundle: true, format: 'esm', platform: 'browser', target: 'es2022', write: false, logLevel: 'silent' });
  const js = bundle.outputFiles[0].text;
  server = createServer((req, res) => {
    if (req.url === '/page.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
    else res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>engine</title><script type="module" src="/page.js"></script>');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  await init({ acquire: () => acquireDevice() });
}, 300_000);

afterAll(async () => {
  await browser?.close();
  server?.close();
  shutdown();
});

describe('the engine in headless Chromium', () => {
  it('runs on navigator.gpu and computes what Node computes', async () => {
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction(() => window.engineResult !== undefined, null, { timeout: 240_000 });
    const result = await page.evaluate(() => window.engineResult!);
    if ('error' in result) throw new Error(`in the page: ${result.error}`);
    expect(result.adapter).toMatch(/swiftshader/i);
    expect(result.adapter).toContain('[browser, ');
    const node = await compute();
    expect(result.values.map((v) => v.length)).toEqual(node.map((v) => v.length));
    result.values.forEach((v, t) =>
      v.forEach((got, i) => {
        const want = node[t][i];
        if (!(Math.abs(got - want) <= 1e-4 * Math.abs(want) + 1e-5)) expect.fail(`output ${t} element ${i}: browser ${got}, Node ${want}`);
      }),
    );
    await page.close();
  }, 300_000);
});
