// The `gpu` profile's implicit-GEMM convolutions (src/kernels/conv-gemm.ts) against the float64 reference, through
// the conv entry points and directly with tilings small enough that every shape spans several tiles and K slices.
// The profile is forced, so the file runs on llvmpipe (default project) as well as on SwiftShader.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fc from 'fast-check';
import { useGpu, toGpu, download, expectClose, randomRef, arbSeed, SWIFTSHADER } from './helpers.js';
import { refConv2d, refConvTranspose2d } from '../src/reference/conv.js';
import type { Ref } from '../src/reference/tensor.js';
import * as K from '../src/kernels/conv.js';
import { convGemm, convGemmFilter } from '../src/kernels/conv-gemm.js';
import type { Tiling } from '../src/kernels/autotune.js';
import type { KernelProfile } from '../src/backend/runtime.js';

const gpu = useGpu();
const TOL = { rtol: 1e-4, atol: 1e-5 };
const RUNS = { numRuns: SWIFTSHADER ? 6 : 15 };

// Tiles of 4 x 6 outputs and 8-deep slices: no test shape is a multiple of them.
const SMALL: Tiling = { wgX: 3, wgY: 2, rows: 2, cols: 2, depth: 8 };
const tilings: Array<Tiling | undefined> = [undefined, SMALL];

interface Case {
  n: number;
  cin: number;
  cout: number;
  h: number;
  w: number;
  k: [number, number];
  s: [number, number];
  p: [number, number];
  seed: number;
}

const arbPair = (min: number, max: number) => fc.tuple(fc.integer({ min, max }), fc.integer({ min, max }));
const arbCase = fc
  .record({ n: fc.integer({ min: 1, max: 2 }), cin: fc.integer({ min: 1, max: 5 }), cout: fc.integer({ min: 1, max: 11 }), h: fc.integer({ min: 1, max: 8 }), w: fc.integer({ min: 1, max: 8 }), k: arbPair(1, 3), s: arbPair(1, 2), p: arbPair(0, 1), seed: arbSeed })
  .map((c) => ({ ...c, h: Math.max(c.h, c.k[0]), w: Math.max(c.w, c.k[1]) }) as Case);

const outSize = (c: Case): [number, number] => [Math.floor((c.h + 2 * c.p[0] - c.k[0]) / c.s[0]) + 1, Math.floor((c.w + 2 * c.p[1] - c.k[1]) / c.s[1]) + 1];
const relu = (r: Ref): Ref => ({ shape: [...r.shape], data: r.data.map((v) => Math.max(v, 0)) });

/** dL/dx and dL/dw of conv2d for upstream g, by scattering along the forward's index map. */
function refGrads(x: Ref, w: Ref, g: Ref, c: Case): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const [ho, wo] = outSize(c);
  const dx = new Float64Array(x.data.length);
  const dw = new Float64Array(w.data.length);
  const db = new Float64Array(c.cout);
  for (let n = 0; n < c.n; n++)
    for (let co = 0; co < c.cout; co++)
      for (let oy = 0; oy < ho; oy++)
        for (let ox = 0; ox < wo; ox++) {
          const gv = g.data[((n * c.cout + co) * ho + oy) * wo + ox];
          db[co] += gv;
          for (let ci = 0; ci < c.cin; ci++)
            for (let ky = 0; ky < c.k[0]; ky++)
              for (let kx = 0; kx < c.k[1]; kx++) {
                const iy = oy * c.s[0] - c.p[0] + ky;
                const ix = ox * c.s[1] - c.p[1] + kx;
                if (iy < 0 || iy >= c.h || ix < 0 || ix >= c.w) continue;
                const xi = ((n * c.cin + ci) * c.h + iy) * c.w + ix;
                const wi = ((co * c.cin + ci) * c.k[0] + ky) * c.k[1] + kx;
                dx[xi] += gv * w.data[wi];
                dw[wi] += gv * x.data[xi];
              }
        }
  return { dx, dw, db };
}

function inputs(c: Case) {
  const out = outSize(c);
  return {
    out,
    x: randomRef([c.n, c.cin, c.h, c.w], c.seed),
    w: randomRef([c.cout, c.cin, ...c.k], c.seed + 1),
    b: randomRef([c.cout], c.seed + 2),
    g: randomRef([c.n, c.cout, ...out], c.seed + 3),
  };
}

