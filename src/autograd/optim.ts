// Parameters packed into one GPU arena, and Adam as a single fused dispatch over that arena.
// Every parameter is a Tensor view into the arena (usable in every op); the optimiser keeps gradient, first- and
// second-moment arenas with the same layout, so one step is a handful of copies plus one kernel.
import { Tensor, Storage, runtime, keep, assertShape, sizeOf, fmt, type Shape } from './tensor.js';
import { adamKernel, packAdamSegments, ADAM_SEGMENT_BYTES, type AdamSegment } from '../kernels/adam.js';

export interface ParameterSpec {
  name: string;
  shape: Shape;
  /** Initial values (row-major); zeros when omitted. */
  init?: ArrayLike<number>;
}

/** Where one parameter lives in the arena. */
export interface ParameterSlot {
  name: string;
  shape: Shape;
  /** Byte offset into the arena, a multiple of the arena alignment. */
  offsetBytes: number;
  size: number;
}

/** Byte alignment of parameter views: storage bindings need offsets on minStorageBufferOffsetAlignment (<= 256). */
const ARENA_ALIGN = 256;

export class ParameterSet {
  readonly slots: readonly ParameterSlot[];
  /** Arena size in bytes, padding included. */
  readonly byteLength: number;
  private readonly views: Tensor[];
  private readonly indexByName = new Map<string, number>();
  private readonly indexByTensor = new Map<Tensor, number>();
  private readonly arena: Storage;

  constructor(specs: readonly ParameterSpec[]) {
    if (specs.length === 0) throw new Error('ParameterSet: no parameters given');
    const rt = runtime();
    const align = Math.max(ARENA_ALIGN, rt.limits.minStorageBufferOffsetAlignment);
    const slots: ParameterSlot[] = [];
    let offset = 0;
    specs.forEach(({ name, shape, init }, k) => {
      if (typeof name !== 'string' || name.length === 0) throw new Error(`ParameterSet: parameter ${k} has no name`);
      if (this.indexByName.has(name)) throw new Error(`ParameterSet: duplicate parameter name '${name}'`);
      assertShape(`ParameterSet '${name}'`, shape);
      const size = sizeOf(shape);
      if (init !== undefined && init.length !== size) {
        throw new Error(`ParameterSet: '${name}' has ${init.length} initial values for shape ${fmt(shape)} (${size} elements)`);
      }
      offset = Math.ceil(offset / align) * align;
      slots.push({ name, shape: Object.freeze([...shape]), offsetBytes: offset, size });
      this.indexByName.set(name, k);
      offset += size * 4;
    });
    this.slots = Object.freeze(slots);
    this.byteLength = offset;

    const host = new Float32Array(offset / 4);
    specs.forEach(({ init }, k) => {
      if (init === undefined) return;
      for (let j = 0; j < init.length; j++) {
        if (Number.isNaN(init[j])) throw new Error(`ParameterSet: '${specs[k].name}' initial value ${j} is NaN`);
      }
      host.set(init, slots[k].offsetBytes / 4);
    });
    this.arena = new Storage(rt.alloc(offset));
    rt.write(this.arena.buffer, host);
    this.views = slots.map((s, k) => {
      const t = keep(new Tensor(this.arena, s.shape, 'f32', s.offsetBytes)).requireGrad();
      t.op = `param:${s.name}`;
      this.indexByTensor.set(t, k);
      return t;
    });
  }

  /** A set holding copies (made on the GPU) of the given tensors. */
  static fromTensors(named: Record<string, Tensor>): ParameterSet {
    const entries = Object.entries(named);
    for (const [name, t] of entries) {
      if (t.dtype !== 'f32') throw new Error(`ParameterSet.fromTensors: '${name}' is ${t.dtype}, expected f32`);
    }
    const set = new ParameterSet(entries.map(([name, t]) => ({ name, shape: t.shape })));
    const rt = runtime();
    entries.forEach(([, t], k) => rt.copy(t.buffer, t.byteOffset, set.buffer, set.slots[k].offsetBytes, t.size * 4));
    return set;
  }

  get buffer(): GPUBuffer {
    return this.arena.buffer;
  }

  get count(): number {
    return this.slots.length;
  }

  /** Total parameter elements (padding excluded). */
  get numel(): number {
    return this.slots.reduce((n, s) => n + s.size, 0);
  }

  get names(): string[] {
    return this.slots.map((s) => s.name);
  }

  get tensors(): Tensor[] {
    return [...this.views];
  }

  has(name: string): boolean {
    return this.indexByName.has(name);
  }

