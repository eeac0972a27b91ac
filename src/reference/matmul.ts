import { type Ref } from './tensor.js';

export type RefActivation = 'none' | 'relu' | 'sigmoid';

const activate: Record<RefActivation, (v: number) => number> = {
  none: (v) => v,
  relu: (v) => Math.max(v, 0),
  sigmoid: (v) => (v >= 0 ? 1 / (1 + Math.exp(-v)) : Math.exp(v) / (1 + Math.exp(v))),
};

/**
 * op(a) · op(b) (+ bias per column, then activation), op transposing the last two axes when flagged.
 * Rank-2 or rank-3 operands; a batch of 1 or a missing batch axis broadcasts.
 */
export function refMatmul(
  a: Ref,
  b: Ref,
  opts: { transA?: boolean; transB?: boolean; bias?: Ref | null; activation?: RefActivation } = {},
): Ref {
  const { transA = false, transB = false, bias = null, activation = 'none' } = opts;
  const dims = (x: Ref) => ({ batch: x.shape.length === 3 ? x.shape[0] : 1, rows: x.shape[x.shape.length - 2], cols: x.shape[x.shape.length - 1] });
  const da = dims(a);
  const db = dims(b);
  const M = transA ? da.cols : da.rows;
  const K = transA ? da.rows : da.cols;
  const N = transB ? db.rows : db.cols;
  if ((transB ? db.cols : db.rows) !== K) throw new Error('refMatmul: inner dimensions differ');
  const batch = Math.max(da.batch, db.batch);
  const at = (i: number, m: number, k: number) => a.data[(da.batch === 1 ? 0 : i) * M * K + (transA ? k * M + m : m * K + k)];
  const bt = (i: number, k: number, n: number) => b.data[(db.batch === 1 ? 0 : i) * K * N + (transB ? n * K + k : k * N + n)];
  const data = new Float64Array(batch * M * N);
  for (let i = 0; i < batch; i++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = bias ? bias.data[n] : 0;
        for (let k = 0; k < K; k++) s += at(i, m, k) * bt(i, k, n);
        data[(i * M + m) * N + n] = activate[activation](s);
      }
    }
  }
  return { shape: a.shape.length === 3 || b.shape.length === 3 ? [batch, M, N] : [M, N], data };
}

/** x [N, in] · weightᵀ (weight [out, in]) + bias, then activation. */
export function refLinear(x: Ref, weight: Ref, bias: Ref | null = null, activation: RefActivation = 'none'): Ref {
  return refMatmul(x, weight, { transB: true, bias, activation });
}
