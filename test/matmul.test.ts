import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, toGpu, download, expectClose, randomRef, arbSeed, RUNS, runs, checkVjp } from './helpers.js';
import { matmulKernel, matmulRowSums, type MatmulTiling } from '../src/kernels/matmul.js';
import { refMatmul, refLinear, type RefActivation } from '../src/reference/matmul.js';
import { refReduce } from '../src/reference/reduce.js';

useGpu();

/**
 * float32 accumulation of K products of values in [-1, 1]: observed errors stay near 2e-8 K; the bound
 * leaves 10x headroom, plus rounding of the inputs to float32 and of the result.
 */
const tolFor = (K: number) => ({ rtol: 1e-5, atol: 2e-7 * K + 1e-6 });

interface Problem {
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
  /** Stored shapes, batch axis included when that operand is rank 3. */
  aShape: number[];
  bShape: number[];
}

/** Batch forms: both rank 2, both batched, or one side rank 2 / batch 1 broadcasting over the other. */
const arbBatchForm = fc.record({
  batch: fc.integer({ min: 1, max: 3 }),
  aRank3: fc.boolean(),
  bRank3: fc.boolean(),
  aBroadcast: fc.boolean(),
  bBroadcast: fc.boolean(),
});

const arbProblem = (arbDim: fc.Arbitrary<number>) =>
  fc.record({ M: arbDim, N: arbDim, K: arbDim, transA: fc.boolean(), transB: fc.boolean(), form: arbBatchForm }).map(({ M, N, K, transA, transB, form }): Problem => {
    // At most one side broadcasts a batch of 1 (both doing so is just batch 1).
    const aBatch = form.aBroadcast ? 1 : form.batch;
    const bBatch = form.bBroadcast && !form.aBroadcast ? 1 : form.batch;
    const a2 = transA ? [K, M] : [M, K];
    const b2 = transB ? [N, K] : [K, N];
    return { M, N, K, transA, transB, aShape: form.aRank3 ? [aBatch, ...a2] : a2, bShape: form.bRank3 ? [bBatch, ...b2] : b2 };
  });

const anyDim = fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 70 }));
/** Multiples of 4, which the direct (vec4) kernel requires. */
const alignedDim = fc.integer({ min: 1, max: 17 }).map((d) => 4 * d);
const smallDim = fc.integer({ min: 1, max: 6 });

const describeProblem = (p: Problem) => `a [${p.aShape}] b [${p.bShape}]${p.transA ? ' transA' : ''}${p.transB ? ' transB' : ''}`;

// Small tiles put many workgroups (and tile edges) inside these small shapes.
const SMALL_DIRECT: Partial<MatmulTiling> = { wgX: 2, wgY: 2, rows: 4, cols: 4 };
const SMALL_STAGED: Partial<MatmulTiling> = { wgX: 2, wgY: 2, rows: 4, cols: 4, depth: 4 };
/** The staged geometry used on GPU adapters, checked here on whatever adapter runs the tests. */
const GPU_STAGED: Partial<MatmulTiling> = { wgX: 16, wgY: 16, rows: 4, cols: 4, depth: 16 };

/** Runs `fn` (disposing its intermediates), downloads the result and frees it. */
async function evaluate(fn: () => T.Tensor): Promise<{ shape: readonly number[]; data: Float64Array }> {
  const y = T.tidy(fn);
  const data = await download(y);
  y.dispose();
  return { shape: y.shape, data };
}

interface KernelChoice {
  kernel?: 'direct' | 'staged';
  tiling?: Partial<MatmulTiling>;
  withBias?: boolean;
  activation?: RefActivation;
}

async function checkForward(p: Problem, seed: number, choice: KernelChoice = {}): Promise<void> {
  const { kernel, tiling, withBias = false, activation = 'none' } = choice;
  const a = randomRef(p.aShape, seed);
  const b = randomRef(p.bShape, seed + 1);
  const bias = withBias ? randomRef([p.N], seed + 2) : null;
  const got = await evaluate(() =>
    matmulKernel(toGpu(a), toGpu(b), { kernel, tiling, activation, transA: p.transA, transB: p.transB, bias: bias && toGpu(bias) }),
  );
  const want = refMatmul(a, b, { transA: p.transA, transB: p.transB, bias, activation });
  expect(got.shape).toEqual(want.shape);
  expectClose(got.data, want, tolFor(p.K), `${describeProblem(p)} ${kernel ?? 'default'}${withBias ? ' + bias' : ''} ${activation}`);
}

