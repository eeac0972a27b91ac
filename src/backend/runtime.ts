// The GPU runtime: a size-keyed buffer pool, a pipeline cache keyed by kernel name and compile-time flags,
// per-dispatch uniforms packed into one arena per submission, many dispatches per command buffer, and
// batched asynchronous reads. Every kernel in src/kernels runs through `Runtime.dispatch`.
import { USAGE_STORAGE, USAGE_COPY_SRC, USAGE_COPY_DST, USAGE_MAP_READ, USAGE_MAP_WRITE, USAGE_UNIFORM, MAP_READ, type AcquiredDevice } from './gpu.js';
import { DispatchProfiler, type StepProfile } from './profiler.js';
import type { SeedResolver } from '../core/dynamic.js';

/** Workgroup size of the subgroup layout probe: the largest workgroup the subgroup kernels use. */
const SUBGROUP_PROBE_WG = 256;

export interface KernelSource {
  /** Cache key: kernel name plus every compile-time flag that changes the WGSL. */
  key: string;
  /** Name reported in errors (e.g. 'conv2dBackwardFilter'). */
  name: string;
  /** Builds the WGSL on a cache miss. Bindings: 0 = uniforms (if any), then inputs (read), then outputs (read_write). */
  wgsl: () => string;
  entryPoint?: string;
}

export interface Dispatch {
  /** Whole buffers or sub-ranges (a tensor's `binding`). */
  inputs: (GPUBuffer | GPUBufferBinding)[];
  outputs: (GPUBuffer | GPUBufferBinding)[];
  /** Raw uniform bytes (kernels pack them by name through program.ts); omitted when the kernel has no uniforms. */
  uniforms?: ArrayBuffer;
  /** Workgroup counts; x beyond the per-dimension limit must be folded by the caller via `groups1d`. */
  workgroups: [number, number?, number?];
  /** Uniform scalars a recording recomputes at each replay (seeds); ignored outside a recording. */
  patches?: UniformPatch[];
}

/** One scalar of a dispatch's uniform block that a replay recomputes from the call's seeds. */
export interface UniformPatch {
  /** Offset in 4-byte words. */
  word: number;
  type: 'u32' | 'i32' | 'f32';
  value: SeedResolver;
}

export class KernelError extends Error {
  constructor(kernel: string, message: string) {
    super(`kernel '${kernel}': ${message}`);
    this.name = 'KernelError';
  }
}

export class DeviceLostError extends Error {
  constructor(reason: string) {
    super(`GPU device lost: ${reason}`);
    this.name = 'DeviceLostError';
  }
}


/** Rounds a byte size up to a pool bucket: 256-byte steps while small, then at most 12.5% slack. */
export function bucketSize(bytes: number): number {
  const b = Math.max(16, bytes);
  if (b <= 4096) return Math.ceil(b / 256) * 256;
  const shift = Math.max(0, Math.floor(Math.log2(b)) - 3);
  const step = 2 ** shift;
  return Math.ceil(b / step) * step;
}

export interface MemoryStats {
  /** Bytes in buffers currently owned by live tensors. */
  liveBytes: number;
  /** Bytes in released buffers waiting in the pool for reuse. */
  pooledBytes: number;
  liveBuffers: number;
  pooledBuffers: number;
  /** Bytes in the arenas of compiled functions' recordings (`Recording`, below). */
  recordedBytes: number;
}

const UNIFORM_ARENA_BYTES = 1 << 16;

/**
 * How kernels size their work per invocation. 'software': a renderer on the CPU (llvmpipe and kin), where large
 * register tiles and few invocations win; 'gpu': hardware, where small tiles and many invocations keep registers
 * from spilling and the multiprocessors busy.
 */
export type KernelProfile = 'software' | 'gpu';
const KERNEL_PROFILES: readonly KernelProfile[] = ['software', 'gpu'];

/** The profile for an adapter: GENCLS_KERNEL_PROFILE if set, else 'software' for CPU renderers, else 'gpu'. */
export function kernelProfileFor(description: string, env = typeof process === 'undefined' ? undefined : process.env.GENCLS_KERNEL_PROFILE): KernelProfile {
  if (env !== undefined && env !== '') {
    if (!(KERNEL_PROFILES as readonly string[]).includes(env)) throw new Error(`GENCLS_KERNEL_PROFILE must be one of ${KERNEL_PROFILES.join(', ')}, got '${env}'`);
    return env as KernelProfile;
  }
  return /llvmpipe|lavapipe|softpipe|swiftshader/i.test(description) ? 'software' : 'gpu';
}

