// Philox4x32-10 on the CPU (the same generator the GPU kernels run), seed validation and the counter layout the
// kernels and the host streams share: below every layer that draws random numbers.

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
export const TWO32 = 2 ** 32;

/** High 32 bits of the 64-bit product of two u32s, from 16-bit limbs (every partial sum stays exact in a double). */
function mulhi32(a: number, b: number): number {
  const al = a & 0xffff;
  const ah = a >>> 16;
  const bl = b & 0xffff;
  const bh = b >>> 16;
  const cross = ah * bl + al * bh + Math.floor((al * bl) / 65536);
  return (ah * bh + Math.floor(cross / 65536)) >>> 0;
}

/** Philox4x32 with 10 rounds (Salmon et al. 2011): four u32 words from a 128-bit counter and a 64-bit key. */
export function philox4x32(counter: readonly number[], key: readonly number[]): [number, number, number, number] {
  let c0 = counter[0] >>> 0;
  let c1 = counter[1] >>> 0;
  let c2 = counter[2] >>> 0;
  let c3 = counter[3] >>> 0;
  let k0 = key[0] >>> 0;
  let k1 = key[1] >>> 0;
  for (let r = 0; r < 10; r++) {
    const hi0 = mulhi32(M0, c0);
    const lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi32(M1, c2);
    const lo1 = Math.imul(M1, c2) >>> 0;
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  return [c0, c1, c2, c3];
}

/** Throws unless `seed` is an integer in [0, 2^53), the range that maps losslessly onto a 64-bit Philox key. */
export function assertSeed(op: string, seed: number, what = 'seed'): void {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw new Error(`${op}: ${what} must be an integer in [0, 2^53), got ${seed}`);
  }
}

/** The two u32 words (low, high) of a validated seed. */
export function splitSeed(seed: number): [number, number] {
  return [seed % TWO32 >>> 0, Math.floor(seed / TWO32) >>> 0];
}

/**
 * Counter word 3 per kind of draw, so uniform, normal, dropout and host draws under one key use disjoint
 * counters (a uniform and a dropout mask from the same seed are independent).
 */
export const COUNTER_TAGS = { uniform: 0, normal: 1, dropout: 2, host: 3 } as const;
export type CounterTag = keyof typeof COUNTER_TAGS;
