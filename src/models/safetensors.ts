// The safetensors format: an 8-byte little-endian header length, a JSON header mapping each tensor name to
// {dtype, shape, data_offsets}, then the raw little-endian data. Our run metadata (model config, seed, epoch,
// metrics, adapter) goes in the header's `__metadata__` as one JSON string. Bytes in, bytes out: no file system,
// so the browser page decodes the same checkpoints the CLI writes.
export interface NamedArray {
  shape: number[];
  data: Float32Array;
}

export class CheckpointError extends Error {
  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = 'CheckpointError';
  }
}

export function encodeSafetensors(tensors: Record<string, NamedArray>, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const { shape, data } = tensors[name];
    if (shape.reduce((a, b) => a * b, 1) !== data.length) throw new Error(`safetensors: '${name}' has ${data.length} values for shape [${shape.join(', ')}]`);
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((json.length + 8) % 8)) % 8); // the format pads the header so data starts 8-aligned
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const name of names) {
    const { data } = tensors[name];
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  return out;
}

export function decodeSafetensors(bytes: Uint8Array, path = 'safetensors'): { tensors: Record<string, NamedArray>; metadata: Record<string, string> } {
  if (bytes.length < 8) throw new CheckpointError(path, `truncated: ${bytes.length} bytes, not a safetensors file`);
  const headerLen = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (headerLen > bytes.length - 8 || headerLen > 100_000_000) throw new CheckpointError(path, `corrupt: header length ${headerLen} exceeds the file (${bytes.length} bytes)`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] } | Record<string, string>>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    throw new CheckpointError(path, `corrupt: header is not valid JSON (${(e as Error).message})`);
  }
  const dataStart = 8 + headerLen;
  const dataLen = bytes.length - dataStart;
  const tensors: Record<string, NamedArray> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: offsets } = entry as { dtype: string; shape: number[]; data_offsets: [number, number] };
    if (dtype !== 'F32') throw new CheckpointError(path, `tensor '${name}' has dtype ${dtype}; only F32 is supported`);
    const n = shape.reduce((a, b) => a * b, 1);
    if (!Array.isArray(offsets) || offsets[1] - offsets[0] !== n * 4 || offsets[0] < 0 || offsets[1] > dataLen) {
      throw new CheckpointError(path, `corrupt: tensor '${name}' [${shape.join(', ')}] has byte range [${offsets}] outside the ${dataLen} data bytes or of the wrong size`);
    }
    // A fresh copy: Node Buffers are views into a shared pool, and Float32Array needs 4-byte alignment.
    const copy = new Uint8Array(bytes.subarray(dataStart + offsets[0], dataStart + offsets[1]));
    tensors[name] = { shape, data: new Float32Array(copy.buffer, 0, n) };
  }
  return { tensors, metadata: (header.__metadata__ as Record<string, string>) ?? {} };
}