export class Runtime {
  readonly device: GPUDevice;
  readonly description: string;
  readonly backend: string;
  readonly limits: GPUSupportedLimits;
  private readonly pipelines = new Map<string, { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout; name: string }>();
  private readonly layouts = new Map<string, GPUBindGroupLayout>();
  private readonly free = new Map<number, GPUBuffer[]>();
  private readonly sizes = new WeakMap<GPUBuffer, number>();
  private stats: MemoryStats = { liveBytes: 0, pooledBytes: 0, liveBuffers: 0, pooledBuffers: 0, recordedBytes: 0 };
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private pendingDispatches = 0;
  private uniformChunks: UniformChunk[] = [];
  private uniformArenaFree: GPUBuffer[] = [];
  private readonly uniformAlign: number;
  private toDestroy: GPUBuffer[] = [];
  private pendingChecks: Promise<void>[] = [];
  private errors: Error[] = [];
  private lost: string | null = null;
  /**
   * The most bytes the pool keeps for reuse. A buffer released beyond it is destroyed instead (after the next
   * submission, which may still use it): work whose shapes keep changing, such as DeepFool's shrinking set of
   * active images, would otherwise leave a buffer of every size it met in the pool.
   */
  poolLimitBytes = 2 ** 31;
  /** Tile sizes the kernels pick (see KernelProfile); settable, e.g. to test both on one adapter. */
  kernelProfile: KernelProfile;
  /** Dispatches per submission before an automatic flush; bounds latency and uniform arena growth. */
  maxDispatchesPerSubmit = 512;
  dispatchCount = 0;
  submitCount = 0;
  readCount = 0;
  private profiler: DispatchProfiler | null = null;
  /**
   * Fuse chains of elementwise ops into one kernel each, computed when first needed (src/kernels/fusion.ts);
   * env GENCLS_FUSION=0 turns it off (every op its own dispatch, as written).
   */
  fusion: boolean;
  /**
   * Trace compiled functions and replay them (src/autograd/compile.ts); env GENCLS_COMPILE=0 runs them eagerly,
   * op by op, every call.
   */
  compiling: boolean;
  /**
   * Kernels may use subgroup operations: the device has the `subgroups` feature, `probeSubgroups` found its
   * subgroups laid out as the kernels assume, and env GENCLS_SUBGROUPS is not 0. Settable (to false), e.g. to
   * compare both paths on one adapter.
   */
  subgroups = false;
  /** The subgroup size the probe saw (0 without subgroups). */
  subgroupSize = 0;
  /** Deferred computations that read a buffer: computed before anything writes into it. */
  private readers = new Map<GPUBuffer, Set<() => void>>();
  /** The recording being traced: buffers, dispatches, copies and writes go into it instead of the queue. */
  private recording: Recording | null = null;
  /** The recording that owns each arena buffer. */
  private readonly owners = new WeakMap<GPUBuffer, Recording>();
  /** Buffers outside any arena that live recordings bind, with how many bind each; released ones wait here. */
  private readonly pins = new Map<GPUBuffer, { count: number; released: boolean }>();

  constructor(acquired: AcquiredDevice) {
    this.device = acquired.device;
    this.description = acquired.description;
    this.backend = acquired.backend;
    this.limits = acquired.device.limits;
    this.uniformAlign = Math.max(16, this.limits.minUniformBufferOffsetAlignment);
    this.kernelProfile = kernelProfileFor(this.description);
    this.fusion = (typeof process === 'undefined' ? undefined : process.env.GENCLS_FUSION) !== '0';
    this.compiling = (typeof process === 'undefined' ? undefined : process.env.GENCLS_COMPILE) !== '0';
    this.device.lost.then((info) => {
      this.lost = `${info.reason}: ${info.message}`;
    });
    this.device.addEventListener('uncapturederror', (ev) => {
      const err = (ev as GPUUncapturedErrorEvent).error;
      this.errors.push(new Error(`uncaptured WebGPU error: ${err.message}`));
    });
  }

  // ---------- buffers ----------

