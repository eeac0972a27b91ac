// The second pass of both filter-gradient kernels (conv.ts's gather kernel and conv-gemm.ts's GEMM): partials
// [splits, m, kSize (+1)] summed over the splits into the weight gradient [m, kSize], and with a bias column (the
// last one) into the bias gradient [m].
import { wgsl } from 'wgsl-preprocessor/wgsl-preprocessor.js';
import { Tensor, runtime } from '../backend/tensor.js';
import { program, flatIndex } from '../backend/program.js';

const SUM_WG = 64;

const sumPartialsProgram = (bias: boolean) =>
  program(`convSumPartials:${bias}`, () => ({
    name: 'convSumPartials',
    inputs: ['partials'],
    outputs: bias ? ['dw', 'db'] : ['dw'],
    uniforms: { size: 'u32', splits: 'u32', kSize: 'u32' },
    workgroupSize: SUM_WG,
    body: () => wgsl`${flatIndex(SUM_WG, 'u.size', 'e')}
  var acc = 0.0;
  for (var s = 0u; s < u.splits; s++) { acc += partials[s * u.size + e]; }
#if ${bias}
  let row = e / (u.kSize + 1u);
  let col = e % (u.kSize + 1u);
  if (col == u.kSize) { db[row] = acc; } else { dw[row * u.kSize + col] = acc; }
#else
  dw[e] = acc;
#endif`,
  }));

/** dw (and db) = partials summed over its leading axis; partials is [splits, m, kSize + (db ? 1 : 0)]. */
export function sumFilterPartials(partials: Tensor, dw: Tensor, db: Tensor | null): void {
  const [splits, m, cols] = partials.shape;
  const kSize = cols - (db ? 1 : 0);
  const size = m * cols;
  sumPartialsProgram(db !== null).run({
    inputs: [partials.binding],
    outputs: db ? [dw.binding, db.binding] : [dw.binding],
    uniforms: { size, splits, kSize },
    workgroups: runtime().groups1d(Math.ceil(size / SUM_WG)),
  });
}
