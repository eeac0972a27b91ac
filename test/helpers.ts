// Shared test machinery: GPU set-up, upload of float64 references, tolerance checks, fast-check arbitraries,
// and `checkVjp`, the random-projection gradient check (after HIPS autograd's check_vjp).
import { beforeAll, afterAll, expect } from 'vitest';
import fc from 'fast-check';
import { existsSync } from 'node:fs';
import { init, shutdown, tensor, Tensor, tidy, readAll, gradients, type Runtime } from './lib.js';
import { type Ref } from '../src/reference/tensor.js';

/** Where Debian's chromium package puts SwiftShader's Vulkan driver (its ICD file), which .ci/setup installs. */
export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

/** Whether this run is the `swiftshader` project (vitest.config.ts): slow, so the heaviest properties run fewer cases there. */
export const SWIFTSHADER = process.env.GENCLS_TEST_ADAPTER === 'swiftshader';

/**
 * The adapter the tests run on: the default one (Dawn's OpenGL backend on llvmpipe on machines without a GPU), or
 * with GENCLS_TEST_ADAPTER=swiftshader (the `swiftshader` project in vitest.config.ts) Dawn's Vulkan backend on
 * SwiftShader: the core feature level, with timestamp queries and subgroups, on any machine.
 */
async function testRuntime(): Promise<Runtime> {
  if (!SWIFTSHADER) return init();
  if (!existsSync(SWIFTSHADER_ICD)) throw new Error(`GENCLS_TEST_ADAPTER=swiftshader: ${SWIFTSHADER_ICD} is missing; install Debian's chromium package (bash .ci/setup does)`);
  process.env.VK_DRIVER_FILES = SWIFTSHADER_ICD;
  const rt = await init({ backend: 'native' });
  if (!/swiftshader/i.test(rt.description)) throw new Error(`GENCLS_TEST_ADAPTER=swiftshader: got adapter ${rt.description}`);
  return rt;
}

/** Acquires the GPU for a test file and releases it afterwards. */
export function useGpu(): { rt: () => Runtime } {
  let rt: Runtime | null = null;
  beforeAll(async () => {
    rt = await testRuntime();
  });
  afterAll(() => shutdown());
  return { rt: () => rt! };
}

export const toGpu = (r: Ref): Tensor => tensor(r.data, r.shape);

export async function download(t: Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.data());
}

/** Asserts |got - want| <= atol + rtol * |want| elementwise, reporting the worst element. */
export function expectClose(got: ArrayLike<number>, want: Ref | ArrayLike<number>, tol: { rtol?: number; atol?: number } = {}, what = ''): void {
  const w = 'data' in want ? want.data : want;
  const { rtol = 1e-4, atol = 1e-5 } = tol;
  expect(got.length, `${what} length`).toBe(w.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < w.length; i++) {
    const excess = Math.abs(got[i] - w[i]) - (atol + rtol * Math.abs(w[i]));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(excess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    expect.fail(`${what} element ${worst}: got ${got[worst]}, want ${w[worst]} (rtol ${rtol}, atol ${atol})`);
  }
}

/** A Ref with uniform values in [lo, hi) from a fast-check-provided seed. */
export function randomRef(shape: readonly number[], seed: number, lo = -1, hi = 1): Ref {
  const n = shape.reduce((a, b) => a * b, 1);
  let s = seed >>> 0 || 1;
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    data[i] = Math.fround(lo + ((s >>> 0) / 2 ** 32) * (hi - lo)); // f32-representable, so uploads are exact
  }
  return { shape: [...shape], data };
}

/** Shapes of rank in [minRank, maxRank] with dims in [1, maxDim], biased toward 1s and odd sizes. */
export const arbShape = (minRank = 1, maxRank = 4, maxDim = 9) =>
  fc.array(fc.oneof(fc.constant(1), fc.integer({ min: 1, max: maxDim })), { minLength: minRank, maxLength: maxRank });

export const arbSeed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

/**
 * Default property-run budget: llvmpipe is slow, so properties run a modest number of cases; SwiftShader compiles
 * each kernel variant several times slower still, and there the properties check the gpu profile's code paths
 * that the llvmpipe runs already cover under both profiles, so fewer.
 */
export const RUNS = { numRuns: SWIFTSHADER ? 4 : 25 };

/** `n` property cases on the default adapter, about a third of them on SwiftShader (at least 2). */
export function runs(n: number): { numRuns: number } {
  return { numRuns: SWIFTSHADER ? Math.max(2, Math.ceil(n / 3)) : n };
}

/**
 * Random-projection gradient check. For GPU function f and its float64 reference fRef over the same inputs:
 * draw a direction v per input and a projection u of the output, then compare
 *   autodiff:  sum_i <grad_i(<u, f(x)>), v_i>
 *   finite-difference:  (<u, fRef(x + h v)> - <u, fRef(x - h v)>) / 2h
 * Each check costs two reference forward passes and one GPU backward.
 */
export async function checkVjp(
  f: (...xs: Tensor[]) => Tensor,
  fRef: (...xs: Ref[]) => Ref,
  inputs: Ref[],
  seed: number,
  opts: { h?: number; rtol?: number; atol?: number; what?: string } = {},
): Promise<void> {
  const { h = 1e-4, rtol = 2e-2, atol = 1e-3, what = 'vjp' } = opts;
  const vs = inputs.map((x, i) => randomRef(x.shape, seed + 7919 * (i + 1)));
  const outRef = fRef(...inputs);
  const u = randomRef(outRef.shape, seed + 104729);
  const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    let s = 0;
    for (let i = 0; i < a.length; i++) s += a[i] * b[i];
    return s;
  };
  const shifted = (sgn: number) =>
    fRef(...inputs.map((x, i) => ({ shape: x.shape, data: x.data.map((v, j) => v + sgn * h * vs[i].data[j]) })));
  const fd = (dot(u.data, shifted(1).data) - dot(u.data, shifted(-1).data)) / (2 * h);

  const grads = tidy(() => {
    const xs = inputs.map((x) => toGpu(x).requireGrad());
    const out = f(...xs);
    const g = gradients(out, tensor(u.data, out.shape));
    return xs.map((x) => g.get(x) ?? tensor(new Float64Array(x.data.length), x.shape));
  });
  const gData = await readAll(grads);
  grads.forEach((g) => g.dispose());
  const ad = gData.reduce((acc, g, i) => acc + dot(g, vs[i].data), 0);
  const scale = Math.abs(fd) + Math.abs(ad);
  if (!(Math.abs(ad - fd) <= atol + rtol * scale)) {
    expect.fail(`${what}: autodiff directional derivative ${ad} vs finite difference ${fd} (seed ${seed})`);
  }
}
