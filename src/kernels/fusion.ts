// Fusion of elementwise chains (after jax-js's jit and Burn's fusion backend, by deferral rather than tracing):
// a unary or binary map returns a tensor whose values are an expression over already-computed buffers, not yet
// a dispatch. A map of such a tensor extends the expression; the first thing that needs the values (another
// kernel's binding, a read, an in-place write to one of its inputs) computes the whole expression in one kernel,
// generated per expression structure and cached. Broadcasting is resolved per input: each input's strides over
// the output's shape, adjacent axes merged where every input allows it.
//
// An expression holds a reference to every buffer it reads, so its inputs may be disposed before it is computed;
// the runtime computes it before any dispatch or copy writes into one of those buffers (Adam's in-place update,
// a parameter upload), so it always sees the values it would have seen eagerly. A tensor disposed before its
// values were needed costs nothing.
import { Tensor, Storage, runtime, type Shape, type Deferred } from '../autograd/tensor.js';
import { program, flatIndex, type UniformDecl, type BindingDecl } from './program.js';
import { STABLE_WGSL } from './activation.js';
import { UNARY_OPS, BINARY_OPS, type UnaryOp, type BinaryOp } from './pointwise.js';
import { sizeOf, stridesOf } from '../core/shape.js';

const WG = 256;
/** Axes of the output after merging; tensors have at most this many axes that are not merged away. */
const MAX_RANK = 8;
/** Nodes an expression may hold before its operands are computed first (bounds compile time and recomputation). */
export const MAX_NODES = 32;

interface Leaf {
  kind: 'leaf';
  storage: Storage;
  /** Element offset of the tensor's view into the buffer. */
  offset: number;
  shape: Shape;
}
interface Node {
  kind: 'unary' | 'binary';
  op: UnaryOp | BinaryOp;
  args: Expr[];
  a: number;
  b: number;
  shape: Shape;
}
type Expr = Leaf | Node;

function nodeCount(e: Expr, seen = new Set<Expr>()): number {
  if (seen.has(e)) return 0;
  seen.add(e);
  return e.kind === 'leaf' ? 0 : 1 + e.args.reduce((n, x) => n + nodeCount(x, seen), 0);
}

function leavesOf(e: Expr, out = new Map<string, Leaf>(), seen = new Set<Expr>()): Map<string, Leaf> {
  if (seen.has(e)) return out;
  seen.add(e);
  if (e.kind === 'leaf') {
    const id = leafId(e);
    if (!out.has(id)) out.set(id, e);
  } else for (const x of e.args) leavesOf(x, out, seen);
  return out;
}

const storageIds = new WeakMap<Storage, number>();
let nextStorageId = 0;
function leafId(l: Leaf): string {
  let id = storageIds.get(l.storage);
  if (id === undefined) storageIds.set(l.storage, (id = nextStorageId++));
  return `${id}@${l.offset}:${l.shape.join('x')}`;
}

/** The deferred values of one fused tensor: its expression, holding a reference to every buffer it reads. */
class FusedValue implements Deferred {
  readonly inputs: Leaf[];
  private held = true;
  private owner: Tensor | null = null;
  private readonly force = () => void this.owner?.sharedStorage;

  constructor(readonly expr: Node) {
    this.inputs = [...leavesOf(expr).values()];
    const rt = runtime();
    for (const l of new Set(this.inputs.map((x) => x.storage))) {
      l.retain();
      rt.addReader(l.buffer, this.force);
    }
  }

  adopt(t: Tensor): Tensor {
    this.owner = t;
    return t;
  }

  realize(): GPUBuffer {
    const rt = runtime();
    const out = rt.alloc(sizeOf(this.expr.shape) * 4);
    dispatchFused(this.expr, this.inputs, out);
    this.release();
    return out;
  }