  get(name: string): Tensor {
    const k = this.indexByName.get(name);
    if (k === undefined) throw new Error(`ParameterSet: no parameter named '${name}' (have ${this.names.join(', ')})`);
    return this.views[k];
  }

  /** Position of a parameter tensor in the set, or -1. */
  indexOf(t: Tensor): number {
    return this.indexByTensor.get(t) ?? -1;
  }

  entries(): [string, Tensor][] {
    return this.slots.map((s, k) => [s.name, this.views[k]]);
  }

  /** Downloads every parameter (for checkpoints). */
  async state(): Promise<Record<string, Float32Array>> {
    return readSlots(this.buffer, this.slots);
  }

  /** Overwrites every parameter from host arrays keyed by name (all names, exact sizes). */
  loadState(state: Record<string, ArrayLike<number>>): void {
    runtime().write(this.buffer, packSlots('ParameterSet.loadState', this.slots, this.byteLength, state));
  }

  /** Drops the `.grad` accumulated by `backward()` on every parameter. */
  zeroGrad(): void {
    for (const t of this.views) {
      t.grad?.dispose();
      t.grad = null;
    }
  }

  dispose(): void {
    this.zeroGrad();
    for (const t of this.views) t.dispose();
  }
}

async function readSlots(buffer: GPUBuffer, slots: readonly ParameterSlot[]): Promise<Record<string, Float32Array>> {
  const data = await runtime().read(slots.map((s) => ({ buffer, offset: s.offsetBytes, bytes: s.size * 4 })));
  return Object.fromEntries(slots.map((s, k) => [s.name, new Float32Array(data[k])]));
}

/** One host image of an arena from per-name arrays; rejects missing, unknown and wrongly sized entries. */
function packSlots(what: string, slots: readonly ParameterSlot[], byteLength: number, state: Record<string, ArrayLike<number>>): Float32Array {
  const known = new Set(slots.map((s) => s.name));
  const unknown = Object.keys(state).filter((n) => !known.has(n));
  if (unknown.length) throw new Error(`${what}: unknown parameter(s) ${unknown.join(', ')}`);
  const host = new Float32Array(byteLength / 4);
  for (const s of slots) {
    const values = state[s.name];
    if (values === undefined) throw new Error(`${what}: missing parameter '${s.name}'`);
    if (values.length !== s.size) throw new Error(`${what}: '${s.name}' has ${values.length} values, expected ${s.size} for shape ${fmt(s.shape)}`);
    host.set(values, s.offsetBytes / 4);
  }
  return host;
}

export interface AdamOptions {
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** AdamW: decay the parameter by lr * weightDecay instead of adding weightDecay * param to the gradient. */
  decoupledWeightDecay?: boolean;
}

/** Resumable optimiser state: per-parameter step counts and moments, keyed by parameter name. */
export interface AdamState {
  steps: Record<string, number>;
  m: Record<string, Float32Array>;
  v: Record<string, Float32Array>;
}

/** Gradients for `Adam.step`: keyed by parameter tensor (extra keys ignored) or listed in parameter order. */
export type GradientInput = Map<Tensor, Tensor> | readonly (Tensor | null | undefined)[];

/**
 * Adam with bias correction (torch.optim.Adam semantics and defaults). Parameters with no gradient in a step
 * are skipped entirely, moments included, and each keeps its own step count for bias correction.
 */
export class Adam {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly decoupledWeightDecay: boolean;
  private learningRate: number;
  private readonly steps: number[];
  private readonly grads: GPUBuffer;
  private readonly m: GPUBuffer;
  private readonly v: GPUBuffer;
  private readonly table: GPUBuffer;
  private disposed = false;

  constructor(readonly params: ParameterSet, opts: AdamOptions = {}) {
    const { lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0, decoupledWeightDecay = false } = opts;
    for (const [name, value] of [['beta1', beta1], ['beta2', beta2]] as const) {
      if (!(value >= 0 && value < 1)) throw new Error(`Adam: ${name} must be in [0, 1), got ${value}`);
    }
    if (!(eps >= 0) || !Number.isFinite(eps)) throw new Error(`Adam: eps must be finite and >= 0, got ${eps}`);
    if (!(weightDecay >= 0) || !Number.isFinite(weightDecay)) throw new Error(`Adam: weightDecay must be finite and >= 0, got ${weightDecay}`);
    this.beta1 = beta1;
    this.beta2 = beta2;
    this.eps = eps;
    this.weightDecay = weightDecay;
    this.decoupledWeightDecay = decoupledWeightDecay;
    this.learningRate = Adam.checkLr(lr);
    this.steps = params.slots.map(() => 0);
    const rt = runtime();
    this.grads = rt.alloc(params.byteLength);
    this.m = rt.alloc(params.byteLength);
    this.v = rt.alloc(params.byteLength);
    this.table = rt.alloc(params.count * ADAM_SEGMENT_BYTES);
    const zeros = new Float32Array(params.byteLength / 4);
    rt.write(this.m, zeros);
    rt.write(this.v, zeros);
  }