  /** A storage buffer of at least `bytes` bytes from the pool. */
  alloc(bytes: number): GPUBuffer {
    this.checkAlive();
    const size = bucketSize(bytes);
    if (size > this.limits.maxStorageBufferBindingSize) {
      throw new Error(`tensor of ${bytes} bytes exceeds the adapter's maxStorageBufferBindingSize (${this.limits.maxStorageBufferBindingSize})`);
    }
    const rec = this.recording;
    if (rec) {
      let buf = rec.free.get(size)?.pop();
      if (!buf) {
        buf = this.device.createBuffer({ size, usage: USAGE_STORAGE | USAGE_COPY_SRC | USAGE_COPY_DST });
        this.sizes.set(buf, size);
        this.owners.set(buf, rec);
        rec.owned.push(buf);
        this.stats.recordedBytes += size;
      }
      rec.live.add(buf);
      return buf;
    }
    const list = this.free.get(size);
    let buf = list?.pop();
    if (buf) {
      this.stats.pooledBytes -= size;
      this.stats.pooledBuffers--;
    } else {
      buf = this.device.createBuffer({ size, usage: USAGE_STORAGE | USAGE_COPY_SRC | USAGE_COPY_DST });
      this.sizes.set(buf, size);
    }
    this.stats.liveBytes += size;
    this.stats.liveBuffers++;
    return buf;
  }

  /** Returns a buffer to the pool. Later dispatches that reuse it are ordered after earlier ones, so this is safe mid-encoder. */
  release(buf: GPUBuffer): void {
    const size = this.sizes.get(buf);
    if (size === undefined) throw new Error('release: buffer was not allocated by this runtime');
    const owner = this.owners.get(buf);
    if (owner) {
      // Arena buffers stay with their recording; one freed while tracing serves later allocations of the trace.
      owner.live.delete(buf);
      if (owner === this.recording) {
        let list = owner.free.get(size);
        if (!list) owner.free.set(size, (list = []));
        list.push(buf);
      }
      return;
    }
    const pin = this.pins.get(buf);
    if (pin) {
      pin.released = true;
      return;
    }
    this.releaseToPool(buf, size);
  }

