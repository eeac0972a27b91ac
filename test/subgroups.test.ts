// Subgroup operations where the adapter offers them (Dawn's Vulkan backend on SwiftShader does, in the
// `swiftshader` project; Dawn's OpenGL backend on llvmpipe does not): the runtime turns them on only after
// checking the subgroup layout the kernels assume, and the row reductions that use them give what the workgroup
// tree gives and what the float64 reference gives, on rows that are not multiples of any workgroup or subgroup.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu, toGpu, download, expectClose, randomRef, arbSeed, SWIFTSHADER } from './helpers.js';
import { refReduce, refSoftmax } from '../src/reference/reduce.js';
import { generateWgsl } from '../src/backend/program.js';

const { rt } = useGpu();

type Kind = 'sum' | 'max' | 'logsumexp' | 'softmax' | 'logSoftmax';

function run(kind: Kind, x: T.Tensor): T.Tensor {
  if (kind === 'sum') return T.sum(x, -1);
  if (kind === 'max') return T.max(x, -1);
  if (kind === 'logsumexp') return T.logsumexp(x, -1);
  return kind === 'softmax' ? T.softmax(x) : T.logSoftmax(x);
}

async function withSubgroups(on: boolean, kind: Kind, x: T.Tensor): Promise<Float64Array> {
  const r = rt();
  const was = r.subgroups;
  r.subgroups = on && was;
  try {
    const y = run(kind, x);
    const out = await download(y);
    y.dispose();
    return out;
  } finally {
    r.subgroups = was;
  }
}

describe('subgroups', () => {
  it('are on exactly where the device has them, with the size the probe saw', () => {
    const r = rt();
    const has = r.device.features.has('subgroups');
    expect(r.subgroups).toBe(has && process.env.GENCLS_SUBGROUPS !== '0');
    if (r.subgroups) {
      expect(r.subgroupSize).toBeGreaterThan(0);
      expect(256 % r.subgroupSize).toBe(0);
    } else expect(r.subgroupSize).toBe(0);
    if (SWIFTSHADER) expect(r.subgroups).toBe(true);
  });

  it('a kernel that declares them enables the extension and gets the builtins', () => {
    const decl = { name: 'k', key: 'k', inputs: ['x'], outputs: ['y'], workgroupSize: 64, subgroups: true, body: () => '  y[lid] = subgroupAdd(x[lid]);' };
    const wgsl = generateWgsl(decl);
    expect(wgsl.startsWith('enable subgroups;')).toBe(true);
    expect(wgsl).toMatch(/@builtin\(subgroup_invocation_id\) sgid: u32, @builtin\(subgroup_size\) sgsize: u32/);
    expect(generateWgsl({ ...decl, subgroups: false, body: () => '  y[lid] = x[lid];' })).not.toMatch(/subgroup/);
  });

  it('row reductions through subgroups equal the workgroup tree and the float64 reference', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Kind>('sum', 'max', 'logsumexp', 'softmax', 'logSoftmax'),
        fc.integer({ min: 1, max: 5 }),
        // Long rows take the workgroup kernel (short ones have one invocation per row).
        fc.oneof(fc.integer({ min: 64, max: 300 }), fc.integer({ min: 301, max: 3000 })),
        arbSeed,
        async (kind, rows, cols, seed) => {
          // Sums over many columns: offset values keep the relative error meaningful.
          const xr = randomRef([rows, cols], seed, kind === 'sum' ? 0.5 : -4, kind === 'sum' ? 1.5 : 4);
          const x = toGpu(xr);
          const want = kind === 'softmax' || kind === 'logSoftmax' ? refSoftmax(xr, kind === 'logSoftmax') : refReduce(xr, [1], kind);
          const tol = { rtol: 1e-5, atol: 1e-5 };
          const tree = await withSubgroups(false, kind, x);
          const sub = await withSubgroups(true, kind, x);
          x.dispose();
          expectClose(tree, want, tol, `${kind} [${rows}, ${cols}] workgroup tree`);
          expectClose(sub, want, tol, `${kind} [${rows}, ${cols}] subgroups`);
        },
      ),
      { numRuns: 20 },
    );
  });

  it('reductions of rows with empty and extreme values stay exact through subgroups', async () => {
    // -inf-like and huge entries: logsumexp's merge must skip empty shares and keep the maximum.
    const cols = 517;
    const data = Float64Array.from({ length: 2 * cols }, (_, i) => (i % cols === 300 ? 80 : i % 7 === 0 ? -1e30 : (i % 13) / 13));
    const xr = { shape: [2, cols], data };
    const x = toGpu(xr);
    for (const kind of ['max', 'logsumexp', 'logSoftmax'] as Kind[]) {
      const want = kind === 'logSoftmax' ? refSoftmax(xr, true) : refReduce(xr, [1], kind as 'max' | 'logsumexp');
      expectClose(await withSubgroups(true, kind, x), want, { rtol: 1e-5, atol: 1e-4 }, kind);
    }
    x.dispose();
  });
});
