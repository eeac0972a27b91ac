// Host-side randomness: `Rng`, a seeded stream of independent integer seeds so models and attacks draw
// reproducible keys, on Philox4x32-10 (src/core/philox.ts, the same generator the GPU kernels run).
import { seedResolver, registerDerivedSeed, type SeedResolver } from '../core/dynamic.js';
import { philox4x32, assertSeed, splitSeed, COUNTER_TAGS, TWO32 } from '../core/philox.js';

export { philox4x32, assertSeed, splitSeed, COUNTER_TAGS, type CounterTag } from '../core/philox.js';

/**
 * A reproducible stream of random draws from one root seed. Draw k is Philox(counter = k, key = root), so
 * streams from different roots are independent and `fork()` gives a child stream that is itself reproducible.
 */
export class Rng {
  private readonly key: [number, number];
  private block = 0;
  private words: number[] = [];
  private drawn = 0;
  /** Set while a compiled function is traced and this stream's seed is one of its arguments (src/core/dynamic.ts). */
  private readonly traced: SeedResolver | undefined;

  constructor(readonly seed: number) {
    assertSeed('Rng', seed);
    this.key = splitSeed(seed);
    this.traced = seedResolver(seed);
  }

  /** A uniformly distributed u32. */
  nextU32(): number {
    this.drawn++;
    if (this.words.length === 0) {
      const [lo, hi] = splitSeed(this.block++);
      this.words = philox4x32([lo, hi, 0, COUNTER_TAGS.host], this.key).reverse();
    }
    return this.words.pop()!;
  }

  /** A seed for the GPU random ops: a uniformly distributed integer in [0, 2^53). */
  nextSeed(): number {
    const before = this.drawn;
    const seed = (this.nextU32() & 0x1fffff) * TWO32 + this.nextU32();
    const parent = this.traced;
    if (parent) {
      registerDerivedSeed(seed, (seeds) => {
        const replayed = new Rng(parent(seeds));
        for (let i = 0; i < before; i++) replayed.nextU32();
        return replayed.nextSeed();
      });
    }
    return seed;
  }

  /** A double in [0, 1) with 53 random bits. */
  float(): number {
    return this.nextSeed() / 2 ** 53;
  }

  /** An integer in [0, n), unbiased (rejection sampling). */
  int(n: number): number {
    if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`Rng.int: bound must be a positive integer, got ${n}`);
    const limit = 2 ** 53 - (2 ** 53 % n);
    for (;;) {
      const r = this.nextSeed();
      if (r < limit) return r % n;
    }
  }

  /** An independent child stream (seeded by the next draw of this one). */
  fork(): Rng {
    return new Rng(this.nextSeed());
  }
}
