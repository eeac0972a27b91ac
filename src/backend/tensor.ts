// Tensors: views of pooled GPU buffers (or values still to be computed), the one runtime they live on, and the
// scopes that free them. Kernels take and return these; the autograd layer (src/autograd/tensor.ts) attaches to a
// tensor its parents and backward closure, whose slots and types are declared here so kernels never import it.
import type { AcquiredDevice, DeviceProvider } from './gpu.js';
import { Runtime } from './runtime.js';
import { sizeOf, assertShape, fmt, type Shape } from '../core/shape.js';

export { sizeOf, assertShape, fmt, type Shape };

export type DType = 'f32' | 'i32';
/**
 * Maps the gradient of an op's output to the gradients of its parents (null where none flows).
 * `need[i]` says whether parent i wants one, so costly ops can skip the rest.
 */
export type BackwardFn = (grad: Tensor, need: boolean[], ctx: BackwardContext) => (Tensor | null)[];

/** An activation fused into the op that made a tensor, whose derivative its gradient passes through. */
export type GradActivation = 'relu' | 'sigmoid';

/**
 * What the tape tells a backward closure about activation derivatives (see `gradients`): a fused activation's
 * derivative is applied by the kernel that produces its output's gradient, not by a pass of its own.
 */
export interface BackwardContext {
  /** `grad` already carries the derivative of this op's own fused activation. */
  masked: boolean;
  /**
   * Per parent, the derivative to fold into that parent's gradient: `y` (the parent itself) and its activation;
   * null where none. Only parents the op declared in `foldsMask` get one, and the op must apply it.
   */
  fold: ({ activation: GradActivation; y: Tensor } | null)[];
}

export interface RecordOptions {
  /** The activation the op fused into its output (the output's gradient is wanted through its derivative). */
  gradActivation?: GradActivation | null;
  /** Per parent: whether the backward closure applies `ctx.fold[i]` to that parent's gradient. */
  foldsMask?: boolean[];
  /** The op passes a gradient that carries its output's derivative to its single parent as one that carries the parent's (a reshape). */
  maskTransparent?: boolean;
}

let current: Runtime | null = null;
let initializing: Promise<Runtime> | null = null;

let provider: DeviceProvider | null = null;

/**
 * Where `init()` gets its device when none is given: the package's entry point registers Dawn in Node
 * (src/index.ts) or navigator.gpu in a browser (src/browser.ts), so the engine itself imports neither.
 */
export function setDeviceProvider(p: DeviceProvider): void {
  provider = p;
}

/**
 * Acquires the GPU once per process: from `acquire` when given, else from the registered provider, which
 * `backend` (or env GENCLS_BACKEND in Node) steers.
 */
export async function init(opts: { backend?: string; acquire?: () => Promise<AcquiredDevice> } = {}): Promise<Runtime> {
  if (current) return current;
  const acquire = opts.acquire ?? (provider ? () => provider!({ backend: opts.backend }) : null);
  if (!acquire) throw new Error('init: no GPU device provider; import the engine from its entry point (src/index.ts in Node, src/browser.ts in a browser) or pass `acquire`');
  initializing ??= acquire().then(async (d) => {
    const rt = new Runtime(d);
    await rt.probeSubgroups();
    return (current = rt);
  });
  return initializing;
}

export function runtime(): Runtime {
  if (!current) throw new Error('GPU not initialised: call `await init()` first');
  return current;
}

/** Releases the device (tests and short-lived commands call this so the process can exit). */
export function shutdown(): void {
  current?.destroy();
  current = null;
  initializing = null;
}

// ---------- scopes ----------

const scopes: Set<Tensor>[] = [];

/** Runs `fn`, then disposes every tensor it created except those it returns (found in arrays/objects) or `keep`s. */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  if (result! instanceof Promise) {
    throw new Error('tidy: the function returned a Promise; tidy scopes must be synchronous (await outside them)');
  }
  const kept = new Set<Tensor>();
  collectTensors(result!, kept);
  for (const t of scope) {
    if (kept.has(t)) scopes[scopes.length - 1]?.add(t);
    else t.dispose();
  }
  return result!;
}

function collectTensors(v: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 4 || v === null || typeof v !== 'object') return;
  if (v instanceof Tensor) out.add(v);
  else if (Array.isArray(v)) for (const x of v) collectTensors(x, out, depth + 1);
  else if (v instanceof Map) for (const x of v.values()) collectTensors(x, out, depth + 1);
  else if (Object.getPrototypeOf(v) === Object.prototype) for (const x of Object.values(v)) collectTensors(x, out, depth + 1);
}

/** Takes a tensor out of every enclosing scope so it outlives them (parameters, optimiser state). */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

