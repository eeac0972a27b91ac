// Dawn's toggles against the default, side by side in one run: for each set of toggles, `bench:profile` runs in
// its own process (Dawn reads toggles when it creates its instance) with GENCLS_DAWN_TOGGLES set, the sets taking
// turns round by round so drift in the machine's speed falls on all of them alike. Reports each set's median step
// time over all rounds and its ratio to the default.
//
//   npm run bench:toggles -- [--model gfz] [--task train] [--rounds 3] [--steps 20] [--sets "a,b;c"] [--json PATH]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MODEL_NAMES } from '../src/models/factorisations.js';
import { parseOptions, fail, runMain, atomicWriteJson, resultsPath, table, summarise, type Column } from './common.js';

const P = 'bench:toggles';
const TASKS = ['train', 'classify', 'gradient'];

/**
 * The toggles worth measuring for compute work: bounds clamping of storage accesses, API validation, zeroing of
 * workgroup memory, and zeroing of buffers on first use (`-` disables a toggle that is on by default).
 */
const DEFAULT_SETS = ['', 'disable_robustness', 'skip_validation', 'disable_workgroup_init', '-lazy_clear_resource_on_first_use', 'disable_robustness,skip_validation,disable_workgroup_init'];

const HELP = `Usage: npm run bench:toggles -- [options]

Times bench:profile's step under each set of Dawn toggles (GENCLS_DAWN_TOGGLES), one process per set and round.

Options:
  --model M       ${MODEL_NAMES.join('|')} (default gfz)
  --task T        ${TASKS.join('|')} (default train)
  --rounds N      rounds; each runs every set once (default 3)
  --steps N       timed steps per run (default 20)
  --sets S        toggle sets separated by ';', toggles by ',' ('' is the default; '-name' disables)
                  (default "${DEFAULT_SETS.join(';')}")
  --backend B     auto|native|opengl (default env GENCLS_BACKEND, else auto)
  --json PATH     also write the results as JSON (atomically; default: none)
  -h, --help      show this help
`;

async function main(): Promise<void> {
  const o = parseOptions(P, HELP, ['model', 'task', 'rounds', 'steps', 'sets'], []);
  const model = o.str('model') ?? 'gfz';
  const task = o.str('task') ?? 'train';
  if (!(MODEL_NAMES as readonly string[]).includes(model)) fail(P, `--model must be one of ${MODEL_NAMES.join(', ')}, got '${model}'`);
  if (!TASKS.includes(task)) fail(P, `--task must be one of ${TASKS.join(', ')}, got '${task}'`);
  const rounds = o.int('rounds', 1, 3);
  const steps = o.int('steps', 1, 20);
  const sets = (o.str('sets')?.split(';') ?? DEFAULT_SETS).map((s) => s.trim());
  if (!sets.includes('')) sets.unshift('');
  // Built (dist/bench/toggles.js, as bench/gpu-session.sh runs it): node runs profile.js; from source, tsx runs profile.ts.
  const built = import.meta.url.endsWith('.js');
  const profile = fileURLToPath(new URL(built ? './profile.js' : './profile.ts', import.meta.url));
  const runner = built ? process.execPath : fileURLToPath(new URL('../node_modules/.bin/tsx', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'gencls-toggles-'));
  const times = new Map<string, number[]>(sets.map((s) => [s, []]));
  const header: Record<string, unknown>[] = [];
  const started = new Date();
  try {
    for (let r = 0; r < rounds; r++) {
      for (const [i, set] of sets.entries()) {
        const out = join(dir, `r${r}-${i}.json`);
        process.stderr.write(`round ${r + 1}/${rounds}, toggles [${set || 'default'}] ...\n`);
        const args = [profile, '--model', model, '--task', task, '--steps', String(steps), '--reps', '1', '--top', '1', '--json', out];
        if (o.common.backend) args.push('--backend', o.common.backend);
        const res = spawnSync(runner, args, { env: { ...process.env, GENCLS_DAWN_TOGGLES: set }, encoding: 'utf8' });
        if (res.status !== 0) fail(P, `bench:profile with toggles [${set}] failed (exit ${res.status}):\n${res.stderr.slice(-2000)}`);
        const j = JSON.parse(readFileSync(out, 'utf8')) as { step_ms: number; adapter: string; kernel_profile: string; fusion: boolean };
        times.get(set)!.push(j.step_ms);
        if (!header.length) header.push({ adapter: j.adapter, kernel_profile: j.kernel_profile, fusion: j.fusion });
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const base = summarise(times.get('')!).medianMs;
  const rows = sets.map((set) => {
    const t = times.get(set)!;
    const med = summarise(t).medianMs;
    return { toggles: set || '(default)', median_ms: Math.round(med * 100) / 100, vs_default: Math.round((base / med) * 1000) / 1000, runs_ms: t };
  });
  process.stdout.write(`adapter: ${header[0].adapter}; kernel profile ${header[0].kernel_profile}; ${model} ${task}, ${rounds} rounds x ${steps} steps\n`);
  const cols: Column[] = [['toggles', 58, 'l'], ['median ms', 10, 'r'], ['speed-up', 9, 'r'], ['per round', 24, 'l']];
  process.stdout.write(table(cols, rows.map((r) => [r.toggles, r.median_ms.toFixed(1), `${r.vs_default.toFixed(3)}x`, r.runs_ms.map((x) => x.toFixed(0)).join(' ')])) + '\n');
  const json = o.common.json;
  if (json) {
    const path = resultsPath(json, 'toggles', started);
    atomicWriteJson(path, { ...header[0], date: started.toISOString(), command: ['tsx', 'bench/toggles.ts', ...process.argv.slice(2)].join(' '), model, task, rounds, steps, results: rows });
    process.stdout.write(`results: ${path}\n`);
  }
}

runMain(import.meta.url, P, main);