  private static checkLr(lr: number): number {
    if (!(lr >= 0) || !Number.isFinite(lr)) throw new Error(`Adam: learning rate must be finite and >= 0, got ${lr}`);
    return lr;
  }

  get lr(): number {
    return this.learningRate;
  }

  /** Changing the learning rate (schedules) reuses the same pipeline: it is passed as data. */
  set lr(value: number) {
    this.learningRate = Adam.checkLr(value);
  }

  /** Step count of the named parameter (steps in which it had a gradient). */
  stepsOf(name: string): number {
    return this.steps[this.params.names.indexOf(name)] ?? 0;
  }

  /**
   * One update of every parameter that has a gradient: copies the gradients into the gradient arena, then runs
   * one fused dispatch. Without an argument, uses each parameter's `.grad` (from `backward()`).
   */
  step(grads?: GradientInput): void {
    if (this.disposed) throw new Error('Adam.step: optimiser was disposed');
    const { params } = this;
    const views = params.tensors;
    if (Array.isArray(grads) && grads.length !== views.length) {
      throw new Error(`Adam.step: ${grads.length} gradients for ${views.length} parameters`);
    }
    const chosen = params.slots.map((slot, k) => {
      const g = grads === undefined ? views[k].grad : grads instanceof Map ? grads.get(views[k]) : (grads as readonly (Tensor | null | undefined)[])[k];
      if (g && (g.dtype !== 'f32' || g.size !== slot.size)) {
        throw new Error(`Adam.step: gradient ${fmt(g.shape)} (${g.dtype}) does not match parameter '${slot.name}' ${fmt(slot.shape)}`);
      }
      return g ?? null;
    });
    const rt = runtime();
    if (!chosen.some((g) => g)) return;
    params.slots.forEach((slot, k) => {
      const g = chosen[k];
      if (g) rt.copy(g.buffer, g.byteOffset, this.grads, slot.offsetBytes, slot.size * 4);
    });
    // The step counts and the learning rate are read when the table is made: inside a compiled function, at
    // every replay, so bias corrections and schedules advance with each replayed step.
    rt.hostWrite(this.table, () => {
      const segments: AdamSegment[] = params.slots.map((slot, k) => {
        const segment = { start: slot.offsetBytes / 4, size: 0, stepSize: 0, invSqrtBias2: 0 };
        if (!chosen[k]) return segment;
        const t = ++this.steps[k];
        return { ...segment, size: slot.size, stepSize: this.learningRate / (1 - this.beta1 ** t), invSqrtBias2: 1 / Math.sqrt(1 - this.beta2 ** t) };
      });
      return new Uint8Array(packAdamSegments(segments));
    });
    const decoupled = this.decoupledWeightDecay;
    adamKernel(
      { params: params.buffer, grads: this.grads, m: this.m, v: this.v, table: this.table, elements: params.byteLength / 4, segments: params.count },
      {
        beta1: this.beta1,
        beta2: this.beta2,
        eps: this.eps,
        l2: decoupled ? 0 : this.weightDecay,
        decayFactor: decoupled ? 1 - this.learningRate * this.weightDecay : 1,
      },
    );
  }

  async exportState(): Promise<AdamState> {
    const { slots } = this.params;
    const [m, v] = await Promise.all([readSlots(this.m, slots), readSlots(this.v, slots)]);
    return { steps: Object.fromEntries(slots.map((s, k) => [s.name, this.steps[k]])), m, v };
  }

  importState(state: AdamState): void {
    const { slots, byteLength } = this.params;
    const steps = slots.map((s) => {
      const t = state.steps[s.name];
      if (!Number.isSafeInteger(t) || t < 0) throw new Error(`Adam.importState: step count of '${s.name}' must be a non-negative integer, got ${t}`);
      return t;
    });
    const m = packSlots('Adam.importState (m)', slots, byteLength, state.m);
    const v = packSlots('Adam.importState (v)', slots, byteLength, state.v);
    const rt = runtime();
    rt.write(this.m, m);
    rt.write(this.v, v);
    steps.forEach((t, k) => (this.steps[k] = t));
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const rt = runtime();
    for (const b of [this.grads, this.m, this.v, this.table]) rt.release(b);
  }
}