describe('matmul kernel matches the float64 reference', () => {
  it('any shape, transpose and batch broadcast (default kernel choice)', async () => {
    await fc.assert(fc.asyncProperty(arbProblem(anyDim), arbSeed, (p, seed) => checkForward(p, seed)), RUNS);
  });

  it('direct vec4 kernel on dimensions that are multiples of 4', async () => {
    await fc.assert(fc.asyncProperty(arbProblem(alignedDim), arbSeed, (p, seed) => checkForward(p, seed, { kernel: 'direct' })), RUNS);
  });

  it('both kernels with small tiles (many workgroups, partial edge tiles) and the GPU geometry', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('direct', 'staged', 'gpu'), arbProblem(anyDim), arbProblem(alignedDim), arbSeed, (kind, anyP, alignedP, seed) => {
        if (kind === 'direct') return checkForward(alignedP, seed, { kernel: 'direct', tiling: SMALL_DIRECT });
        return checkForward(anyP, seed, { kernel: 'staged', tiling: kind === 'gpu' ? GPU_STAGED : SMALL_STAGED });
      }),
      RUNS,
    );
  });

  // The epilogue is the same code for every tile size, so small tiles keep the many variants quick to compile.
  it('fused bias and activation epilogue', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        arbProblem(anyDim),
        arbProblem(alignedDim),
        fc.boolean(),
        fc.constantFrom<RefActivation>('none', 'relu', 'sigmoid'),
        arbSeed,
        (direct, anyP, alignedP, withBias, activation, seed) =>
          direct
            ? checkForward(alignedP, seed, { kernel: 'direct', tiling: SMALL_DIRECT, withBias, activation })
            : checkForward(anyP, seed, { kernel: 'staged', tiling: SMALL_STAGED, withBias, activation }),
      ),
      RUNS,
    );
  });

  it('reduceBatch sums the per-batch products', async () => {
    await fc.assert(
      fc.asyncProperty(arbProblem(anyDim), arbSeed, async (p, seed) => {
        const a = randomRef(p.aShape, seed);
        const b = randomRef(p.bShape, seed + 1);
        const got = await evaluate(() => matmulKernel(toGpu(a), toGpu(b), { transA: p.transA, transB: p.transB, reduceBatch: true }));
        const full = refMatmul(a, b, { transA: p.transA, transB: p.transB });
        const want = full.shape.length === 3 ? refReduce(full, [0], 'sum') : full;
        expect(got.shape).toEqual([p.M, p.N]);
        const batch = full.shape.length === 3 ? full.shape[0] : 1;
        expectClose(got.data, want, tolFor(p.K * batch), describeProblem(p));
      }),
      RUNS,
    );
  });

  // The backward pass folds an activation's derivative into the matmul producing its output's gradient, and the
  // bias gradient into the weight gradient's matmul: both must equal the separate passes they replace.
  it('gradient mask epilogue: out * relu\'/sigmoid\' at y, on both kernels', async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), arbProblem(anyDim), arbProblem(alignedDim), fc.constantFrom<'relu' | 'sigmoid'>('relu', 'sigmoid'), arbSeed, async (direct, anyP, alignedP, act, seed) => {
        const p = direct ? alignedP : anyP;
        const a = randomRef(p.aShape, seed);
        const b = randomRef(p.bShape, seed + 1);
        const prod = refMatmul(a, b, { transA: p.transA, transB: p.transB });
        // relu's mask is y > 0; sigmoid's y (1 - y) is taken at outputs in (0, 1).
        const y = act === 'relu' ? randomRef(prod.shape, seed + 2) : randomRef(prod.shape, seed + 2, 0.01, 0.99);
        const kernel = direct ? 'direct' : 'staged';
        const got = await evaluate(() =>
          matmulKernel(toGpu(a), toGpu(b), { kernel, tiling: direct ? SMALL_DIRECT : SMALL_STAGED, transA: p.transA, transB: p.transB, gradMask: { activation: act, y: toGpu(y) } }),
        );
        const want = prod.data.map((v, i) => (act === 'relu' ? (y.data[i] > 0 ? v : 0) : v * y.data[i] * (1 - y.data[i])));
        expectClose(got.data, want, tolFor(p.K), `${describeProblem(p)} ${kernel} mask ${act}`);
      }),
      RUNS,
    );
  });

  it('row sums of op(a) beside the product (dense weight and bias gradients in one pass)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('direct', 'staged', 'gpu', 'default'),
        anyDim, anyDim, anyDim, alignedDim, alignedDim, alignedDim,
        fc.boolean(), fc.boolean(), fc.boolean(), fc.integer({ min: 2, max: 3 }),
        arbSeed,
        async (kind, m, n, k, m4, n4, k4, transA, transB, batched, batch, seed) => {
          const [M, N, K] = kind === 'direct' ? [m4, n4, k4] : [m, n, k];
          // A batched problem sums its batch (reduceBatch), and the row sums run over it too.
          const lead = batched ? [batch] : [];
          const a = randomRef([...lead, ...(transA ? [K, M] : [M, K])], seed);
          const b = randomRef([...lead, ...(transB ? [N, K] : [K, N])], seed + 1);
          const kernel = kind === 'direct' || kind === 'staged' ? kind : kind === 'gpu' ? 'staged' : undefined;
          const tiling = kind === 'direct' ? SMALL_DIRECT : kind === 'staged' ? SMALL_STAGED : kind === 'gpu' ? GPU_STAGED : undefined;
          const { out, rowSums } = matmulRowSums(toGpu(a), toGpu(b), { kernel, tiling, transA, transB, reduceBatch: batched });
          const [gotOut, gotSums] = [await download(out), await download(rowSums)];
          out.dispose();
          rowSums.dispose();
          const full = refMatmul(a, b, { transA, transB });
          const want = batched ? refReduce(full, [0], 'sum') : full;
          const wantSums = new Float64Array(M);
          a.data.forEach((v, i) => {
            const mk = i % (M * K);
            wantSums[transA ? mk % M : Math.floor(mk / K)] += v;
          });
          const what = `${kind} a [${a.shape}] b [${b.shape}]${transA ? ' transA' : ''}${transB ? ' transB' : ''}`;
          expect(rowSums.shape).toEqual([M]);
          expectClose(gotOut, want, tolFor(K * (batched ? batch : 1)), `${what} product`);
          expectClose(gotSums, wantSums, tolFor(K * (batched ? batch : 1)), `${what} row sums`);
        },
      ),
      runs(12),
    );
  });

  it('linear: x · weightᵀ + bias, then activation', async () => {
    await fc.assert(
      fc.asyncProperty(anyDim, anyDim, anyDim, fc.boolean(), fc.constantFrom<RefActivation>('none', 'relu', 'sigmoid'), arbSeed, async (n, inDim, outDim, withBias, act, seed) => {
        const x = randomRef([n, inDim], seed);
        const w = randomRef([outDim, inDim], seed + 1);
        const b = withBias ? randomRef([outDim], seed + 2) : null;
        const got = await evaluate(() => T.linear(toGpu(x), toGpu(w), b && toGpu(b), act));
        expectClose(got.data, refLinear(x, w, b, act), tolFor(inDim), `linear x [${x.shape}] w [${w.shape}]${b ? ' + bias' : ''} ${act}`);
      }),
      RUNS,
    );
  });
});

