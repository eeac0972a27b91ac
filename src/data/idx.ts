/**
 * Reading and writing the IDX files Fashion-MNIST (and MNIST) ship in (the format itself: idx-format.ts). The
 * official release gzips each file; both the gzipped (`*.gz`) and the raw names are accepted here.
 */
import { writeFileAtomic } from '../fsutil.js';
import { gunzipSync, gzipSync } from 'node:zlib';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DataError, encodeIdx, parseIdx, type IdxFile, type IdxKind } from './idx-format.js';

export * from './idx-format.js';

export type Split = 'train' | 'test';

/** What `loadFashionMnist` returns for one split. */
export interface FashionMnistSplit {
  /** count * rows * cols pixels, row-major per image, scaled from uint8 to [0, 1] by 1/255. */
  images: Float32Array;
  /** count class indices in 0..9. */
  labels: Int32Array;
  count: number;
  rows: number;
  cols: number;
  /** The two files read. */
  paths: { images: string; labels: string };
}

/** File names of each split, without the `.gz` suffix. */
export const SPLIT_FILES: Record<Split, Record<IdxKind, string>> = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte' },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte' },
};

/** Official Fashion-MNIST split sizes, rows, cols and number of classes. */
export const SPLIT_SIZES: Record<Split, number> = { train: 60_000, test: 10_000 };
export const IMAGE_ROWS = 28;
export const IMAGE_COLS = 28;
export const NUM_CLASSES = 10;

export const DATA_HINT = 'run `npx tsx src/cli.ts data` to download it, or pass --data DIR / set FASHION_MNIST_DIR';

/** True when the bytes start with the gzip magic 1f 8b. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/** Gunzips `bytes` when they start with the gzip magic; returns them unchanged otherwise. */
export function maybeGunzip(bytes: Uint8Array, name: string): Uint8Array {
  if (!isGzip(bytes)) return bytes;
  try {
    const out = gunzipSync(bytes);
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  } catch (e) {
    throw new DataError(`${name}: gzip data is corrupt or incomplete (${(e as Error).message}); delete the file and fetch it again`);
  }
}

/**
 * Writes an IDX file atomically. Gzipped when `opts.gzip` says so, else when the path ends in `.gz`.
 * dims are [count, rows, cols] for images, [count] for labels.
 */
export function writeIdx(
  path: string,
  kind: IdxKind,
  data: Uint8Array,
  dims: readonly number[],
  opts: { gzip?: boolean } = {},
): void {
  const raw = encodeIdx(kind, data, dims);
  const gzip = opts.gzip ?? path.endsWith('.gz');
  writeFileAtomic(path, gzip ? gzipSync(raw, { level: 9 }) : raw);
}

/** Reads and parses one IDX file (gzipped or not). Errors name the file. */
export function readIdx(path: string, kind: IdxKind): IdxFile {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DataError(`${path}: file not found; ${DATA_HINT}`);
    throw new DataError(`${path}: cannot read: ${(e as Error).message}`);
  }
  const name = basename(path);
  return parseIdx(maybeGunzip(bytes, name), kind, name);
}

let cachedRoot: string | undefined;

