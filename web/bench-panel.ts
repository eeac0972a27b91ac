// The benchmark panel's work: bench:kernels's matmul and conv cases (bench/cases.ts), timed the same way, on the
// browser's adapter.
import { buildCases, measure, oursRunner, type Case } from '../bench/cases.js';

export interface BenchRow {
  op: string;
  pass: string;
  shape: string;
  flops: number;
  /** Median of the timed reps, each synchronised with the GPU. */
  ms: number | null;
  gflops: number | null;
  reps: number;
  error?: string;
}

export const benchCases = (only: string): Case[] => {
  const needle = only.trim().toLowerCase();
  return buildCases().filter((c) => `${c.op} ${c.pass} ${c.shape}`.toLowerCase().includes(needle));
};

/** Times each case (one untimed first run, one warm-up, up to `reps` timed runs within 2 s) and reports its row. */
export async function runBench(cases: Case[], reps: number, onRow: (r: BenchRow) => void | Promise<void>, shouldStop: () => boolean = () => false): Promise<void> {
  for (const c of cases) {
    if (shouldStop()) return;
    const row: BenchRow = { op: c.op, pass: c.pass, shape: c.shape, flops: c.flops, ms: null, gflops: null, reps: 0 };
    let runner: ReturnType<typeof oursRunner> | null = null;
    try {
      runner = oursRunner(c);
      const t = await measure(runner, 1, reps, 2000, false);
      row.ms = t.medianMs;
      row.gflops = c.flops / (t.medianMs / 1000) / 1e9;
      row.reps = t.reps;
    } catch (e) {
      row.error = (e as Error).message.split('\n')[0];
    } finally {
      runner?.dispose();
    }
    await onRow(row);
  }
}
