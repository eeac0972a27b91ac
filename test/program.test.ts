// The kernel generator (src/backend/program.ts): the uniform layout follows WGSL's uniform address-space rules,
// values are packed by name (and refused by name), the generated WGSL compiles and the kernel reads every uniform
// where the writer put it, and a declaration and its WGSL are built once per key.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import * as T from './lib.js';
import { useGpu } from './helpers.js';
import { program, uniformLayout, generateWgsl, flatIndex, type UniformType } from '../src/backend/program.js';

useGpu();

describe('uniform layout', () => {
  it('packs scalars at 4 bytes, starts vec4 arrays on 16 and rounds the struct to 16', () => {
    const { fields, words } = uniformLayout({ n: 'u32', a: 'f32', s: { array: 'u32', length: 5 }, b: 'i32' });
    expect(fields.map((f) => [f.name, f.offset, f.words])).toEqual([
      ['n', 0, 1],
      ['a', 1, 1],
      ['s', 4, 8],
      ['b', 12, 1],
    ]);
    expect(words).toBe(16);
    expect(uniformLayout({}).words).toBe(4);
    expect(() => uniformLayout({ x: 'f16' as UniformType })).toThrow(/uniform 'x': unknown type/);
  });

  it('the generated struct names every uniform with padding where the layout skips', () => {
    const w = generateWgsl({ name: 'k', key: 'k', inputs: ['xs'], outputs: [{ name: 'ys', type: 'i32' }], uniforms: { n: 'u32', s: { array: 'f32', length: 4 } }, workgroupSize: [8, 2], body: () => '' });
    expect(w).toContain('struct U { n: u32, _pad0: u32, _pad1: u32, _pad2: u32, s: array<vec4<f32>, 1> }');
    expect(w).toContain('@group(0) @binding(0) var<uniform> u: U;');
    expect(w).toContain('@group(0) @binding(1) var<storage, read> xs: array<f32>;');
    expect(w).toContain('@group(0) @binding(2) var<storage, read_write> ys: array<i32>;');
    expect(w).toContain('@compute @workgroup_size(8, 2)');
  });
});

describe('a declared kernel on the GPU', () => {
  // Copies every uniform, scalars and array elements, into the output as f32 so the test sees what the kernel read.
  const decl = { n: 'u32', f: 'f32', i: 'i32', arr: { array: 'u32', length: 7 }, g: 'f32', farr: { array: 'f32', length: 3 } } as const;
  const echo = program('test:echo', () => ({
    name: 'test.echo',
    inputs: [],
    outputs: ['ys'],
    uniforms: decl,
    workgroupSize: 1,
    body: () => `
  ys[0] = f32(u.n); ys[1] = u.f; ys[2] = f32(u.i);
  for (var k = 0u; k < 7u; k++) { ys[3u + k] = f32(u.arr[k >> 2u][k & 3u]); }
  ys[10] = u.g;
  for (var k = 0u; k < 3u; k++) { ys[11u + k] = u.farr[k >> 2u][k & 3u]; }`,
  }));

  it('reads every uniform where run() packed it by name', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          n: fc.integer({ min: 0, max: 1 << 20 }),
          f: fc.float({ min: -1e6, max: 1e6, noNaN: true, noDefaultInfinity: true }),
          i: fc.integer({ min: -(1 << 20), max: 1 << 20 }),
          arr: fc.array(fc.integer({ min: 0, max: 1 << 20 }), { maxLength: 7 }),
          g: fc.float({ min: -1e6, max: 1e6, noNaN: true, noDefaultInfinity: true }),
          farr: fc.array(fc.float({ min: -1e6, max: 1e6, noNaN: true, noDefaultInfinity: true }), { minLength: 3, maxLength: 3 }),
        }),
        async (v) => {
          const out = T.zeros([14]);
          echo.run({ inputs: [], outputs: [out.binding], uniforms: v, workgroups: [1] });
          const got = Array.from(await out.data());
          const arr = [...v.arr, ...Array(7 - v.arr.length).fill(0)];
          expect(got).toEqual([v.n, Math.fround(v.f), v.i, ...arr, Math.fround(v.g), ...v.farr.map(Math.fround)].map(Math.fround));
          out.dispose();
        },
      ),
      { numRuns: 20 },
    );
  });

  it('refuses a missing, unknown or oversized uniform by name', () => {
    const out = T.zeros([14]);
    const ok = { n: 1, f: 0, i: 0, arr: [], g: 0, farr: [0, 0, 0] };
    const run = (u: Record<string, unknown>) => echo.run({ inputs: [], outputs: [out.binding], uniforms: u as never, workgroups: [1] });
    const { g: _g, ...missing } = ok;
    expect(() => run(missing)).toThrow("kernel 'test.echo': uniform 'g' not given");
    expect(() => run({ ...ok, extra: 1 })).toThrow("kernel 'test.echo': unknown uniform 'extra'");
    expect(() => run({ ...ok, arr: [1, 2, 3, 4, 5, 6, 7, 8] })).toThrow("kernel 'test.echo': uniform 'arr' holds 7 values, got 8");
    expect(() => run({ ...ok, n: [1] })).toThrow("uniform 'n' is a u32, got an array");
    out.dispose();
  });

  it('builds a declaration once per key, and its WGSL only on a pipeline-cache miss', async () => {
    let declared = 0;
    let generated = 0;
    const make = () =>
      program('test:once', () => {
        declared++;
        return {
          name: 'test.once',
          inputs: ['xs'],
          outputs: ['ys'],
          uniforms: { n: 'u32' },
          workgroupSize: 64,
          body: () => {
            generated++;
            return `${flatIndex(64, 'u.n')}\n  ys[i] = xs[i] + 1.0;`;
          },
        };
      });
    const x = T.tensor([1, 2, 3], [3]);
    for (let k = 0; k < 3; k++) {
      const y = T.zeros([3]);
      make().run({ inputs: [x.binding], outputs: [y.binding], uniforms: { n: 3 }, workgroups: [1] });
      expect(Array.from(await y.data())).toEqual([2, 3, 4]);
      y.dispose();
    }
    expect(declared).toBe(1);
    expect(generated).toBe(1);
  });
});