/** The repository root: the nearest directory above this module holding a package.json. */
export function repoRoot(): string {
  if (cachedRoot) return cachedRoot;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return (cachedRoot = dir);
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  // Not inside a package (unusual): assume this file sits at <root>/src/data/idx.ts.
  return (cachedRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..'));
}

/** Where the `data` command writes by default: data/fashion-mnist/ under the repository root. */
export function defaultDataDir(): string {
  return join(repoRoot(), 'data', 'fashion-mnist');
}

/**
 * The Fashion-MNIST directory to read: `--data DIR` when given, else $FASHION_MNIST_DIR, else
 * data/fashion-mnist/ under the repository root. When that one does not exist but
 * ../shared/fashion-mnist/ (next to the repository root) does, that one is used instead: it is
 * where this workplace keeps a prepared copy of the four files.
 */
export function resolveDataDir(cliDir?: string): string {
  if (cliDir) return resolve(cliDir);
  const env = process.env.FASHION_MNIST_DIR;
  if (env) return resolve(env);
  const local = defaultDataDir();
  if (existsSync(local)) return local;
  const shared = resolve(repoRoot(), '..', 'shared', 'fashion-mnist');
  if (existsSync(shared)) return shared;
  return local;
}

/** The path of one file of a split in `dir`: the `.gz` name when present, else the raw name, else the `.gz` name (missing). */
export function findSplitFile(dir: string, split: Split, kind: IdxKind): string {
  const base = join(dir, SPLIT_FILES[split][kind]);
  if (existsSync(base + '.gz')) return base + '.gz';
  if (existsSync(base)) return base;
  throw new DataError(`${base}.gz: file not found (nor ${basename(base)} un-gzipped) in ${dir}; ${DATA_HINT}`);
}

export interface LoadOptions {
  /** Directory holding the IDX files; resolved with resolveDataDir when absent. */
  dir?: string;
  split: Split;
  /** Keep only the first `limit` items (the files are still read and checked in full). */
  limit?: number;
  /**
   * The item count the files must hold: the official split size (60,000 / 10,000) by default,
   * `false` to accept any count (small synthetic files in tests).
   */
  expectCount?: number | false;
  /** Required image size; 28x28 by default, `false` to accept any. */
  expectSize?: [rows: number, cols: number] | false;
}

const PIXEL_SCALE = (() => {
  const t = new Float32Array(256);
  for (let i = 0; i < 256; i++) t[i] = i / 255;
  return t;
})();

/** Loads one split of Fashion-MNIST as float pixels in [0, 1] and int32 labels, validating everything. */
export function loadFashionMnist(opts: LoadOptions): FashionMnistSplit {
  const { split } = opts;
  if (split !== 'train' && split !== 'test') throw new DataError(`unknown split ${JSON.stringify(split)}, expected 'train' or 'test'`);
  const dir = resolveDataDir(opts.dir);
  if (!existsSync(dir)) {
    const tried = opts.dir || process.env.FASHION_MNIST_DIR ? dir : `${dir} (nor ${resolve(repoRoot(), '..', 'shared', 'fashion-mnist')})`;
    throw new DataError(`Fashion-MNIST directory not found: ${tried}; ${DATA_HINT}`);
  }
  if (!statSync(dir).isDirectory()) throw new DataError(`${dir}: not a directory (expected the Fashion-MNIST directory); ${DATA_HINT}`);

  const imagesPath = findSplitFile(dir, split, 'images');
  const labelsPath = findSplitFile(dir, split, 'labels');
  const img = readIdx(imagesPath, 'images');
  const lab = readIdx(labelsPath, 'labels');
  const imgName = basename(imagesPath);
  const labName = basename(labelsPath);
  const [count, rows, cols] = img.dims;

  const expectSize = opts.expectSize ?? [IMAGE_ROWS, IMAGE_COLS];
  if (expectSize && (rows !== expectSize[0] || cols !== expectSize[1])) {
    throw new DataError(`${imgName}: images are ${rows}x${cols}, expected ${expectSize[0]}x${expectSize[1]} (Fashion-MNIST)`);
  }
  if (lab.dims[0] !== count) {
    throw new DataError(`${imgName} holds ${count} images but ${labName} holds ${lab.dims[0]} labels; the two files of a split must hold the same number of items`);
  }
  const expectCount = opts.expectCount ?? SPLIT_SIZES[split];
  if (expectCount !== false && count !== expectCount) {
    throw new DataError(`${imgName}: holds ${count} items, expected ${expectCount} (the ${split} split); the file is incomplete or not Fashion-MNIST`);
  }
  for (let i = 0; i < count; i++) {
    const l = lab.data[i];
    if (l >= NUM_CLASSES) {
      throw new DataError(`${labName}: label ${l} at item ${i} is out of range; Fashion-MNIST labels are 0..${NUM_CLASSES - 1}`);
    }
  }

  let n = count;
  if (opts.limit !== undefined) {
    if (!Number.isInteger(opts.limit) || opts.limit < 1) throw new DataError(`limit must be a positive integer, got ${opts.limit}`);
    if (opts.limit > count) throw new DataError(`limit ${opts.limit} exceeds the ${count} items of the ${split} split (${imgName})`);
    n = opts.limit;
  }

  const pixels = n * rows * cols;
  const images = new Float32Array(pixels);
  const src = img.data;
  for (let i = 0; i < pixels; i++) images[i] = PIXEL_SCALE[src[i]];
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) labels[i] = lab.data[i];
  return { images, labels, count: n, rows, cols, paths: { images: imagesPath, labels: labelsPath } };
}