describe('matmul and linear gradients against finite differences', () => {
  it('matmul: every transpose combination, batched and broadcast', async () => {
    await fc.assert(
      fc.asyncProperty(arbProblem(smallDim), arbSeed, async (p, seed) => {
        await checkVjp(
          (a, b) => T.matmul(a, b, { transA: p.transA, transB: p.transB }),
          (a, b) => refMatmul(a, b, { transA: p.transA, transB: p.transB }),
          [randomRef(p.aShape, seed), randomRef(p.bShape, seed + 1)],
          seed,
          { what: `matmul ${describeProblem(p)}` },
        );
      }),
      RUNS,
    );
  });

  for (const activation of ['none', 'relu', 'sigmoid'] as const) {
    it(`linear (${activation}), with and without bias`, async () => {
      await fc.assert(
        fc.asyncProperty(smallDim, smallDim, smallDim, fc.boolean(), arbSeed, async (n, inDim, outDim, withBias, seed) => {
          const x = randomRef([n, inDim], seed);
          const w = randomRef([outDim, inDim], seed + 1);
          const b = randomRef([outDim], seed + 2);
          // relu has a kink at 0: skip draws with a pre-activation within reach of the finite-difference step.
          if (activation === 'relu') fc.pre(refLinear(x, w, withBias ? b : null).data.every((z) => Math.abs(z) > 1e-2));
          const inputs = withBias ? [x, w, b] : [x, w];
          await checkVjp(
            (xt, wt, bt) => T.linear(xt, wt, bt ?? null, activation),
            (xr, wr, br) => refLinear(xr, wr, br ?? null, activation),
            inputs,
            seed,
            { what: `linear ${activation} x [${x.shape}] w [${w.shape}]${withBias ? ' + bias' : ''}` },
          );
        }),
        RUNS,
      );
    });
  }
});