  private releaseToPool(buf: GPUBuffer, size: number): void {
    this.stats.liveBytes -= size;
    this.stats.liveBuffers--;
    if (this.stats.pooledBytes + size > this.poolLimitBytes) {
      this.toDestroy.push(buf);
      return;
    }
    this.stats.pooledBytes += size;
    this.stats.pooledBuffers++;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buf);
  }

  /** Destroys every pooled (unused) buffer. */
  trimPool(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.stats.pooledBytes = 0;
    this.stats.pooledBuffers = 0;
  }

  memory(): MemoryStats {
    return { ...this.stats };
  }

  /**
   * Copies host data into `buf` in stream order (through a mapped staging buffer), so it lands after every
   * dispatch already encoded that touches a recycled buffer, without forcing a submission.
   */
  write(buf: GPUBuffer, data: ArrayBufferView, offsetBytes = 0): void {
    this.checkAlive();
    const size = Math.ceil(data.byteLength / 4) * 4;
    if (size === 0) return;
    if (this.recording) {
      this.recordWrite(buf, offsetBytes, padded(data));
      return;
    }
    const staging = this.device.createBuffer({ size, usage: USAGE_MAP_WRITE | USAGE_COPY_SRC, mappedAtCreation: true });
    new Uint8Array(staging.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    staging.unmap();
    this.copy(staging, 0, buf, offsetBytes, size);
    this.toDestroy.push(staging);
  }

  /**
   * Like `write`, with the data made by `produce`: eagerly once, now; inside a recording at every replay (from the
   * call's seeds), so per-call host state (Adam's step counts) advances with each replayed call.
   */
  hostWrite(buf: GPUBuffer, produce: (seeds: readonly number[]) => ArrayBufferView, offsetBytes = 0): void {
    if (!this.recording) {
      this.write(buf, produce([]), offsetBytes);
      return;
    }
    this.checkAlive();
    this.recordWrite(buf, offsetBytes, produce);
  }

  private recordWrite(dst: GPUBuffer, dstOffset: number, data: Uint8Array | ((seeds: readonly number[]) => ArrayBufferView)): void {
    const rec = this.recording!;
    if (this.readers.size) this.flushReaders(dst);
    this.pinFor(rec, dst);
    rec.ops.push({ kind: 'write', dst, dstOffset, size: 0, data, staging: null });
  }

  // ---------- recordings ----------

  /** Whether a compiled function is being traced. */
  get tracing(): boolean {
    return this.recording !== null;
  }

  /**
   * Starts tracing into a new recording: until `endRecording`, allocations come from its arena (reused by
   * liveness as the trace frees them), and dispatches, copies and writes are recorded, not run.
   */
  beginRecording(): Recording {
    this.checkAlive();
    if (this.recording) throw new Error('runtime: a recording is already open (compiled functions do not nest)');
    this.flush();
    this.recording = new Recording();
    return this.recording;
  }

  endRecording(rec: Recording): void {
    if (this.recording !== rec) throw new Error('runtime: that recording is not open');
    this.recording = null;
    rec.free.clear();
  }

  private pinFor(rec: Recording, buf: GPUBuffer): void {
    if (this.owners.get(buf) === rec || rec.pinned.has(buf)) return;
    if (this.owners.get(buf)) throw new Error('runtime: a recording binds a buffer of another recording');
    rec.pinned.add(buf);
    const pin = this.pins.get(buf);
    if (pin) pin.count++;
    else this.pins.set(buf, { count: 1, released: false });
  }

  /**
   * Runs a recording as one command buffer: the inputs' bytes copied into its input slots, every recorded op in
   * order, each output copied into a fresh pooled buffer (returned), so the results outlive the next replay.
   */
  replay(rec: Recording, inputs: { from: GPUBufferBinding; to: GPUBuffer }[], seeds: readonly number[], outputs: { buffer: GPUBuffer; offset: number; bytes: number }[]): GPUBuffer[] {
    this.checkAlive();
    if (rec.disposed) throw new Error('runtime: replay of a disposed recording');
    if (this.recording) throw new Error('runtime: cannot replay while tracing');
    if (this.readers.size) for (const i of inputs) this.flushReaders(i.to);
    this.flush();
    const queue = this.device.queue;
    rec.upload(this.device, seeds);
    for (const op of rec.ops) {
      if (op.kind !== 'write') continue;
      if (!op.staging) {
        const bytes = typeof op.data === 'function' ? padded(op.data(seeds)) : op.data;
        op.size = Math.ceil(bytes.byteLength / 4) * 4;
        op.staging = this.device.createBuffer({ size: op.size, usage: USAGE_COPY_SRC | USAGE_COPY_DST });
        queue.writeBuffer(op.staging, 0, bytes.buffer, bytes.byteOffset, bytes.byteLength);
      } else if (typeof op.data === 'function') {
        const bytes = padded(op.data(seeds));
        if (Math.ceil(bytes.byteLength / 4) * 4 !== op.size) throw new Error('runtime: a replayed write changed its size');
        queue.writeBuffer(op.staging, 0, bytes.buffer, bytes.byteOffset, bytes.byteLength);
      }
    }
    const encoder = this.device.createCommandEncoder();
    for (const { from, to } of inputs) encoder.copyBufferToBuffer(from.buffer, from.offset ?? 0, to, 0, from.size!);
    const profiler = this.profiler;
    let pass: GPUComputePassEncoder | null = null;
    let last: GPUComputePipeline | null = null;
    for (const op of rec.ops) {
      if (op.kind === 'dispatch') {
        if (profiler && pass) {
          pass.end();
          pass = null;
        }
        if (!pass) {
          pass = encoder.beginComputePass(profiler ? profiler.passFor(op.key) : undefined);
          last = null;
        }
        if (op.pipeline !== last) pass.setPipeline((last = op.pipeline));
        pass.setBindGroup(0, op.bindGroup);
        pass.dispatchWorkgroups(op.x, op.y, op.z);
        profiler?.encoded(op.key, 0);
        continue;
      }
      if (pass) {
        pass.end();
        pass = null;
      }
      if (op.kind === 'copy') encoder.copyBufferToBuffer(op.src, op.srcOffset, op.dst, op.dstOffset, op.bytes);
      else encoder.copyBufferToBuffer(op.staging!, 0, op.dst, op.dstOffset, op.size);
    }
    if (pass) pass.end();
    const results = outputs.map((o) => {
      const buf = this.alloc(o.bytes);
      encoder.copyBufferToBuffer(o.buffer, o.offset, buf, 0, Math.ceil(o.bytes / 4) * 4);
      return buf;
    });
    const timestamps = profiler?.resolve(encoder) ?? null;
    queue.submit([encoder.finish()]);
    profiler?.submitted(timestamps);
    this.submitCount++;
    this.dispatchCount += rec.dispatches;
    return results;
  }

  /** Frees a recording: its arena (except buffers tensors still hold, which join the pool's accounting), its pins. */
  disposeRecording(rec: Recording): void {
    if (rec.disposed) return;
    if (this.recording === rec) this.endRecording(rec);
    rec.disposed = true;
    this.flush();
    for (const buf of rec.owned) {
      const size = this.sizes.get(buf)!;
      this.owners.delete(buf);
      this.stats.recordedBytes -= size;
      if (rec.live.has(buf)) {
        this.stats.liveBytes += size;
        this.stats.liveBuffers++;
      } else this.toDestroy.push(buf);
    }
    for (const buf of rec.pinned) {
      const pin = this.pins.get(buf)!;
      if (--pin.count > 0) continue;
      this.pins.delete(buf);
      if (pin.released) this.releaseToPool(buf, this.sizes.get(buf)!);
    }
    rec.release(this.toDestroy);
  }

  // ---------- deferred readers ----------

  /** Registers `force`, which computes a deferred value reading `buffer`, to run before `buffer` is next written. */
  addReader(buffer: GPUBuffer, force: () => void): void {
    let set = this.readers.get(buffer);
    if (!set) this.readers.set(buffer, (set = new Set()));
    set.add(force);
  }

  removeReader(buffer: GPUBuffer, force: () => void): void {
    const set = this.readers.get(buffer);
    if (!set) return;
    set.delete(force);
    if (set.size === 0) this.readers.delete(buffer);
  }

  /** Computes every deferred value that reads `buffer`, so an in-place write cannot change what it sees. */
  private flushReaders(buffer: GPUBuffer): void {
    const set = this.readers.get(buffer);
    if (!set) return;
    for (const force of [...set]) force();
  }

  // ---------- pipelines ----------

  private layoutFor(nIn: number, nOut: number, uniform: boolean): GPUBindGroupLayout {
    const key = `${uniform ? 'u' : ''}${nIn}:${nOut}`;
    let layout = this.layouts.get(key);
    if (!layout) {
      const entries: GPUBindGroupLayoutEntry[] = [];
      let b = 0;
      if (uniform) entries.push({ binding: b++, visibility: 4, buffer: { type: 'uniform' } });
      for (let i = 0; i < nIn; i++) entries.push({ binding: b++, visibility: 4, buffer: { type: 'read-only-storage' } });
      for (let i = 0; i < nOut; i++) entries.push({ binding: b++, visibility: 4, buffer: { type: 'storage' } });
      layout = this.device.createBindGroupLayout({ entries });
      this.layouts.set(key, layout);
    }
    return layout;
  }

  private pipeline(src: KernelSource, nIn: number, nOut: number, uniform: boolean) {
    const cacheKey = `${src.key}|${uniform ? 'u' : ''}${nIn}:${nOut}`;
    let entry = this.pipelines.get(cacheKey);
    if (entry) return entry;
    let code: string;
    try {
      code = src.wgsl();
    } catch (e) {
      throw new KernelError(src.name, `WGSL generation failed: ${(e as Error).message}`);
    }
    const layout = this.layoutFor(nIn, nOut, uniform);
    this.device.pushErrorScope('validation');
    const module = this.device.createShaderModule({ code, label: src.name });
    const pipeline = this.device.createComputePipeline({
      label: src.name,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: src.entryPoint ?? 'main' },
    });
    // Compile errors are reported asynchronously; the next flush or read awaits them and throws with the kernel's name.
    this.pendingChecks.push(
      this.device.popErrorScope().then(async (err) => {
        if (!err) return;
        const info = await module.getCompilationInfo();
        const msgs = info.messages.filter((m) => m.type === 'error').map((m) => `  line ${m.lineNum}:${m.linePos} ${m.message}`);
        this.pipelines.delete(cacheKey);
        this.errors.push(new KernelError(src.name, `failed to compile: ${err.message}${msgs.length ? '\n' + msgs.join('\n') : ''}`));
      }),
    );
    entry = { pipeline, layout, name: src.name };
    this.pipelines.set(cacheKey, entry);
    return entry;
  }

  get pipelineCount(): number {
    return this.pipelines.size;
  }

  // ---------- dispatch ----------

  private newUniformChunk(): UniformChunk {
    return { data: new Uint8Array(UNIFORM_ARENA_BYTES), used: 0, gpu: this.uniformArenaFree.pop() ?? this.device.createBuffer({ size: UNIFORM_ARENA_BYTES, usage: USAGE_UNIFORM | USAGE_COPY_DST }) };
  }


  /**
   * Opens a profile (src/backend/profiler.ts): until `endProfile`, every dispatch runs in its own compute pass,
   * timed on the GPU where the device has timestamp-query, and its encoding is timed on the host.
   */
  beginProfile(): void {
    if (this.profiler) throw new Error('runtime: a profile is already open');
    this.flush();
    this.profiler = new DispatchProfiler(this.device);
  }

  /** Submits what is encoded, waits for its timestamps and closes the profile. */
  async endProfile(): Promise<StepProfile> {
    const profiler = this.profiler;
    if (!profiler) throw new Error('runtime: no profile is open');
    this.flush();
    this.profiler = null;
    return profiler.finish();
  }

  /**
   * Turns `subgroups` on where the device has the feature and its subgroups are what the kernels assume: in a
   * one-dimensional workgroup, subgroup k holds the consecutive local indices [k s, (k + 1) s) for one size s
   * that divides the workgroup. WGSL does not promise that layout; every implementation met gives it, and this
   * checks it once (one dispatch and one read, at start-up) rather than trusting it.
   */
  async probeSubgroups(): Promise<void> {
    if (!this.device.features.has('subgroups') || (typeof process !== 'undefined' && process.env.GENCLS_SUBGROUPS === '0')) return;
    const n = SUBGROUP_PROBE_WG;
    const module = this.device.createShaderModule({
      code: `enable subgroups;
@group(0) @binding(0) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(${n})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sgid: u32, @builtin(subgroup_size) sgsize: u32) {
  let first = subgroupBroadcastFirst(lid);
  o[lid] = select(0u, sgsize, first == (lid / sgsize) * sgsize && sgid == lid % sgsize && ${n}u % sgsize == 0u);
}`,
    });
    if ((await module.getCompilationInfo()).messages.some((m) => m.type === 'error')) return;
    const out = this.device.createBuffer({ size: 4 * n, usage: USAGE_STORAGE | USAGE_COPY_SRC });
    const read = this.device.createBuffer({ size: 4 * n, usage: USAGE_MAP_READ | USAGE_COPY_DST });
    const pipeline = await this.device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    const encoder = this.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] }));
    pass.dispatchWorkgroups(1);
    pass.end();
    encoder.copyBufferToBuffer(out, 0, read, 0, 4 * n);
    this.device.queue.submit([encoder.finish()]);
    await read.mapAsync(MAP_READ);
    const seen = new Uint32Array(read.getMappedRange().slice(0));
    read.unmap();
    out.destroy();
    read.destroy();
    const size = seen[0];
    if (size > 0 && seen.every((v) => v === size)) {
      this.subgroups = true;
      this.subgroupSize = size;
    }
  }

  /** Whether the device can time dispatches on the GPU (timestamp-query). */
  get hasTimestamps(): boolean {
    return this.device.features.has('timestamp-query');
  }

  dispatch(src: KernelSource, d: Dispatch): void {
    this.checkAlive();
    if (this.readers.size) for (const o of d.outputs) this.flushReaders('buffer' in o ? o.buffer : o);
    const profiler = this.profiler;
    const t0 = profiler ? performance.now() : 0;
    const uniform = d.uniforms !== undefined;
    const { pipeline, layout } = this.pipeline(src, d.inputs.length, d.outputs.length, uniform);
    const entries: GPUBindGroupEntry[] = [];
    let b = 0;
    const rec = this.recording;
    if (uniform) {
      const blockSize = Math.max(16, Math.ceil(d.uniforms!.byteLength / 16) * 16);
      if (blockSize > UNIFORM_ARENA_BYTES) throw new Error(`uniform block of ${blockSize} bytes is too large`);
      const slice = rec
        ? rec.uniformSlice(this.device, d.uniforms!, blockSize, d.patches, this.uniformAlign)
        : placeUniformBlock(this.uniformChunks, d.uniforms!, blockSize, this.uniformAlign, () => this.newUniformChunk());
      entries.push({ binding: b++, resource: { buffer: slice.chunk.gpu, offset: slice.offset, size: blockSize } });
    }
    for (const r of [...d.inputs, ...d.outputs]) entries.push({ binding: b++, resource: 'buffer' in r ? r : { buffer: r } });
    const [x, y = 1, z = 1] = d.workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    const maxDim = this.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxDim || y > maxDim || z > maxDim) {
      throw new KernelError(src.name, `dispatch of ${x}x${y}x${z} workgroups exceeds the per-dimension limit ${maxDim}`);
    }
    const bindGroup = this.device.createBindGroup({ layout, entries });
    if (rec) {
      for (const r of [...d.inputs, ...d.outputs]) this.pinFor(rec, 'buffer' in r ? r.buffer : r);
      rec.ops.push({ kind: 'dispatch', pipeline, bindGroup, x, y, z, key: src.key });
      rec.dispatches++;
      return;
    }
    if (profiler?.full) this.flush();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (profiler && this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (!this.pass) this.pass = this.encoder.beginComputePass(profiler ? profiler.passFor(src.key) : undefined);
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup);
    this.pass.dispatchWorkgroups(x, y, z);
    this.pendingDispatches++;
    this.dispatchCount++;
    profiler?.encoded(src.key, performance.now() - t0);
    if (this.pendingDispatches >= this.maxDispatchesPerSubmit) this.flush();
  }

  /** Folds a 1-D workgroup count into (x, y) under the per-dimension limit; kernels rebuild the index with `groupIndex()`. */
  groups1d(count: number): [number, number] {
    const maxDim = this.limits.maxComputeWorkgroupsPerDimension;
    if (count <= maxDim) return [count, 1];
    const y = Math.ceil(count / maxDim);
    return [Math.ceil(count / y), y];
  }

  /** Submits everything encoded so far. */
  flush(): void {
    if (!this.encoder) return;
    if (this.pass) this.pass.end();
    this.pass = null;
    for (const chunk of this.uniformChunks) this.device.queue.writeBuffer(chunk.gpu, 0, chunk.data.buffer, 0, chunk.used);
    const timestamps = this.profiler?.resolve(this.encoder) ?? null;
    this.device.queue.submit([this.encoder.finish()]);
    this.submitCount++;
    this.profiler?.submitted(timestamps);
    this.endBatch();
  }

  /** Drops the batch being encoded (it references a pipeline that failed to compile). */
  private abandonBatch(): void {
    if (this.pass) this.pass.end();
    this.pass = null;
    this.endBatch();
  }

  private endBatch(): void {
    // Queue order makes the arena reusable by the next submission's writeBuffer.
    this.uniformArenaFree.push(...this.uniformChunks.map((c) => c.gpu));
    this.uniformChunks = [];
    this.encoder = null;
    this.pendingDispatches = 0;
    for (const b of this.toDestroy) b.destroy();
    this.toDestroy = [];
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.checkAlive();
    if (this.readers.size) this.flushReaders(dst);
    const rec = this.recording;
    if (rec) {
      this.pinFor(rec, src);
      this.pinFor(rec, dst);
      rec.ops.push({ kind: 'copy', src, srcOffset, dst, dstOffset, bytes });
      return;
    }
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** Reads several buffers with one submission; resolves once all are mapped. */
  async read(items: { buffer: GPUBuffer; offset?: number; bytes: number }[]): Promise<ArrayBuffer[]> {
    this.checkAlive();
    if (this.recording) throw (this.recording.failure ??= new Error('a compiled function cannot read tensors back while it is traced: return them and read the results'));
    this.readCount++;
    if (this.profiler) this.profiler.readbacks++;
    await this.surfaceErrors();
    const stagings = items.map(({ buffer, offset = 0, bytes }) => {
      const size = Math.ceil(Math.max(4, bytes) / 4) * 4;
      const staging = this.device.createBuffer({ size, usage: USAGE_MAP_READ | USAGE_COPY_DST });
      this.copy(buffer, offset, staging, 0, size);
      return staging;
    });
    this.flush();
    try {
      await Promise.race([
        Promise.all(stagings.map((s) => s.mapAsync(MAP_READ))),
        this.device.lost.then((info) => {
          throw new DeviceLostError(`${info.reason}: ${info.message}`);
        }),
      ]);
      await this.surfaceErrors();
      return stagings.map((s, i) => s.getMappedRange(0, items[i].bytes === 0 ? 0 : s.size).slice(0, items[i].bytes));
    } finally {
      for (const s of stagings) s.destroy();
    }
  }

  /** Waits for all submitted work and rethrows any compile or validation error. */
  async sync(): Promise<void> {
    if (this.recording) throw (this.recording.failure ??= new Error('a compiled function cannot wait for the GPU while it is traced'));
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.surfaceErrors();
  }

  private async surfaceErrors(): Promise<void> {
    if (this.pendingChecks.length) {
      const checks = this.pendingChecks;
      this.pendingChecks = [];
      await Promise.all(checks);
    }
    if (this.errors.length) {
      const errs = this.errors;
      this.errors = [];
      const compileError = errs.find((e) => e instanceof KernelError);
      // The batch being encoded references the broken pipeline and would fail on submit: drop it with the error.
      if (compileError) this.abandonBatch();
      throw compileError ?? errs[0];
    }
    this.checkAlive();
  }

  private checkAlive(): void {
    if (this.lost !== null) throw new DeviceLostError(this.lost);
  }

  destroy(): void {
    this.flush();
    this.trimPool();
    this.device.destroy();
  }
}

