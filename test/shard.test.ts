// The study divided into shares: who does what (pure), and three shares run as separate processes into one
// directory — one of them killed midway and rerun — merging into the report a single process writes.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { useGpu } from './helpers.js';
import { assignShares, parseShard, planStudy, unitsOfShard, type Unit } from '../src/study/plan.js';
import { checkConfig, defaultConfig, type StudyConfig } from '../src/study/config.js';
import { tinyCheckpoints } from './fixtures.js';

const root = resolve(__dirname, '..');
const shared = resolve(root, '..', 'shared', 'fashion-mnist');

describe('shares', () => {
  it('reads I/N, a Slurm job array and a Kubernetes Indexed Job', () => {
    expect(parseShard('2/8', {})).toEqual({ index: 2, count: 8 });
    expect(parseShard('slurm', { SLURM_ARRAY_TASK_ID: '0', SLURM_ARRAY_TASK_COUNT: '4' })).toEqual({ index: 1, count: 4 });
    expect(parseShard('slurm', { SLURM_ARRAY_TASK_ID: '4', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_COUNT: '4' })).toEqual({ index: 4, count: 4 });
    expect(parseShard('k8s:5', { JOB_COMPLETION_INDEX: '4' })).toEqual({ index: 5, count: 5 });
  });

  it('names what is wrong with a share', () => {
    expect(() => parseShard('0/3', {})).toThrow(/share 0 of 3 does not exist \(shares are numbered 1 to N\)/);
    expect(() => parseShard('4/3', {})).toThrow(/share 4 of 3 does not exist/);
    expect(() => parseShard('two', {})).toThrow(/expected I\/N \(e.g. 2\/8\), 'slurm' or 'k8s:N', got 'two'/);
    expect(() => parseShard('slurm', { SLURM_ARRAY_TASK_COUNT: '4' })).toThrow(/SLURM_ARRAY_TASK_ID must be a non-negative integer, got nothing \(is it set\?\)/);
    expect(() => parseShard('slurm', { SLURM_ARRAY_TASK_ID: '2', SLURM_ARRAY_TASK_COUNT: '4', SLURM_ARRAY_TASK_STEP: '2' })).toThrow(/must be contiguous/);
    expect(() => parseShard('k8s:3', {})).toThrow(/JOB_COMPLETION_INDEX must be a non-negative integer/);
    expect(() => parseShard('k8s:3', { JOB_COMPLETION_INDEX: '3' })).toThrow(/share 4 of 3 does not exist/);
  });

  it('deals every unit to exactly one share, the shares within one unit of even', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 0.1, max: 100, noNaN: true }), { minLength: 1, maxLength: 60 }), fc.integer({ min: 1, max: 9 }), (costs, n) => {
        const units = costs.map((cost, i) => ({ id: `u${i}`, cost }) as Unit);
        const share = assignShares(units, n);
        expect(share.every((s) => Number.isInteger(s) && s >= 1 && s <= n)).toBe(true);
        const load = Array.from({ length: n }, (_, s) => units.reduce((a, u, i) => a + (share[i] === s + 1 ? u.cost : 0), 0));
        // Greedy longest-first: no share exceeds the mean by more than the largest unit.
        expect(Math.max(...load)).toBeLessThanOrEqual(costs.reduce((a, b) => a + b, 0) / n + Math.max(...costs) + 1e-9);
        expect(assignShares(units, n)).toEqual(share);
      }),
      { numRuns: 200 },
    );
  });
});