describe('implicit-GEMM convolutions (gpu profile)', () => {
  let saved: KernelProfile;
  beforeAll(() => {
    saved = gpu.rt().kernelProfile;
    gpu.rt().kernelProfile = 'gpu';
  });
  afterAll(() => {
    gpu.rt().kernelProfile = saved;
  });

  it('conv2d forward with bias and relu, default and small tilings', async () => {
    await fc.assert(
      fc.asyncProperty(arbCase, async (c) => {
        const { x, w, b, out } = inputs(c);
        const want = relu(refConv2d(x, w, b, { stride: c.s, padding: c.p, outputSize: out }));
        for (const t of tilings) {
          const y = convGemm('conv', toGpu(x), toGpu(w), toGpu(b), out, c.s, c.p, 'relu', null, t);
          expect(y.shape).toEqual(want.shape);
          expectClose(await download(y), want, TOL, `conv ${JSON.stringify(c)} ${JSON.stringify(t)}`);
        }
      }),
      RUNS,
    );
  });

  it('conv2d input gradient (the transposed problem) and convTranspose2d forward', async () => {
    await fc.assert(
      fc.asyncProperty(arbCase, async (c) => {
        const { x, w, g } = inputs(c);
        const want = refGrads(x, w, g, c);
        for (const t of tilings) {
          const dx = convGemm('convT', toGpu(g), toGpu(w), null, [c.h, c.w], c.s, c.p, 'none', null, t);
          expectClose(await download(dx), want.dx, TOL, `convT ${JSON.stringify(c)} ${JSON.stringify(t)}`);
        }
        // convTranspose2d of x with weight [cin, cout, k] through the entry point (here cin plays x's channels).
        const wt = randomRef([c.cin, c.cout, ...c.k], c.seed + 4);
        const b = randomRef([c.cout], c.seed + 5);
        const p = { stride: c.s, padding: c.p, outputPadding: [0, 0] as [number, number] };
        // Large padding can leave no output pixel; the reference cannot even allocate that.
        const outH = (c.h - 1) * c.s[0] - 2 * c.p[0] + c.k[0];
        const outW = (c.w - 1) * c.s[1] - 2 * c.p[1] + c.k[1];
        if (outH >= 1 && outW >= 1) {
          const yWant = refConvTranspose2d(x, wt, b, p);
          expectClose(await download(K.convTranspose2dForward(toGpu(x), toGpu(wt), toGpu(b), p)), yWant, TOL, `convTranspose2dForward ${JSON.stringify(c)}`);
        }
      }),
      RUNS,
    );
  });

  it('filter and bias gradients, split over the batch*Ho*Wo reduction', async () => {
    await fc.assert(
      fc.asyncProperty(arbCase, async (c) => {
        const { x, w, g } = inputs(c);
        const want = refGrads(x, w, g, c);
        for (const t of tilings) {
          const r = convGemmFilter(toGpu(x), toGpu(g), c.k, c.s, c.p, true, t);
          expectClose(await download(r.dw), want.dw, TOL, `filter dw ${JSON.stringify(c)} ${JSON.stringify(t)}`);
          expectClose(await download(r.db!), want.db, TOL, `filter db ${JSON.stringify(c)} ${JSON.stringify(t)}`);
          const plain = convGemmFilter(toGpu(x), toGpu(g), c.k, c.s, c.p, false, t);
          expect(plain.db).toBeNull();
          expectClose(await download(plain.dw), want.dw, TOL, `filter dw (no bias) ${JSON.stringify(c)} ${JSON.stringify(t)}`);
        }
      }),
      RUNS,
    );
  });

  it('every conv entry point dispatches the implicit GEMM, with the gradient mask', async () => {
    const c: Case = { n: 2, cin: 3, cout: 5, h: 7, w: 6, k: [3, 3], s: [2, 1], p: [1, 1], seed: 11 };
    const { x, w, b, g, out } = inputs(c);
    const p = { stride: c.s, padding: c.p, outputSize: out };
    const want = refGrads(x, w, g, c);
    expectClose(await download(K.conv2dForward(toGpu(x), toGpu(w), toGpu(b), p)), refConv2d(x, w, b, p), TOL, 'conv2dForward');
    // relu' at y = x: zero where x <= 0.
    const dx = K.conv2dBackwardInput(toGpu(g), toGpu(w), x.shape, p, { activation: 'relu', y: toGpu(x) });
    expectClose(await download(dx), want.dx.map((v, i) => (x.data[i] > 0 ? v : 0)), TOL, 'conv2dBackwardInput masked');
    expectClose(await download(K.conv2dBackwardFilter(toGpu(x), toGpu(g), w.shape, p)), want.dw, TOL, 'conv2dBackwardFilter');
    const both = K.conv2dBackwardFilterBias(toGpu(x), toGpu(g), w.shape, p);
    expectClose(await download(both.dw), want.dw, TOL, 'conv2dBackwardFilterBias dw');
    expectClose(await download(both.db), want.db, TOL, 'conv2dBackwardFilterBias db');
    // convTranspose2d's input gradient is conv2d of g with the same weight; its filter gradient swaps x and g.
    const tp = { stride: c.s, padding: c.p, outputPadding: [0, 0] as [number, number] };
    const wt = randomRef([c.cin, c.cout, ...c.k], 12);
    const yT = refConvTranspose2d(x, wt, null, tp);
    const gT = randomRef(yT.shape, 13);
    const dxT = K.convTranspose2dBackwardInput(toGpu(gT), toGpu(wt), x.shape, tp);
    expectClose(await download(dxT), refConv2d(gT, wt, null, { stride: c.s, padding: c.p, outputSize: [c.h, c.w] }), TOL, 'convTranspose2dBackwardInput');
    const dwT = K.convTranspose2dBackwardFilter(toGpu(x), toGpu(gT), wt.shape, tp);
    const wantDwT = refGrads(gT, randomRef([c.cin, c.cout, ...c.k], 1), x, { ...c, n: c.n, cin: c.cout, cout: c.cin, h: yT.shape[2], w: yT.shape[3] }).dw;
    expectClose(await download(dwT), wantDwT, TOL, 'convTranspose2dBackwardFilter');
  });
});
