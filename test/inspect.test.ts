// `inspect`: the shipped checkpoints described from their files alone, and clear errors for files that are not
// checkpoints. Expected tensors come from parsing each file's safetensors header here, independently of the reader.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { runCli as cli } from './cli-run.js';
import { encodeSafetensors } from '../src/models/checkpoint.js';
import { MODEL_STRUCTURE, createModel, modelConfig } from '../src/models/factorisations.js';
import { useGpu } from './helpers.js';

/** Tensor names and shapes straight from the file's JSON header. */
function headerTensors(path: string): { name: string; shape: number[] }[] {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { shape: number[] }>;
  return Object.entries(header)
    .filter(([name]) => name !== '__metadata__')
    .map(([name, e]) => ({ name, shape: e.shape }));
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

const SHIPPED = [
  { path: 'checkpoints/gfz-compact.safetensors', model: 'gfz', parameters: 129_434 },
  { path: 'checkpoints/dfz-compact.safetensors', model: 'dfz', parameters: 190_682 },
];

describe('inspect a shipped checkpoint', () => {
  for (const { path, model, parameters } of SHIPPED) {
    it(`${model}: every tensor with its shape, and the total`, async () => {
      const want = headerTensors(path);
      const total = want.reduce((s, t) => s + numel(t.shape), 0);
      expect(total).toBe(parameters);

      const r = await cli('inspect', path);
      expect(r.code).toBe(0);
      expect(r.err).toBe('');
      expect(r.out).toContain(`${model.toUpperCase()}: ${MODEL_STRUCTURE[model as 'gfz'].factorisation}`);
      expect(r.out).toMatch(/preset: +compact \(channels 16, hidden 128, latent 32;/);
      expect(r.out).toContain(`parameters:  ${total.toLocaleString('en-US')} in ${want.length} tensors`);
      expect(r.out).toMatch(/epochs done: +20 of 20/);
      expect(r.out).toMatch(/last epoch: +20: train -ELBO \d+\.\d\d, test -ELBO \d+\.\d\d, test accuracy \d+\.\d\d% \(first 1,000\)/);
      const rows = r.out.split('\n').filter((l) => /^ {2}\S+ +\[[\d, ]+\] +[\d,]+$/.test(l));
      expect(rows.length).toBe(want.length);
      for (const t of want) {
        expect(r.out).toMatch(new RegExp(`^  ${t.name.replace(/\./g, '\\.')} +\\[${t.shape.join(', ')}\\] +${numel(t.shape).toLocaleString('en-US')}$`, 'm'));
      }
      expect(r.out).toMatch(new RegExp(`^  total +${total.toLocaleString('en-US')}$`, 'm'));
    });
  }

  it('--json carries the same facts, and --history every epoch', async () => {
    const { path } = SHIPPED[0];
    const want = headerTensors(path);
    const r = await cli('inspect', path, '--json', '--history');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.out);
    expect(s.model).toBe('gfz');
    expect(s.preset).toBe('compact');
    expect(s.tensorCount).toBe(want.length);
    expect(s.parameters).toBe(129_434);
    expect(s.tensors.map((t: { name: string; shape: number[] }) => [t.name, t.shape])).toEqual(want.map((t) => [t.name, t.shape]));
    expect(s.train).toMatchObject({ epochs: 20, batchSize: 100, lr: 0.001, seed: 1 });
    expect(s.epochsDone).toBe(20);
    expect(s.history).toHaveLength(20);
    expect(s.lastEpoch).toEqual(s.history[19]);
    expect(s.bestTestAccuracy.testAccuracy).toBe(Math.max(...s.history.map((e: { testAccuracy: number }) => e.testAccuracy)));

    const text = await cli('inspect', path, '--history');
    const epochRows = text.out.split('\n').filter((l) => /^ +\d+ +\d+\.\d\d +\d+\.\d\d +\d+\.\d\d% +[\d,]+ +\d+$/.test(l));
    expect(epochRows.length).toBe(20);
    expect((await cli('inspect', path, '--json')).out).not.toContain('"history"');
  });
});

describe('inspect refuses what is not a checkpoint, naming the file', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'gencls-inspect-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a missing file', async () => {
    const path = join(dir, 'missing.safetensors');
    const r = await cli('inspect', path);
    expect(r.code).toBe(1);
    expect(r.err).toBe(`error: ${path}: no such checkpoint file\n`);
    expect(r.out).toBe('');
  });

  it('a truncated file, a file of a few bytes and a header that is not JSON', async () => {
    const truncated = join(dir, 'truncated.safetensors');
    writeFileSync(truncated, readFileSync(SHIPPED[0].path).subarray(0, 200));
    let r = await cli('inspect', truncated);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(new RegExp(`^error: ${truncated}: corrupt: header length \\d+ exceeds the file \\(200 bytes\\)`));

    const tiny = join(dir, 'tiny.safetensors');
    writeFileSync(tiny, Buffer.from([1, 2, 3]));
    r = await cli('inspect', tiny);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${tiny}: truncated: 3 bytes, not a safetensors file`);

    const garbled = join(dir, 'garbled.safetensors');
    const bytes = Buffer.alloc(24);
    bytes.writeBigUInt64LE(16n, 0);
    bytes.write('{"not json', 8, 'utf8');
    writeFileSync(garbled, bytes);
    r = await cli('inspect', garbled);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${garbled}: corrupt: header is not valid JSON`);
  });

  it('a valid safetensors file without our metadata', async () => {
    const foreign = join(dir, 'foreign.safetensors');
    writeFileSync(foreign, encodeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } }));
    const r = await cli('inspect', foreign);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${foreign}: not a gencls checkpoint`);
  });

  it('no path, or two, is a usage error', async () => {
    expect((await cli('inspect')).code).toBe(2);
    expect((await cli('inspect', 'a', 'b')).err).toMatch(/inspect: expected exactly one checkpoint path, got 2/);
  });
});

describe('inspect agrees with the models themselves', () => {
  useGpu();

  it('parameter counts of the shipped checkpoints are those of the models they name', async () => {
    for (const { model: m, parameters } of SHIPPED) {
      const model = createModel(modelConfig(m, 'compact', { seed: 1 }));
      expect(model.params.numel, m).toBe(parameters);
      model.params.dispose();
    }
  });
});
