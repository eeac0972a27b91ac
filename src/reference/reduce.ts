import { type Ref, unravel } from './tensor.js';

/** Reduces x over `axes` with an associative combiner; keepDims keeps size-1 axes. */
export function refReduce(x: Ref, axes: number[], kind: 'sum' | 'max' | 'logsumexp' | 'mean', keepDims = false): Ref {
  const outShape = x.shape.map((d, k) => (axes.includes(k) ? 1 : d));
  const n = outShape.reduce((a, b) => a * b, 1);
  const groups: number[][] = Array.from({ length: n }, () => []);
  for (let i = 0; i < x.data.length; i++) {
    const idx = unravel(i, x.shape);
    let o = 0;
    for (let k = 0; k < idx.length; k++) o = o * outShape[k] + (axes.includes(k) ? 0 : idx[k]);
    groups[o].push(x.data[i]);
  }
  const data = Float64Array.from(groups, (g) => {
    if (kind === 'sum') return g.reduce((a, b) => a + b, 0);
    if (kind === 'mean') return g.reduce((a, b) => a + b, 0) / g.length;
    const m = Math.max(...g);
    if (kind === 'max') return m;
    return m + Math.log(g.reduce((a, b) => a + Math.exp(b - m), 0));
  });
  return { shape: keepDims ? outShape : x.shape.filter((_, k) => !axes.includes(k)), data };
}

/** softmax / log-softmax over the last axis. */
export function refSoftmax(x: Ref, log = false): Ref {
  const cols = x.shape[x.shape.length - 1];
  const data = new Float64Array(x.data.length);
  for (let r = 0; r < x.data.length / cols; r++) {
    const row = x.data.subarray(r * cols, (r + 1) * cols);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, b) => a + Math.exp(b - m), 0));
    for (let j = 0; j < cols; j++) data[r * cols + j] = log ? row[j] - lse : Math.exp(row[j] - lse);
  }
  return { shape: [...x.shape], data };
}

/** Mean cross-entropy of softmax(logits) against integer labels. */
export function refCrossEntropy(logits: Ref, labels: number[]): number {
  const ls = refSoftmax(logits, true);
  const C = logits.shape[1];
  return -labels.reduce((a, y, i) => a + ls.data[i * C + y], 0) / labels.length;
}