describe('bad input', () => {
  it('matmul names the op and the shapes', () => {
    T.tidy(() => {
      expect(() => T.matmul(T.zeros([2, 3]), T.zeros([4, 5]))).toThrow(/matmul: inner dimensions differ: a \[2, 3\] has K = 3 but b \[4, 5\] has K = 4/);
      expect(() => T.matmul(T.zeros([2, 3]), T.zeros([2, 5]), { transB: true })).toThrow(/matmul: inner dimensions differ: a \[2, 3\].*b \[2, 5\].*transB/);
      expect(() => T.matmul(T.zeros([3]), T.zeros([3, 2]))).toThrow(/matmul: a must be rank 2 or 3, got a \[3\]/);
      expect(() => T.matmul(T.zeros([2, 3]), T.zeros([1, 1, 3, 2]))).toThrow(/matmul: b must be rank 2 or 3, got b \[1, 1, 3, 2\]/);
      expect(() => T.matmul(T.zeros([2, 2, 3]), T.zeros([3, 3, 4]))).toThrow(/matmul: batch sizes of a \[2, 2, 3\] and b \[3, 3, 4\] do not broadcast/);
      expect(() => T.matmul(T.tensor([1, 2], [1, 2], 'i32'), T.zeros([2, 1]))).toThrow(/matmul: expected f32 tensors, got a i32 \[1, 2\]/);
    });
  });

  it('linear names the op and the shapes', () => {
    T.tidy(() => {
      expect(() => T.linear(T.zeros([4]), T.zeros([3, 4]))).toThrow(/linear: x must be \[N, in\], got \[4\]/);
      expect(() => T.linear(T.zeros([2, 4]), T.zeros([4]))).toThrow(/linear: weight must be \[out, in\], got \[4\]/);
      expect(() => T.linear(T.zeros([2, 4]), T.zeros([3, 5]))).toThrow(/linear: x \[2, 4\] has 4 features but weight \[3, 5\] expects 5/);
      expect(() => T.linear(T.zeros([2, 4]), T.zeros([3, 4]), T.zeros([4]))).toThrow(/linear: bias must be \[3\] to match weight \[3, 4\], got \[4\]/);
      expect(() => T.linear(T.zeros([2, 4]), T.zeros([3, 4]), null, 'tanh' as 'relu')).toThrow(/linear: unknown activation 'tanh'/);
    });
  });

  it('the kernel rejects a bias of the wrong length and an unaligned direct request', () => {
    T.tidy(() => {
      expect(() => matmulKernel(T.zeros([2, 4]), T.zeros([4, 3]), { bias: T.zeros([4]) })).toThrow(/matmul: bias must be an f32 vector of length N = 3, got f32 \[4\]/);
      expect(() => matmulKernel(T.zeros([2, 5]), T.zeros([5, 4]), { kernel: 'direct' })).toThrow(/matmul: the direct kernel needs .* got M=2 N=4 K=5/);
    });
  });
});
