// Seeds a compiled function takes anew at every call. While a function is traced its seed arguments are random
// tag values; `Rng` streams built from a tag register the seeds they draw, and the random kernels find the tag
// (or a seed derived from it) here and record how to compute the real key at each replay, instead of baking the
// traced value into the recording. Tags are 53-bit random numbers: a constant seed matching one is not a risk.

/** Computes a traced seed's real value from the call's seed arguments. */
export type SeedResolver = (seeds: readonly number[]) => number;

let active: Map<number, SeedResolver> | null = null;

/** Opens a registry for one trace (tags and the seeds derived from them); `endSeedTrace` closes it. */
export function beginSeedTrace(): void {
  if (active) throw new Error('compile: a function is already being traced');
  active = new Map();
}

export function endSeedTrace(): void {
  active = null;
}

/** A fresh tag for seed argument `index`. */
export function seedTag(index: number): number {
  if (!active) throw new Error('seedTag: no trace is open');
  let tag: number;
  do tag = Math.floor(Math.random() * 2 ** 53);
  while (active.has(tag));
  active.set(tag, (seeds) => seeds[index]);
  return tag;
}

/** How to recompute `seed` at replay, or undefined when it is a constant of the trace. */
export function seedResolver(seed: number): SeedResolver | undefined {
  return active?.get(seed);
}

/** Registers `value`, drawn during the trace, as computed from the call's seeds by `resolve`. */
export function registerDerivedSeed(value: number, resolve: SeedResolver): void {
  active?.set(value, resolve);
}
