// Shapes, strides and broadcasting: the arithmetic both the kernels and the autograd layer use, below both.
export type Shape = readonly number[];

export function sizeOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function assertShape(op: string, shape: Shape): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d <= 0) throw new Error(`${op}: invalid shape [${shape.join(', ')}]: every dimension must be a positive integer`);
  }
}

export const fmt = (s: Shape): string => `[${s.join(', ')}]`;

export function stridesOf(shape: Shape): number[] {
  const st = new Array<number>(shape.length);
  let s = 1;
  for (let k = shape.length - 1; k >= 0; k--) {
    st[k] = s;
    s *= shape[k];
  }
  return st;
}

export function broadcastShapes(a: Shape, b: Shape): number[] {
  const R = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let k = 0; k < R; k++) {
    const da = a[a.length - R + k] ?? 1;
    const db = b[b.length - R + k] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`shapes ${fmt(a)} and ${fmt(b)} cannot be broadcast together`);
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Normalises possibly-negative axes against a rank, rejecting out-of-range and repeated ones. */
export function normAxes(op: string, axes: number | readonly number[] | undefined, rank: number): number[] {
  if (axes === undefined) return [...Array(rank).keys()];
  const list = typeof axes === 'number' ? [axes] : [...axes];
  const out = list.map((a) => {
    if (!Number.isInteger(a) || a < -rank || a >= rank) throw new Error(`${op}: axis ${a} is out of range for rank ${rank}`);
    return a < 0 ? a + rank : a;
  });
  if (new Set(out).size !== out.length) throw new Error(`${op}: repeated axis in [${list.join(', ')}]`);
  return out.sort((x, y) => x - y);
}