  release(): void {
    if (!this.held) return;
    this.held = false;
    const rt = runtime();
    for (const s of new Set(this.inputs.map((x) => x.storage))) {
      rt.removeReader(s.buffer, this.force);
      s.drop();
    }
    this.owner = null;
  }
}

/** The expression of a tensor's values: its deferred expression, or the tensor itself as an input. */
function operand(t: Tensor, inline: boolean): Expr {
  const d = t.deferred;
  if (inline && d instanceof FusedValue) return d.expr;
  return { kind: 'leaf', storage: t.sharedStorage, offset: t.byteOffset / 4, shape: t.shape };
}

/** Inputs a fused kernel may bind: the adapter's storage-buffer limit less the output. */
const maxLeaves = () => Math.max(1, Math.min(8, runtime().limits.maxStorageBuffersPerShaderStage - 1));

function build(kind: 'unary' | 'binary', op: UnaryOp | BinaryOp, xs: Tensor[], shape: Shape, a: number, b: number): Tensor {
  // Inline every operand whose expression keeps the whole within bounds; compute the others first, the largest
  // first (it shrinks the expression most). An operand computed meanwhile (the same tensor twice) is a leaf.
  const inline = xs.map(() => true);
  const args = () => xs.map((t, i) => operand(t, inline[i]));
  const root = (es: Expr[]): Node => ({ kind, op, args: es, a, b, shape });
  let es = args();
  while (nodeCount(root(es)) > MAX_NODES || leavesOf(root(es)).size > maxLeaves()) {
    const sizes = es.map((e, i) => (inline[i] && e.kind !== 'leaf' ? nodeCount(e) : -1));
    const j = sizes.indexOf(Math.max(...sizes));
    if (sizes[j] < 0) break;
    inline[j] = false;
    es = args();
  }
  const value = new FusedValue(root(es));
  return value.adopt(new Tensor(value, shape));
}

export const fuseUnary = (op: UnaryOp, x: Tensor, a: number, b: number): Tensor => build('unary', op, [x], x.shape, a, b);
export const fuseBinary = (op: BinaryOp, x: Tensor, y: Tensor, shape: Shape, a: number, b: number): Tensor => build('binary', op, [x, y], shape, a, b);
/** x broadcast to `shape` without a copy: each reader indexes x with stride 0 along the broadcast axes. */
export const fuseBroadcast = (x: Tensor, shape: Shape): Tensor => build('unary', 'identity', [x], shape, 0, 0);

// ---------------------------------------------------------------- code generation

/** Each input's strides over the output's axes (right-aligned broadcasting: a size-1 axis has stride 0). */
function broadcastStrides(leaf: Shape, out: Shape): number[] {
  const strides = new Array<number>(out.length).fill(0);
  let stride = 1;
  for (let k = leaf.length - 1; k >= 0; k--) {
    const o = out.length - leaf.length + k;
    if (leaf[k] !== 1) strides[o] = stride;
    stride *= leaf[k];
  }
  return strides;
}

/** Merges adjacent output axes wherever every input steps through them as one (and drops size-1 axes). */
function mergeAxes(out: Shape, strides: number[][]): { shape: number[]; strides: number[][] } {
  const shape: number[] = [];
  const merged: number[][] = strides.map(() => []);
  out.forEach((d, k) => {
    if (d === 1) return;
    const last = shape.length - 1;
    if (last >= 0 && strides.every((s, j) => merged[j][last] === s[k] * d)) {
      shape[last] *= d;
      strides.forEach((s, j) => (merged[j][last] = s[k]));
    } else {
      shape.push(d);
      strides.forEach((s, j) => merged[j].push(s[k]));
    }
  });
  return { shape, strides: merged };
}

/**
 * A deferred tensor's values as a WGSL function `fused(i: u32) -> f32` of its flat index, for a kernel to read
 * instead of a buffer (the elementwise kernel below, and the prologues of reductions and copies). Its bindings
 * and uniforms (prefixed `f_`) go after the kernel's own; `key` names its structure for the pipeline cache.
 */