/** A host image of one uniform buffer, filled block by block and uploaded whole. */
interface UniformChunk {
  data: Uint8Array;
  used: number;
  gpu: GPUBuffer;
}

/** Places a uniform block of `len` bytes after the last chunk's blocks (aligned), or in a new chunk when it is full. */
function placeUniformBlock(chunks: UniformChunk[], bytes: ArrayBuffer, len: number, align: number, newChunk: () => UniformChunk): { chunk: UniformChunk; index: number; offset: number } {
  let chunk = chunks[chunks.length - 1];
  let offset = chunk ? Math.ceil(chunk.used / align) * align : 0;
  if (!chunk || offset + len > chunk.data.byteLength) {
    chunks.push((chunk = newChunk()));
    offset = 0;
  }
  chunk.data.set(new Uint8Array(bytes), offset);
  chunk.used = offset + len;
  return { chunk, index: chunks.length - 1, offset };
}

/** A copy of `data`'s bytes padded to a multiple of 4 (queue writes and copies move whole words). */
function padded(data: ArrayBufferView): Uint8Array {
  const out = new Uint8Array(Math.ceil(data.byteLength / 4) * 4);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return out;
}

type RecordedOp =
  | { kind: 'dispatch'; pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; x: number; y: number; z: number; key: string }
  | { kind: 'copy'; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; bytes: number }
  | { kind: 'write'; dst: GPUBuffer; dstOffset: number; size: number; data: Uint8Array | ((seeds: readonly number[]) => ArrayBufferView); staging: GPUBuffer | null };

