// Where a step's time goes, measured inside the step itself. While a profile is open the runtime gives every
// dispatch its own compute pass; where the device has `timestamp-query`, the pass writes GPU timestamps at its
// start and end, resolved at each submission and read back asynchronously, so each kernel gets its GPU-busy time.
// Everywhere, the host time spent encoding each dispatch (pipeline lookup, uniforms, bind group) and the counts
// of dispatches, submissions and readbacks are recorded.
import { USAGE_QUERY_RESOLVE, USAGE_COPY_SRC, USAGE_COPY_DST, USAGE_MAP_READ, MAP_READ } from './gpu.js';

export interface KernelTiming {
  /** Pipeline key: kernel, tile and flags. */
  key: string;
  dispatches: number;
  /** GPU time between the pass's start and end timestamps, summed; null without timestamp-query. */
  gpuMs: number | null;
  /** Host time spent encoding its dispatches. */
  encodeMs: number;
}

export interface StepProfile {
  /** Whether GPU times come from timestamp queries. */
  timestamps: boolean;
  dispatches: number;
  submits: number;
  readbacks: number;
  encodeMs: number;
  gpuMs: number | null;
  /** By GPU time where measured, else by encoding time, largest first. */
  kernels: KernelTiming[];
}


/** Dispatches timed per submission; the runtime submits early when a profile's query set is full. */
export const PROFILE_QUERY_PAIRS = 1024;

export class DispatchProfiler {
  private readonly querySet: GPUQuerySet | null;
  private readonly resolveBuffer: GPUBuffer | null;
  /** Keys of the dispatches timed in the submission being encoded, in query order. */
  private pendingKeys: string[] = [];
  private readonly reads: Promise<void>[] = [];
  private readonly byKey = new Map<string, KernelTiming>();
  submits = 0;
  readbacks = 0;

  constructor(private readonly device: GPUDevice) {
    const timestamps = device.features.has('timestamp-query');
    this.querySet = timestamps ? device.createQuerySet({ type: 'timestamp', count: 2 * PROFILE_QUERY_PAIRS }) : null;
    this.resolveBuffer = timestamps ? device.createBuffer({ size: 16 * PROFILE_QUERY_PAIRS, usage: USAGE_QUERY_RESOLVE | USAGE_COPY_SRC }) : null;
  }

  get timestamps(): boolean {
    return this.querySet !== null;
  }

  /** Whether the submission being encoded has used every query pair. */
  get full(): boolean {
    return this.pendingKeys.length >= PROFILE_QUERY_PAIRS;
  }

  private entry(key: string): KernelTiming {
    let e = this.byKey.get(key);
    if (!e) {
      e = { key, dispatches: 0, gpuMs: this.timestamps ? 0 : null, encodeMs: 0 };
      this.byKey.set(key, e);
    }
    return e;
  }

  /** The descriptor of the pass one dispatch of `key` runs in: with timestamp writes where available. */
  passFor(key: string): GPUComputePassDescriptor {
    if (!this.querySet) return {};
    const i = this.pendingKeys.length;
    this.pendingKeys.push(key);
    return { timestampWrites: { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } };
  }

  /** Records a dispatch and the host time spent encoding it. */
  encoded(key: string, ms: number): void {
    const e = this.entry(key);
    e.dispatches++;
    e.encodeMs += ms;
  }

  /** Before the submission's encoder finishes: copies its timestamps towards a buffer the host can map. */
  resolve(encoder: GPUCommandEncoder): GPUBuffer | null {
    const n = this.pendingKeys.length;
    if (!this.querySet || n === 0) return null;
    const staging = this.device.createBuffer({ size: 16 * n, usage: USAGE_MAP_READ | USAGE_COPY_DST });
    encoder.resolveQuerySet(this.querySet, 0, 2 * n, this.resolveBuffer!, 0);
    encoder.copyBufferToBuffer(this.resolveBuffer!, 0, staging, 0, 16 * n);
    return staging;
  }

  /** After the submission: reads its timestamps when the GPU is done with them. */
  submitted(staging: GPUBuffer | null): void {
    this.submits++;
    const keys = this.pendingKeys;
    this.pendingKeys = [];
    if (!staging) return;
    this.reads.push(
      staging.mapAsync(MAP_READ).then(() => {
        const t = new BigUint64Array(staging.getMappedRange());
        keys.forEach((key, i) => {
          // Timestamps are nanoseconds; an implementation may report an end before its start (clock domains).
          const ns = t[2 * i + 1] > t[2 * i] ? Number(t[2 * i + 1] - t[2 * i]) : 0;
          this.entry(key).gpuMs! += ns / 1e6;
        });
        staging.destroy();
      }),
    );
  }

  /** Waits for every submission's timestamps and returns the profile. */
  async finish(): Promise<StepProfile> {
    await Promise.all(this.reads);
    this.querySet?.destroy();
    this.resolveBuffer?.destroy();
    const kernels = [...this.byKey.values()].sort((a, b) => (b.gpuMs ?? b.encodeMs) - (a.gpuMs ?? a.encodeMs));
    const total = (f: (k: KernelTiming) => number) => kernels.reduce((a, k) => a + f(k), 0);
    const gpuMs = this.timestamps ? total((k) => k.gpuMs!) : null;
    return { timestamps: this.timestamps, dispatches: total((k) => k.dispatches), submits: this.submits, readbacks: this.readbacks, encodeMs: total((k) => k.encodeMs), gpuMs, kernels };
  }
}
