// The float64 CPU reference: plain row-major arrays, written for clarity, used as the oracle for every kernel.
export interface Ref {
  shape: number[];
  data: Float64Array;
}

export function ref(data: ArrayLike<number>, shape: readonly number[]): Ref {
  const n = shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new Error(`ref: ${data.length} values for shape [${shape.join(', ')}]`);
  return { shape: [...shape], data: Float64Array.from(data) };
}

export function refStrides(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  let s = 1;
  for (let k = shape.length - 1; k >= 0; k--) {
    st[k] = s;
    s *= shape[k];
  }
  return st;
}

/** Multi-index of flat index i in `shape`. */
export function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let k = shape.length - 1; k >= 0; k--) {
    idx[k] = i % shape[k];
    i = Math.floor(i / shape[k]);
  }
  return idx;
}

export function refBroadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const R = Math.max(a.length, b.length);
  return [...Array(R).keys()].map((k) => {
    const da = a[a.length - R + k] ?? 1;
    const db = b[b.length - R + k] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error('ref: shapes do not broadcast');
    return Math.max(da, db);
  });
}

/** Reads x at the multi-index `idx` of a (broadcast) output shape. */
export function atBroadcast(x: Ref, idx: readonly number[]): number {
  const off = idx.length - x.shape.length;
  let flat = 0;
  for (let k = 0; k < x.shape.length; k++) flat = flat * x.shape[k] + (x.shape[k] === 1 ? 0 : idx[k + off]);
  return x.data[flat];
}