/**
 * What one trace of a compiled function recorded: its arena of buffers (planned by liveness: a buffer the trace
 * frees serves its later allocations), its dispatches with their bind groups built once, its copies and host
 * writes, and its uniforms in buffers of their own, with the scalars a replay recomputes from the call's seeds.
 */
export class Recording {
  readonly owned: GPUBuffer[] = [];
  /** Arena buffers some tensor still holds. */
  readonly live = new Set<GPUBuffer>();
  readonly free = new Map<number, GPUBuffer[]>();
  /** Buffers outside the arena the recording binds (parameters, optimiser state, constants). */
  readonly pinned = new Set<GPUBuffer>();
  readonly ops: RecordedOp[] = [];
  dispatches = 0;
  disposed = false;
  /** Set when the traced function did what a recording cannot hold (a readback, which may not surface as a throw). */
  failure: Error | undefined;
  private readonly chunks: (UniformChunk & { uploaded: boolean })[] = [];
  private readonly patches: { chunk: number; byte: number; type: UniformPatch['type']; value: SeedResolver }[] = [];

  uniformSlice(device: GPUDevice, bytes: ArrayBuffer, len: number, patches: UniformPatch[] | undefined, align: number): { chunk: UniformChunk; offset: number } {
    const newChunk = () => ({ data: new Uint8Array(UNIFORM_ARENA_BYTES), used: 0, gpu: device.createBuffer({ size: UNIFORM_ARENA_BYTES, usage: USAGE_UNIFORM | USAGE_COPY_DST }), uploaded: false });
    const placed = placeUniformBlock(this.chunks, bytes, len, align, newChunk);
    for (const p of patches ?? []) this.patches.push({ chunk: placed.index, byte: placed.offset + 4 * p.word, type: p.type, value: p.value });
    return placed;
  }


