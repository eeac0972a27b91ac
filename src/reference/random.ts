// Reference counter-based RNG: Philox4x32-10 in BigInt arithmetic (obviously exact, independent of the
// 16-bit-limb multiplies in the kernels and in the host Rng), and the element layout every GPU draw uses:
// element i of a draw reads word i % 4 of Philox(counter = [floor(i / 4), stream_lo, stream_hi, tag], key = seed).
import { COUNTER_TAGS, type CounterTag } from '../autograd/rng.js';

const MASK32 = 0xffffffffn;
const M = [0xd2511f53n, 0xcd9e8d57n];
const W = [0x9e3779b9n, 0xbb67ae85n];

export function refPhilox4x32(counter: readonly number[], key: readonly number[]): number[] {
  let c = counter.map((w) => BigInt(w >>> 0));
  let k = key.map((w) => BigInt(w >>> 0));
  for (let r = 0; r < 10; r++) {
    const p0 = M[0] * c[0];
    const p1 = M[1] * c[2];
    c = [(p1 >> 32n) ^ c[1] ^ k[0], p1 & MASK32, (p0 >> 32n) ^ c[3] ^ k[1], p0 & MASK32];
    k = [(k[0] + W[0]) & MASK32, (k[1] + W[1]) & MASK32];
  }
  return c.map(Number);
}

const split = (v: number): [number, number] => [v % 2 ** 32, Math.floor(v / 2 ** 32)];

/** The raw u32 words of elements [0, n) of a draw. */
export function refRandomWords(n: number, seed: number, stream: number, tag: CounterTag): Uint32Array {
  const key = split(seed);
  const [s0, s1] = split(stream);
  const out = new Uint32Array(n);
  for (let b = 0; b * 4 < n; b++) {
    const w = refPhilox4x32([b, s0, s1, COUNTER_TAGS[tag]], key);
    for (let j = 0; j < 4 && b * 4 + j < n; j++) out[b * 4 + j] = w[j];
  }
  return out;
}

/** A word's top 24 bits as a float in [0, 1): exact in f32, never 1. */
export const refUnit = (word: number): number => (word >>> 8) / 2 ** 24;

export function refUniform(n: number, seed: number, stream = 0): Float64Array {
  return Float64Array.from(refRandomWords(n, seed, stream, 'uniform'), refUnit);
}

/** Box-Muller on word pairs (0, 1) and (2, 3) of each block: cos for the even element, sin for the odd one. */
export function refNormal(n: number, seed: number, stream = 0): Float64Array {
  const words = refRandomWords(Math.ceil(n / 2) * 2, seed, stream, 'normal');
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const pair = i - (i % 2);
    const r = Math.sqrt(-2 * Math.log(1 - refUnit(words[pair])));
    const theta = 2 * Math.PI * refUnit(words[pair + 1]);
    out[i] = i % 2 === 0 ? r * Math.cos(theta) : r * Math.sin(theta);
  }
  return out;
}

/** 1 where dropout keeps element i: the word's top 24 bits are at least ceil(rate * 2^24). */
export function refDropoutMask(n: number, rate: number, seed: number, stream = 0): Float64Array {
  const threshold = Math.ceil(rate * 2 ** 24);
  return Float64Array.from(refRandomWords(n, seed, stream, 'dropout'), (w) => ((w >>> 8) >= threshold ? 1 : 0));
}