describe('the cluster recipes', () => {
  const read = (f: string) => readFileSync(join(root, f), 'utf8');
  const doc = read('docs/cluster.md');
  const blocks = (lang: string) => [...doc.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]);

  it('configs/full.json is the GPU defaults (the reference budgets) over all seven paper models', () => {
    const full = checkConfig(JSON.parse(read('configs/full.json')));
    expect(full).toEqual(JSON.parse(JSON.stringify({ ...defaultConfig(true), models: full.models, preset: 'paper' })));
    expect([...full.models].sort()).toEqual(['dbx', 'dfx', 'dfz', 'gby', 'gbz', 'gfy', 'gfz']);
  });

  it('the docs show the shipped Slurm script and Kubernetes Job, whose share counts match their arrays', () => {
    const sbatch = read('deploy/slurm/study.sbatch');
    for (const line of blocks('bash')[0].split('\n').filter(Boolean)) expect(sbatch).toContain(line);
    const array = /#SBATCH --array=0-(\d+)/.exec(sbatch)!;
    expect(sbatch).toContain('--shard slurm');
    const job = read('deploy/k8s/study-job.yaml');
    const spec = blocks('yaml').find((b) => b.includes('completionMode'))!;
    for (const line of spec.split('\n').filter(Boolean)) expect(job).toContain(line);
    const completions = Number(/completions: (\d+)/.exec(job)![1]);
    expect(job).toContain(`"--shard", "k8s:${completions}"`);
    expect(Number(array[1]) + 1).toBeGreaterThan(1);
    // The shares and the merge use one configuration and one output directory.
    expect(read('deploy/slurm/merge.sbatch')).toContain('--config configs/full.json --out "${STUDY_OUT:-report-full}" --merge');
    expect(read('deploy/k8s/merge-job.yaml')).toContain('"--config", "configs/full.json", "--out", "/study/report-full", "--merge"');
  });
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** `experiment ...` as its own process; `until` may kill it early. */
function experiment(args: string[], until?: (kill: () => void) => () => void): Promise<Run> {
  return new Promise((done, fail) => {
    // One process (tsx as a loader, not its CLI, which would run the command in a child the kill misses).
    const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli.ts'), 'experiment', ...args], {
      cwd: root,
      env: { ...process.env, EGL_PLATFORM: 'surfaceless' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const stop = until?.(() => child.kill('SIGKILL'));
    child.on('error', fail);
    child.on('close', (code, signal) => {
      stop?.();
      done({ code, signal, stdout, stderr });
    });
  });
}

/** report.json without what differs between runs of the same study: wall-clock times and the command line. */
function comparable(out: string): unknown {
  const strip = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(strip) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'seconds' && k !== 'command').map(([k, x]) => [k, strip(x)])) : v;
  return strip(JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')));
}

describe.skipIf(!existsSync(shared))('the study in three shares, as separate processes', () => {
  useGpu();

  it('merges into the report one process writes; a share killed midway redoes only its unfinished unit', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gencls-shard-'));
    await tinyCheckpoints(dir, ['dfz', 'gfz'], 3);
    const cfg: StudyConfig = checkConfig({
      ...defaultConfig(false),
      checkpoints: dir,
      preset: 'custom',
      subset: 6,
      batchSize: 2,
      samples: 2,
      attacks: [
        { kind: 'fgs', eps: [0.05, 0.2] },
        { kind: 'pgd', norm: 'linf', eps: [0.1], iterations: 3, stepSize: 0.05, randomStart: true },
        { kind: 'deepfool', p: [2], maxIterations: 3, overshoot: 0.02, subset: 4 },
        { kind: 'square', norm: 'linf', eps: [0.1], queryBudget: 4, subset: 2 },
        { kind: 'transfer', from: 'dfz', eps: [0.1] },
      ],
      detection: { trainImages: 10, falsePositiveRate: 0.1 },
      gridImages: 3,
    });
    const config = join(dir, 'study.json');
    writeFileSync(config, JSON.stringify(cfg));
    const common = ['--config', config, '--data', shared];
    const single = join(dir, 'single');
    const sharded = join(dir, 'sharded');

    const whole = await experiment([...common, '--out', single]);
    expect(whole.code, whole.stderr).toBe(0);

    // Share 2 is killed once two of its units are on disk; shares 1 and 3 run beside it.
    const plan = planStudy(cfg);
    const mine = unitsOfShard(plan, { index: 2, count: 3 }).map((u) => join(sharded, 'jobs', `${u.id}.json`));
    expect(mine.length).toBeGreaterThan(3);
    // inotify reports each unit's rename into place at once, so the kill lands while later units are still to come.
    mkdirSync(join(sharded, 'jobs'), { recursive: true });
    const killAfterTwo = (kill: () => void) => {
      const watcher = watch(join(sharded, 'jobs'), () => mine.filter((f) => existsSync(f)).length >= 2 && kill());
      return () => watcher.close();
    };
    const [one, killed, three] = await Promise.all([
      experiment([...common, '--out', sharded, '--shard', '1/3']),
      experiment([...common, '--out', sharded, '--shard', '2/3'], killAfterTwo),
      experiment([...common, '--out', sharded, '--shard', '3/3']),
    ]);
    expect(one.code, one.stderr).toBe(0);
    expect(three.code, three.stderr).toBe(0);
    expect(killed.signal).toBe('SIGKILL');
    const kept = mine.filter((f) => existsSync(f));
    expect(kept.length).toBeGreaterThanOrEqual(2);
    expect(kept.length).toBeLessThan(mine.length);

    // Merging now names the share that owes results, and writes nothing.
    const early = await experiment([...common, '--out', sharded, '--merge']);
    expect(early.code).toBe(3);
    expect(early.stderr).toMatch(/the study is incomplete: \d+ units of work have no results yet .*of 3 shares, 2\/3 still owe results/);
    expect(existsSync(join(sharded, 'report.json'))).toBe(false);

    const before = new Map(kept.map((f) => [f, statSync(f).mtimeMs]));
    const rerun = await experiment([...common, '--out', sharded, '--shard', '2/3']);
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(rerun.stderr).toContain(`share 2/3: ${mine.length} units of work, ${kept.length} already done, ${mine.length - kept.length} to compute`);
    expect(rerun.stdout).toMatch(/every share is done: run `experiment --merge`/);
    for (const [f, t] of before) expect(statSync(f).mtimeMs, f).toBe(t);

    const merged = await experiment([...common, '--out', sharded, '--merge']);
    expect(merged.code, merged.stderr).toBe(0);
    expect(comparable(sharded)).toEqual(comparable(single));
    const report = JSON.parse(readFileSync(join(sharded, 'report.json'), 'utf8'));
    expect(report.jobs.length).toBe(2 * (2 + 1 + 1 + 1) + 1);
    expect(report.command).not.toContain('--merge');
  });
});
