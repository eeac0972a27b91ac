// Per-attack metrics, computed from per-image results on the host.

/** What one attack run records for each attacked image. */
export interface ImageResults {
  labels: number[];
  cleanPredictions: number[];
  adversarialPredictions: number[];
  /** ||x_adv - x||_2, ||x_adv - x||_inf and ||x||_2 per image. */
  l2: number[];
  linf: number[];
  xNorm: number[];
  /** Queries per image (score-based attacks only). */
  queries?: number[];
}

/** null where there is nothing to summarise (JSON has no NaN, and cached results must equal fresh ones). */
export interface Summary {
  mean: number | null;
  median: number | null;
}

export interface AttackMetrics {
  count: number;
  cleanAccuracy: number;
  adversarialAccuracy: number;
  /** Fraction of the points classified correctly before the attack that are misclassified after it. */
  successRate: number | null;
  /** Over successful adversarial examples. */
  l2: Summary;
  linf: Summary;
  /** The seed's robustness rho = mean ||eta||_2 / ||x||_2, over all attacked points and over successful ones. */
  rhoAll: number | null;
  rhoSuccessful: number | null;
  queries?: Summary;
}

export function summarize(values: number[]): Summary {
  if (values.length === 0) return { mean: null, median: null };
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return { mean: values.reduce((a, b) => a + b, 0) / values.length, median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2 };
}

/** Indices of images that were correct before the attack and wrong after it. */
export function successfulIndices(r: ImageResults): number[] {
  return r.labels.flatMap((y, i) => (r.cleanPredictions[i] === y && r.adversarialPredictions[i] !== y ? [i] : []));
}

export function attackMetrics(r: ImageResults): AttackMetrics {
  const n = r.labels.length;
  const correctBefore = r.labels.filter((y, i) => r.cleanPredictions[i] === y).length;
  const success = successfulIndices(r);
  const rho = (idx: number[]) => (idx.length ? idx.reduce((a, i) => a + r.l2[i] / r.xNorm[i], 0) / idx.length : null);
  return {
    count: n,
    cleanAccuracy: correctBefore / n,
    adversarialAccuracy: r.labels.filter((y, i) => r.adversarialPredictions[i] === y).length / n,
    successRate: correctBefore ? success.length / correctBefore : null,
    l2: summarize(success.map((i) => r.l2[i])),
    linf: summarize(success.map((i) => r.linf[i])),
    rhoAll: rho([...Array(n).keys()]),
    rhoSuccessful: rho(success),
    ...(r.queries ? { queries: summarize(r.queries) } : {}),
  };
}

/** The Wilson score interval for k successes in n trials (95% by default): [low, high], both in [0, 1]. */
export function wilson(k: number, n: number, z = 1.959963984540054): [number, number] {
  if (!(n > 0) || !(k >= 0 && k <= n)) throw new Error(`wilson: need 0 <= k <= n and n > 0, got k = ${k}, n = ${n}`);
  const p = k / n;
  const z2 = z * z;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (z / (1 + z2 / n)) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}
