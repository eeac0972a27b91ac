// The IDX format Fashion-MNIST (and MNIST) ship in, bytes in and bytes out (no file system, so the web page
// parses the same files).
//
// IDX layout: a 4-byte big-endian magic number `00 00 <dtype> <ndims>` (dtype 0x08 = unsigned byte), then `ndims`
// big-endian uint32 dimension sizes, then the payload in row-major order. Images are 0x00000803 (count, rows,
// cols), labels 0x00000801 (count).
export type IdxKind = 'images' | 'labels';

/** A parsed IDX file: its dimensions and its raw uint8 payload (a view into the decoded bytes). */
export interface IdxFile {
  kind: IdxKind;
  dims: number[];
  data: Uint8Array;
}

/** Any problem with the data files; the message always names the file or directory involved. */
export class DataError extends Error {
  override name = 'DataError';
}

export const IDX_MAGIC: Record<IdxKind, number> = { images: 0x00000803, labels: 0x00000801 };
export const IDX_NDIMS: Record<IdxKind, number> = { images: 3, labels: 1 };

const hex32 = (n: number): string => '0x' + (n >>> 0).toString(16).padStart(8, '0');
const hexBytes = (b: Uint8Array, n: number): string =>
  Array.from(b.subarray(0, n), (x) => x.toString(16).padStart(2, '0')).join(' ');

function describeMagic(magic: number): string {
  if (magic === IDX_MAGIC.images) return 'an images file';
  if (magic === IDX_MAGIC.labels) return 'a labels file';
  const dtype = (magic >>> 8) & 0xff;
  if (dtype !== 0x08) return `an IDX file of element type 0x${dtype.toString(16).padStart(2, '0')}, not unsigned bytes`;
  return `an unsigned-byte IDX file with ${magic & 0xff} dimensions`;
}

/**
 * Parses uncompressed IDX bytes, checking the magic number against `kind` and the payload
 * length against the header. `name` (usually the file name) prefixes every error message.
 */
export function parseIdx(bytes: Uint8Array, kind: IdxKind, name: string): IdxFile {
  if (bytes.length < 4) {
    throw new DataError(`${name}: not a gzip or IDX file: only ${bytes.length} bytes, too short for an IDX header`);
  }
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new DataError(
      `${name}: not a gzip or IDX file: starts with ${hexBytes(bytes, 4)}, expected the gzip magic 1f 8b or an IDX magic 00 00 08 0N`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, false);
  const want = IDX_MAGIC[kind];
  if (magic !== want) {
    throw new DataError(`${name}: bad magic ${hex32(magic)}, expected ${hex32(want)} (${describeMagic(want)}); this looks like ${describeMagic(magic)}`);
  }
  const ndims = IDX_NDIMS[kind];
  const headerLen = 4 + 4 * ndims;
  if (bytes.length < headerLen) {
    throw new DataError(`${name}: truncated: the header needs ${headerLen} bytes but the file has only ${bytes.length}`);
  }
  const dims: number[] = [];
  for (let i = 0; i < ndims; i++) dims.push(view.getUint32(4 + 4 * i, false));
  const count = dims[0];
  const perItem = dims.slice(1).reduce((a, b) => a * b, 1);
  if (kind === 'images' && perItem === 0) {
    throw new DataError(`${name}: bad dimensions ${dims[1]}x${dims[2]}: images need at least one row and one column`);
  }
  const expected = count * perItem;
  const got = bytes.length - headerLen;
  const what = kind === 'images' ? `${count} images of ${dims[1]}x${dims[2]}` : `${count} labels`;
  if (got < expected) {
    throw new DataError(
      `${name}: truncated: header says ${what} (${expected} bytes) but only ${got} bytes follow` +
        (perItem > 1 ? ` (${Math.floor(got / perItem)} whole items)` : ''),
    );
  }
  if (got > expected) {
    throw new DataError(`${name}: oversized: header says ${what} (${expected} bytes) but ${got} bytes follow, ${got - expected} more than expected`);
  }
  return { kind, dims, data: bytes.subarray(headerLen) };
}

/** Encodes uint8 `data` as uncompressed IDX bytes; dims are [count, rows, cols] or [count]. */
export function encodeIdx(kind: IdxKind, data: Uint8Array, dims: readonly number[]): Uint8Array {
  const ndims = IDX_NDIMS[kind];
  if (dims.length !== ndims) throw new Error(`encodeIdx: ${kind} need ${ndims} dims, got [${dims.join(', ')}]`);
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 0 || d > 0xffffffff) throw new Error(`encodeIdx: bad dimension ${d} in [${dims.join(', ')}]`);
  }
  const size = dims.reduce((a, b) => a * b, 1);
  if (size !== data.length) throw new Error(`encodeIdx: dims [${dims.join(', ')}] hold ${size} bytes but data has ${data.length}`);
  const headerLen = 4 + 4 * ndims;
  const out = new Uint8Array(headerLen + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, IDX_MAGIC[kind], false);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, headerLen);
  return out;
}