export interface FusedRead {
  key: string;
  inputs: BindingDecl[];
  uniforms: UniformDecl;
  /** The WGSL of `fused` and its helpers, built on demand (a pipeline-cache miss). */
  prelude: () => string;
  bindings: GPUBufferBinding[];
  values: Record<string, number | number[]>;
}

/** The fused reader of `t`'s values (names prefixed `pre`), or null when they are already in a buffer. */
export function fusedRead(t: Tensor, pre = 'f_'): FusedRead | null {
  const d = t.deferred;
  return d instanceof FusedValue ? compile(d.expr, d.inputs, pre) : null;
}

function compile(root: Node, leaves: Leaf[], pre = 'f_'): FusedRead {
  const n = sizeOf(root.shape);
  const ids = new Map(leaves.map((l, j) => [leafId(l), j]));
  const plan = mergeAxes(root.shape, leaves.map((l) => broadcastStrides(l.shape, root.shape)));
  if (plan.shape.length > MAX_RANK) throw new Error(`fused elementwise: ${plan.shape.length} axes after merging exceed ${MAX_RANK}`);
  const contiguous = stridesOf(plan.shape);
  const rank = plan.shape.length;
  const identity = leaves.map((l, j) => rank === 0 || (sizeOf(l.shape) === n && plan.strides[j].every((s, k) => s === contiguous[k])));
  const broadcast = leaves.map((_, j) => j).filter((j) => !identity[j]);

  // The expression in topological order, shared nodes once; the structure (ops, wiring, which inputs broadcast,
  // the rank) is the pipeline's key, the scalars are uniforms.
  const order: Node[] = [];
  const index = new Map<Expr, string>();
  const structure: string[] = [];
  const params: number[] = [];
  const visit = (e: Expr): string => {
    const known = index.get(e);
    if (known) return known;
    let name: string;
    if (e.kind === 'leaf') name = `L${ids.get(leafId(e))}`;
    else {
      const args = e.args.map(visit);
      name = `v${order.length}`;
      order.push(e);
      structure.push(`${e.op}(${args.join(',')})`);
      params.push(e.a, e.b);
    }
    index.set(e, name);
    return name;
  };
  visit(root);

  const axes = { array: 'u32', length: MAX_RANK } as const;
  const uniforms: UniformDecl = {};
  const values: Record<string, number | number[]> = {};
  if (broadcast.length) {
    uniforms[`${pre}shape`] = axes;
    values[`${pre}shape`] = plan.shape;
  }
  for (const j of broadcast) {
    uniforms[`${pre}s${j}`] = axes;
    values[`${pre}s${j}`] = plan.strides[j];
  }
  uniforms[`${pre}p`] = { array: 'f32', length: params.length };
  values[`${pre}p`] = params;
  // The WGSL text is wanted only when the pipeline cache misses; the key and values above are needed every dispatch.
  const prelude = () => {
    const at = (a: string, k: number) => `u.${a}[${k >> 2}][${k & 3}]`;
    const ops = new Map<string, string>();
    for (const e of order) {
      const fn = `${pre}${e.kind === 'unary' ? 'u' : 'b'}_${e.op}`;
      if (ops.has(fn)) continue;
      ops.set(
        fn,
        e.kind === 'unary'
          ? `fn ${fn}(x: f32, a: f32, b: f32) -> f32 { return ${UNARY_OPS[e.op as UnaryOp]}; }`
          : `fn ${fn}(x: f32, y: f32, a: f32, b: f32) -> f32 { return ${BINARY_OPS[e.op as BinaryOp]}; }`,
      );
    }
    const lines: string[] = [];
    if (broadcast.length) {
      lines.push('  var rem = i;');
      broadcast.forEach((j) => lines.push(`  var k${j} = 0u;`));
      for (let k = rank - 1; k >= 0; k--) {
        lines.push(`  { let c = rem % ${at(`${pre}shape`, k)}; rem = rem / ${at(`${pre}shape`, k)};${broadcast.map((j) => ` k${j} += c * ${at(`${pre}s${j}`, k)};`).join('')} }`);
      }
    }
    leaves.forEach((_, j) => lines.push(`  let L${j} = ${pre}x${j}[${identity[j] ? 'i' : `k${j}`}];`));
    order.forEach((e, t) => {
      const p = (q: number) => at(`${pre}p`, 2 * t + q);
      lines.push(`  let v${t} = ${pre}${e.kind === 'unary' ? 'u' : 'b'}_${e.op}(${e.args.map((x) => index.get(x)!).join(', ')}, ${p(0)}, ${p(1)});`);
    });
    lines.push(`  return v${order.length - 1};`);
    return `${[...ops.values()].join('\n')}\nfn ${pre}fused(i: u32) -> f32 {\n${lines.join('\n')}\n}`;
  };
  return {
    key: `${structure.join(';')}:${identity.map((x) => (x ? 'i' : 'b')).join('')}:r${rank}`,
    inputs: leaves.map((_, j) => `${pre}x${j}`),
    uniforms,
    prelude,
    bindings: leaves.map((l) => ({ buffer: l.storage.buffer, offset: l.offset * 4, size: sizeOf(l.shape) * 4 })),
    values,
  };
}

