// Compiled functions: a function of tensors is traced once per input signature (shapes, dtypes, number of seeds)
// into a recording (src/backend/runtime.ts): its buffers come from one arena planned by liveness, its bind groups
// and uniforms are built once, and each call replays it as one command buffer with no readback inside. Seeds are
// arguments: the trace sees tags, and the recording recomputes every key derived from them at each replay
// (src/core/dynamic.ts). Host state read through `Runtime.hostWrite` (Adam's step counts, its learning rate) is
// read anew at each replay; any other host value the function computes is fixed when it is traced.
import { Tensor, runtime, keep, tidy, fmt, type DType, type Shape } from './tensor.js';
import { assertSeed } from './rng.js';
import { beginSeedTrace, endSeedTrace, seedTag } from '../core/dynamic.js';
import type { Recording } from '../backend/runtime.js';

/** The traced function: tensors in (arena-backed copies of the call's), seeds in (tags while tracing), tensors out. */
export type TracedFunction = (inputs: Tensor[], seeds: number[]) => Tensor | readonly Tensor[];

export interface CompileOptions {
  /** Named in errors. */
  name?: string;
  /** Signatures kept before the least recently used trace is freed (default 8). */
  maxTraces?: number;
}

export interface CompiledFunction {
  /**
   * Runs the function on `inputs` with `seeds` (integers in [0, 2^53)): traced on the first call with this
   * signature, replayed afterwards. Returns fresh tensors (not differentiable further), which outlive later calls.
   */
  (inputs: readonly Tensor[], seeds?: readonly number[]): Tensor[];
  /** Traces made so far (one per signature met, more after evictions). */
  readonly traces: number;
  /** Signatures currently traced. */
  readonly signatures: string[];
  /** Bytes held by the traces' arenas. */
  readonly arenaBytes: number;
  /** Frees every trace. */
  dispose(): void;
}

interface Trace {
  recording: Recording;
  slots: Tensor[];
  /** `own`: made by the trace (disposed with it); otherwise a tensor from outside the function, left alone. */
  outputs: { tensor: Tensor; own: boolean; buffer: GPUBuffer; offset: number; bytes: number; shape: Shape; dtype: DType }[];
  arenaBytes: number;
}

const asList = (r: Tensor | readonly Tensor[]): Tensor[] => (r instanceof Tensor ? [r] : [...r]);

export function compile(fn: TracedFunction, opts: CompileOptions = {}): CompiledFunction {
  const name = opts.name ?? (fn.name || 'compiled function');
  const maxTraces = opts.maxTraces ?? 8;
  if (!Number.isInteger(maxTraces) || maxTraces < 1) throw new Error(`compile: maxTraces must be a positive integer, got ${maxTraces}`);
  const traces = new Map<string, Trace>();
  let made = 0;
  let disposed = false;

  const free = (t: Trace) => {
    for (const s of t.slots) s.dispose();
    for (const o of t.outputs) if (o.own) o.tensor.dispose();
    runtime().disposeRecording(t.recording);
  };

  const trace = (inputs: readonly Tensor[], seedCount: number): Trace => {
    const rt = runtime();
    const recording = rt.beginRecording();
    const slots: Tensor[] = [];
    beginSeedTrace();
    try {
      for (const t of inputs) slots.push(keep(new Tensor(rt.alloc(t.size * 4), t.shape, t.dtype)).requireGrad(t.requiresGrad));
      const tags = Array.from({ length: seedCount }, (_, i) => seedTag(i));
      const result = tidy(() => asList(fn(slots, tags)));
      if (recording.failure) throw recording.failure;
      const outputs = result.map((t, i) => {
        if (!(t instanceof Tensor)) throw new Error(`${name}: output ${i} is not a tensor`);
        const own = recording.owned.includes(t.buffer);
        if (own) keep(t);
        return { tensor: t, own, buffer: t.buffer, offset: t.byteOffset, bytes: t.size * 4, shape: t.shape, dtype: t.dtype };
      });
      rt.endRecording(recording);
      const arenaBytes = recording.owned.reduce((n, b) => n + b.size, 0);
      return { recording, slots, outputs, arenaBytes };
    } catch (e) {
      for (const s of slots) s.dispose();
      rt.disposeRecording(recording);
      throw e;
    } finally {
      endSeedTrace();
    }
  };

  const call = (inputs: readonly Tensor[], seeds: readonly number[] = []): Tensor[] => {
    if (disposed) throw new Error(`${name}: called after dispose`);
    if (!Array.isArray(inputs)) throw new Error(`${name}: inputs must be an array of tensors`);
    inputs.forEach((t, i) => {
      if (!(t instanceof Tensor)) throw new Error(`${name}: input ${i} is not a tensor`);
      if (t.disposed) throw new Error(`${name}: input ${i} ${fmt(t.shape)} was disposed`);
    });
    seeds.forEach((s, i) => assertSeed(name, s, `seed ${i}`));
    const rt = runtime();
    // Called while another function is traced, its ops join that trace; with compiling off, they run eagerly.
    if (rt.tracing || !rt.compiling) {
      return tidy(() => asList(fn([...inputs], [...seeds])));
    }
    const signature = `${inputs.map((t) => `${t.dtype}${fmt(t.shape)}`).join(' ')} | ${seeds.length} seeds`;
    let t = traces.get(signature);
    if (t) traces.delete(signature);
    else {
      t = trace(inputs, seeds.length);
      made++;
      if (traces.size >= maxTraces) {
        const [oldest, victim] = traces.entries().next().value!;
        traces.delete(oldest);
        free(victim);
      }
    }
    traces.set(signature, t);
    const bindings = inputs.map((x, i) => ({ from: x.binding, to: t!.slots[i].buffer }));
    const buffers = rt.replay(t.recording, bindings, seeds, t.outputs);
    return buffers.map((b, i) => new Tensor(b, t!.outputs[i].shape, t!.outputs[i].dtype));
  };

  return Object.defineProperties(call, {
    traces: { get: () => made },
    signatures: { get: () => [...traces.keys()] },
    arenaBytes: { get: () => [...traces.values()].reduce((n, t) => n + t.arenaBytes, 0) },
    dispose: {
      value: () => {
        if (disposed) return;
        disposed = true;
        for (const t of traces.values()) free(t);
        traces.clear();
      },
    },
  }) as CompiledFunction;
}
