// The protocol checks on hand-built per-image results: each check's arithmetic, and that it flags what it should.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { protocolChecks } from '../src/study/checks.js';
import { attackMetrics, wilson, type ImageResults } from '../src/study/metrics.js';
import type { JobResult } from '../src/study/run.js';

/** A job whose image i has label 0, was right before iff before[i], and right after iff after[i]. */
function job(attack: JobResult['attack'], setting: string, before: boolean[], after: boolean[], extra: Partial<JobResult> = {}, linf?: number[]): JobResult {
  const results: ImageResults = {
    labels: before.map(() => 0),
    cleanPredictions: before.map((b) => (b ? 0 : 1)),
    adversarialPredictions: after.map((a) => (a ? 0 : 2)),
    l2: before.map(() => 1),
    linf: linf ?? before.map(() => 0.05),
    xNorm: before.map(() => 10),
  };
  return { id: `${attack}-${setting}`, model: 'gfz', attack, setting, spec: 0, results, metrics: attackMetrics(results), variant: '', classifier: '', grid: { clean: [], adversarial: [] }, seconds: 0, fingerprint: '', detection: {} as JobResult['detection'], ...extra };
}

const bools = (n: number) => fc.array(fc.boolean(), { minLength: n, maxLength: n });

describe('protocol checks', () => {
  it('convergence pairs jobs that differ only in twice the iterations, on the images both attacked', () => {
    fc.assert(
      fc.property(bools(12), bools(12), bools(8), (before, after, afterDoubled) => {
        const a = job('pgd', 'eps=0.05 linf, 10 it', before, after, { eps: 0.05 });
        const b = job('pgd', 'eps=0.05 linf, 20 it', before.slice(0, 8), afterDoubled, { eps: 0.05 });
        const other = job('pgd', 'eps=0.1 linf, 20 it', before, after, { eps: 0.1 });
        const [c, ...rest] = protocolChecks([a, b, other]).convergence;
        expect(rest).toEqual([]);
        const acc = after.slice(0, 8).filter(Boolean).length / 8;
        const accDoubled = afterDoubled.filter(Boolean).length / 8;
        expect([c.accuracy, c.accuracyDoubled, c.images]).toEqual([acc, accDoubled, 8]);
        expect(c.pass).toBe(Math.abs(acc - accDoubled) < 0.01);
      }),
    );
  });

  it('unbounded attacks must flip every image right before; bounded ones are not held to it', () => {
    const before = [true, true, false, true];
    const checks = protocolChecks([
      job('deepfool', 'p=2', before, [false, false, false, false]),
      job('cw', 'kappa=0, 100 it, 1 search step from c=10', before, [false, true, false, false]),
      job('pgd', 'eps=1 linf, 10 it', before, [false, false, false, false], { eps: 1 }),
      job('pgd', 'eps=0.05 linf, 10 it', before, [true, true, false, true], { eps: 0.05 }),
    ]).unbounded;
    expect(checks.map((c) => [c.attack, c.pass])).toEqual([['deepfool', true], ['cw', false], ['pgd', true]]);
    expect(checks[1].successRate).toBeCloseTo(2 / 3);
  });

  it('a black-box attack more successful than the strongest white-box one at its budget is flagged', () => {
    const before = [true, true, true, true, false];
    const fgs = job('fgs', 'eps=0.1', before, [true, false, true, true, false], { eps: 0.1 });
    const pgd = job('pgd', 'eps=0.1 linf, 10 it', before.slice(0, 4), [false, false, true, true], { eps: 0.1 });
    const weak = job('square', 'eps=0.1 linf, 100 queries', before, [true, false, true, true, false], { eps: 0.1 });
    const strong = job('transfer', 'FGS eps=0.1 crafted on dfz', before, [false, false, false, true, false], { eps: 0.1 });
    const [w, s] = protocolChecks([fgs, pgd, weak, strong]).blackBox;
    // The strongest white-box attack on the shared images is PGD (2 of 4 flipped).
    expect([w.whiteBox, w.whiteSuccess, w.blackSuccess, w.images, w.pass]).toEqual(['PGD eps=0.1 linf, 10 it', 0.5, 0.25, 4, true]);
    expect([s.blackSuccess, s.pass]).toEqual([0.75, false]);
  });

  it('robust accuracy: an image counts only if every attack within the budget left it right', () => {
    fc.assert(
      fc.property(bools(6), bools(6), bools(6), fc.array(fc.double({ min: 0, max: 0.3, noNaN: true }), { minLength: 6, maxLength: 6 }), (a1, a2, df, dfLinf) => {
        const before = a1.map(() => true);
        const jobs = [
          job('fgs', 'eps=0.05', before, a1, { eps: 0.05 }),
          job('pgd', 'eps=0.1 linf, 10 it', before, a2, { eps: 0.1 }),
          job('deepfool', 'p=∞', before, df, { p: 'inf' }, dfLinf),
        ];
        const robust = protocolChecks(jobs).robust;
        const want = (eps: number) => before.filter((_, i) => a1[i] && (eps < 0.1 || a2[i]) && (df[i] || dfLinf[i] > eps)).length / 6;
        expect(robust.map((r) => [r.eps, r.accuracy])).toEqual([[0.05, want(0.05)], [0.1, want(0.1)]]);
      }),
    );
  });

  it('Wilson intervals contain the estimate, shrink with n, and match a known case', () => {
    const [lo, hi] = wilson(81, 263);
    expect(lo).toBeCloseTo(0.2553, 3);
    expect(hi).toBeCloseTo(0.3662, 3);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 500 }), fc.double({ min: 0, max: 1, noNaN: true }), (n, p) => {
        const k = Math.round(p * n);
        const [a, b] = wilson(k, n);
        expect(a).toBeLessThanOrEqual(k / n + 1e-12);
        expect(b).toBeGreaterThanOrEqual(k / n - 1e-12);
        const [c, d] = wilson(4 * k, 4 * n);
        expect(d - c).toBeLessThan(b - a + 1e-12);
      }),
    );
    expect(() => wilson(3, 2)).toThrow(/need 0 <= k <= n and n > 0, got k = 3, n = 2/);
  });
});