/** The elementwise kernel of an expression: out[i] = fused(i). */
function dispatchFused(root: Node, leaves: Leaf[], out: GPUBuffer): void {
  const r = compile(root, leaves);
  const n = sizeOf(root.shape);
  program(`fused:${r.key}`, () => ({
    name: 'fused',
    inputs: r.inputs,
    outputs: ['ys'],
    uniforms: { n: 'u32', ...r.uniforms },
    workgroupSize: WG,
    prelude: () => `${STABLE_WGSL}\n${r.prelude()}`,
    body: () => `${flatIndex(WG, 'u.n')}\n  ys[i] = f_fused(i);`,
  })).run({
    inputs: r.bindings,
    outputs: [{ buffer: out, offset: 0, size: n * 4 }],
    uniforms: { n, ...r.values } as never,
    workgroups: runtime().groups1d(Math.ceil(n / WG)),
  });
}

/**
 * What a kernel reads as an input: the tensor's buffer (binding `name`), or, when its values are a fused
 * expression still to be computed, the expression itself (the kernel's prologue), saving the expression's own
 * dispatch and buffer. Kernels read through `load_<name>(p)`; `key` extends the pipeline key. A kernel with
 * several sources composes their preludes with `sourcePrelude`.
 */
export interface Source extends FusedRead {
  fused: boolean;
}

/**
 * `others`: the storage buffers the kernel binds besides this source; a fused source that would exceed the limit
 * is computed first. `fuse` false computes it first anyway (a kernel that reads each value many times).
 */
export function readSource(x: Tensor, name = 'xs', others = 1, fuse = true): Source {
  const rt = runtime();
  const d = rt.fusion && fuse ? x.deferred : null;
  const fits = d instanceof FusedValue && d.inputs.length + others <= rt.limits.maxStorageBuffersPerShaderStage;
  const r = fits ? fusedRead(x, `${name}_`) : null;
  if (!r) return { key: '', fused: false, inputs: [name], uniforms: {}, prelude: () => `fn load_${name}(p: u32) -> f32 { return ${name}[p]; }`, bindings: [x.binding], values: {} };
  return { ...r, key: `:${name}=${r.key}`, fused: true, prelude: () => `${r.prelude()}\nfn load_${name}(p: u32) -> f32 { return ${name}_fused(p); }` };
}

/** The WGSL the sources need: the stable forms once if any is fused, then each source's reader. */
export const sourcePrelude = (...sources: Source[]) => `${sources.some((s) => s.fused) ? STABLE_WGSL : ''}\n${sources.map((s) => s.prelude()).join('\n')}`;
