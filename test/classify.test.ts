// `classify`: a shipped checkpoint's logits for test images, as the CLI prints them, equal the model restored from
// the checkpoint's bytes (the browser page's path, models/restore.ts) on the same images and noise seed.
import { describe, it, expect, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { runCli as cli } from './cli-run.js';
import { init, shutdown, tensor, noGrad } from '../src/index.js';
import { restoreModel } from '../src/models/restore.js';
import { CheckpointError } from '../src/models/safetensors.js';
import { readIdx } from '../src/data/idx.js';

// The page's shipped test images: no Fashion-MNIST download needed.
const IMAGES = 'web/public/data/test-images.idx3-ubyte';
const LABELS = 'web/public/data/test-labels.idx1-ubyte';

afterAll(() => shutdown());

describe('classify', () => {
  it("prints the logits, p(y|x) and prediction that the checkpoint's bytes give", async () => {
    const path = 'checkpoints/dfz-compact.safetensors';
    const r = await cli('classify', path, '--images', IMAGES, '--labels', LABELS, '--index', '4', '--count', '3', '--seed', '5', '--samples', '4', '--json');
    expect(r.code, r.err).toBe(0);
    const out = JSON.parse(r.out);
    expect(out.model).toBe('dfz');
    expect(out.images.map((im: { index: number }) => im.index)).toEqual([4, 5, 6]);
    const pixels = Float32Array.from(readIdx(IMAGES, 'images').data.subarray(4 * 784, 7 * 784), (v) => v / 255);
    const labels = readIdx(LABELS, 'labels').data;
    await init();
    const { model } = restoreModel(readFileSync(path), path);
    const want = await noGrad(() => model.logits(tensor(pixels, [3, 1, 28, 28]), { samples: 4, seed: 5 })).data();
    out.images.forEach((im: { label: number; predicted: number; logits: number[]; probabilities: number[] }, j: number) => {
      expect(im.label).toBe(labels[4 + j]);
      expect(im.logits).toEqual(Array.from(want.subarray(10 * j, 10 * j + 10)));
      const m = Math.max(...im.logits);
      const z = im.logits.reduce((s, l) => s + Math.exp(l - m), 0);
      im.probabilities.forEach((p, c) => expect(p).toBeCloseTo(Math.exp(im.logits[c] - m) / z, 5));
      expect(im.predicted).toBe(im.logits.indexOf(m));
    });
    model.params.dispose();
    shutdown();
  });

  it('names a bad index or count, and a file that is not a checkpoint', async () => {
    const bad = await cli('classify', 'checkpoints/dfz-compact.safetensors', '--images', IMAGES, '--index', '299', '--count', '2');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--count/);
    const past = await cli('classify', 'checkpoints/dfz-compact.safetensors', '--images', IMAGES, '--index', '300');
    expect(past.code).toBe(2);
    expect(past.err).toMatch(/--index/);
    const wrong = await cli('classify', 'checkpoints/dfz-compact.safetensors', '--images', LABELS);
    expect(wrong.code).not.toBe(0);
    expect(wrong.err).toMatch(/test-labels\.idx1-ubyte: bad magic/);
    expect(() => restoreModel(new Uint8Array([1, 2, 3]), 'three-bytes.safetensors')).toThrow(CheckpointError);
    expect(() => restoreModel(new Uint8Array([1, 2, 3]), 'three-bytes.safetensors')).toThrow(/three-bytes.safetensors: truncated/);
  });
});