/** A pooled buffer shared by the tensors that view it (reshape shares storage); released when the last one is disposed. */
export class Storage {
  refs = 0;
  constructor(readonly buffer: GPUBuffer) {}

  retain(): void {
    this.refs++;
  }

  drop(): void {
    if (--this.refs === 0) runtime().release(this.buffer);
  }
}

/**
 * Values not computed yet (fused elementwise chains, src/kernels/fusion.ts): computed into a fresh buffer the
 * first time the tensor's storage is needed, or dropped unseen when it is disposed first.
 */
export interface Deferred {
  /**
   * Computes the values into a fresh buffer, or returns storage shared with other deferred views of them, already
   * retained for the caller; lets go of its inputs.
   */
  realize(): GPUBuffer | Storage;
  /** Lets go of its inputs without computing. */
  release(): void;
}

export class Tensor {
  readonly shape: Shape;
  readonly dtype: DType;
  readonly size: number;
  private storage: Storage | null = null;
  private pending: Deferred | null = null;
  private alive = true;
  requiresGrad = false;
  grad: Tensor | null = null;
  parents: Tensor[] = [];
  backwardFn: BackwardFn | null = null;
  op = 'leaf';
  /** See RecordOptions. */
  gradActivation: GradActivation | null = null;
  foldsMask: boolean[] | null = null;
  maskTransparent = false;

  /**
   * Wraps a runtime buffer (owned from now on by this tensor), views another tensor's storage at `byteOffset`
   * (a multiple of the adapter's minStorageBufferOffsetAlignment; parameter arenas use this), or holds values
   * still to be computed.
   */
  constructor(buffer: GPUBuffer | Storage | Deferred, shape: Shape, dtype: DType = 'f32', readonly byteOffset = 0) {
    if (buffer instanceof Storage) this.storage = buffer;
    else if ('realize' in buffer) this.pending = buffer;
    else this.storage = new Storage(buffer);
    this.storage?.retain();
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.size = sizeOf(shape);
    scopes[scopes.length - 1]?.add(this);
  }

  static empty(shape: Shape, dtype: DType = 'f32'): Tensor {
    return new Tensor(runtime().alloc(sizeOf(shape) * 4), shape, dtype);
  }

  get buffer(): GPUBuffer {
    return this.sharedStorage.buffer;
  }

  /** The binding a kernel reads or writes: this tensor's elements only. */
  get binding(): GPUBufferBinding {
    return { buffer: this.buffer, offset: this.byteOffset, size: this.size * 4 };
  }

  get sharedStorage(): Storage {
    if (!this.alive) throw new Error(`tensor ${fmt(this.shape)} (from ${this.op}) used after dispose`);
    if (!this.storage) {
      const made = this.pending!.realize();
      this.pending = null;
      if (made instanceof Storage) this.storage = made;
      else {
        this.storage = new Storage(made);
        this.storage.retain();
      }
    }
    return this.storage;
  }

  /** The values still to be computed, or null once they exist (or after dispose). */
  get deferred(): Deferred | null {
    return this.pending;
  }

  get rank(): number {
    return this.shape.length;
  }

  get disposed(): boolean {
    return !this.alive;
  }

  dispose(): void {
    if (!this.alive) return;
    this.alive = false;
    this.storage?.drop();
    this.pending?.release();
    this.storage = null;
    this.pending = null;
    for (const s of scopes) s.delete(this);
  }

  /** Downloads the values (batched with other reads issued before the next flush). */
  async data(): Promise<Float32Array | Int32Array> {
    const [ab] = await runtime().read([{ buffer: this.buffer, offset: this.byteOffset, bytes: this.size * 4 }]);
    return this.dtype === 'i32' ? new Int32Array(ab) : new Float32Array(ab);
  }

  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item(): tensor has shape ${fmt(this.shape)}, expected a single element`);
    return (await this.data())[0];
  }

  /** Marks this tensor as a leaf whose gradient `backward()` accumulates into `.grad`. */
  requireGrad(flag = true): this {
    if (flag && this.dtype !== 'f32') throw new Error('requireGrad: only f32 tensors can require gradients');
    this.requiresGrad = flag;
    return this;
  }

  toString(): string {
    return `Tensor(${fmt(this.shape)}, ${this.dtype}, op=${this.op})`;
  }
}

/** Reads several tensors in one submission. */
export async function readAll(ts: Tensor[]): Promise<(Float32Array | Int32Array)[]> {
  const abs = await runtime().read(ts.map((t) => ({ buffer: t.buffer, offset: t.byteOffset, bytes: t.size * 4 })));
  return abs.map((ab, i) => (ts[i].dtype === 'i32' ? new Int32Array(ab) : new Float32Array(ab)));
}
