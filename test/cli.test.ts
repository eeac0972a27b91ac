// CLI plumbing and the progress bar: no GPU needed (usage errors are caught before any device is acquired).
import { describe, it, expect } from 'vitest';
import { sink, runCli as cli } from './cli-run.js';
import { Progress, formatDuration, formatRate } from '../src/progress.js';
import { intOpt, numberOpt } from '../src/commands/command.js';

describe('cli', () => {
  it('lists commands with --help and exits 0', async () => {
    const r = await cli('--help');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/info \(device\)/);
  });

  it('prints per-command help without touching the GPU', async () => {
    const r = await cli('device', '--help');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/--backend <auto\|native\|opengl>/);
    expect((await cli('help', 'info')).out).toMatch(/Usage: .* info \[options\]/);
  });

  it('names an unknown command and suggests the nearest', async () => {
    const r = await cli('inof');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/unknown command 'inof'\. Did you mean 'info'\?/);
  });

  it('names an unknown option, a missing value and a stray argument', async () => {
    expect((await cli('info', '--frobnicate')).err).toMatch(/info: unknown option '--frobnicate'/);
    expect((await cli('info', '--backend')).err).toMatch(/info: .*--backend.*argument missing/);
    expect((await cli('info', 'extra')).err).toMatch(/unexpected argument 'extra'/);
  });

  it('rejects an unknown backend by name', async () => {
    const r = await cli('info', '--backend', 'bogus');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/Unknown backend 'bogus': expected one of auto, native, opengl/);
  });
});

describe('numeric options', () => {
  it('parse, default and reject by option name', () => {
    expect(intOpt({}, 'epochs', 20)).toBe(20);
    expect(intOpt({ epochs: '5' }, 'epochs', 20, { min: 1 })).toBe(5);
    expect(() => intOpt({ epochs: '2.5' }, 'epochs', 20)).toThrow(/--epochs expects an integer, got '2.5'/);
    expect(() => intOpt({ epochs: '0' }, 'epochs', 20, { min: 1 })).toThrow(/--epochs must be >= 1/);
    expect(numberOpt({ lr: '1e-3' }, 'lr', 0.1)).toBe(0.001);
    expect(() => numberOpt({ lr: 'fast' }, 'lr', 0.1)).toThrow(/--lr expects a number, got 'fast'/);
    expect(() => numberOpt({ lr: '2' }, 'lr', 0.1, { max: 1 })).toThrow(/--lr must be <= 1/);
  });
});

describe('progress', () => {
  it('formats durations and rates', () => {
    expect(formatDuration(75)).toBe('1:15');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(Infinity)).toBe('?');
    expect(formatRate(12.34, 'it')).toBe('12.3 it/s');
    expect(formatRate(0.25, 'batch')).toBe('4.00 s/batch');
  });

  it('shows done/total, rate, elapsed, ETA and status', () => {
    let t = 0;
    const out = sink(false);
    const p = new Progress({ total: 10, label: 'train', stream: out, now: () => t, intervalMs: 1000 });
    t = 2000;
    p.tick(4, 'loss 0.5000');
    expect(p.render()).toMatch(/^train  \[#+-+\] 4\/10\s+40%  2\.0 it\/s  elapsed 0:02  ETA 0:03  loss 0\.5000$/);
  });

  it('prints a line at most every interval when not a TTY, and a final line', () => {
    let t = 0;
    const out = sink(false);
    const p = new Progress({ total: 100, stream: out, now: () => t, intervalMs: 10_000 });
    for (let i = 0; i < 100; i++) {
      t += 500; // 50 s in all
      p.tick();
    }
    p.finish();
    // First tick, then every 10 s (at 10.5, 20.5, 30.5, 40.5 s), then finish.
    expect(out.chunks.length).toBe(6);
    expect(out.chunks.every((c) => c.endsWith('\n') && !c.includes('\r'))).toBe(true);
    expect(out.chunks.at(-1)).toMatch(/100\/100 100%.*ETA 0:00/);
  });

  it('redraws one line in place on a TTY', () => {
    let t = 0;
    const out = sink(true);
    const p = new Progress({ total: 3, stream: out, now: () => t });
    for (let i = 0; i < 3; i++) {
      t += 1000;
      p.tick();
    }
    p.finish('done');
    expect(out.chunks.slice(0, -1).every((c) => c.startsWith('\r') && c.endsWith('\x1b[K'))).toBe(true);
    expect(out.chunks.at(-1)).toBe('\n');
    expect(out.chunks.at(-2)).toMatch(/3\/3.*done/);
  });
});