  /** Writes this call's seed-dependent scalars into the uniform blocks, and uploads the blocks that changed. */
  upload(device: GPUDevice, seeds: readonly number[]): void {
    for (const p of this.patches) {
      const chunk = this.chunks[p.chunk];
      const view = new DataView(chunk.data.buffer, p.byte, 4);
      const v = p.value(seeds);
      if (p.type === 'f32') view.setFloat32(0, v, true);
      else if (p.type === 'i32') view.setInt32(0, v, true);
      else view.setUint32(0, v >>> 0, true);
      chunk.uploaded = false;
    }
    for (const chunk of this.chunks) {
      if (chunk.uploaded) continue;
      device.queue.writeBuffer(chunk.gpu, 0, chunk.data.buffer, 0, chunk.used);
      chunk.uploaded = true;
    }
  }

  /** Hands the recording's own GPU objects (uniform and staging buffers) to `destroy`. */
  release(destroy: GPUBuffer[]): void {
    for (const c of this.chunks) destroy.push(c.gpu);
    for (const op of this.ops) if (op.kind === 'write' && op.staging) destroy.push(op.staging);
    this.chunks.length = 0;
    this.ops.length = 0;
  }
}

/** WGSL helper: the flat workgroup index of a (possibly folded) 1-D dispatch. */
export const GROUP_INDEX_WGSL = /* wgsl */ `
fn groupIndex(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.y * nwg.x + wid.x; }
`;
