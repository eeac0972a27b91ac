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
import { Tensor, Storage, runtime, type Shape, type Deferred } from '../backend/tensor.js';
import { program, flatIndex, type UniformDecl, type BindingDecl } from '../backend/program.js';
import { STABLE_WGSL } from './activation.js';
import { UNARY_OPS, BINARY_OPS, type UnaryOp, type BinaryOp } from './pointwise.js';
import { sizeOf, stridesOf } from '../core/shape.js';

const WG = 256;
/** Axes of the output after merging; tensors have at most this many axes that are not merged away. */
const MAX_RANK = 8;
/** Nodes an expression may hold before its operands are computed first (bounds compile time and recomputation). */
export const MAX_NODES = 48;

interface Leaf {
  kind: 'leaf';
  storage: Storage;
  /** An i32 buffer (labels), read as f32 values. */
  int: boolean;
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
/**
 * Index maps, computing nothing: `slice` reads its argument at c + begin; `pad` at c - begin, zero where that
 * falls outside the argument (a slice's gradient, a concat's parts); `permute` reads it with its axes permuted
 * (out axis k is the argument's axis perm[k]); `split` is a reshape that splits axes into runs of axes and adds
 * or drops size-1 axes, so that each of the argument's coordinates is a linear combination of the out ones.
 */
interface View {
  kind: 'slice' | 'pad' | 'permute' | 'split';
  args: [Expr];
  begin: readonly number[];
  perm: readonly number[];
  /** split: for each axis of the argument, the out axes it is split into (none for a size-1 axis). */
  groups: readonly (readonly number[])[];
  shape: Shape;
}
type Expr = Leaf | Node | View;

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
  return `${id}@${l.offset}:${l.shape.join('x')}${l.int ? 'i32' : ''}`;
}

/**
 * The buffer a group of deferred values share once one of them is computed: a value and its reshapes (the same
 * elements under another shape) are computed once, whichever is needed first.
 */
class Shared {
  storage: Storage | null = null;
  holders = 0;
}

/** The deferred values of one fused tensor: its expression, holding a reference to every buffer it reads. */
class FusedValue implements Deferred {
  readonly inputs: Leaf[];
  private held = true;
  private owner: Tensor | null = null;
  private readonly force = () => void this.owner?.sharedStorage;

  constructor(
    readonly expr: Exclude<Expr, Leaf>,
    readonly shared = new Shared(),
  ) {
    shared.holders++;
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

  realize(): Storage {
    const shared = this.shared;
    if (!shared.storage) {
      const out = runtime().alloc(sizeOf(this.expr.shape) * 4);
      dispatchFused(this.expr, this.inputs, out);
      shared.storage = new Storage(out);
      shared.storage.retain();
    }
    // Retained for the tensor taking it, before the group may let go of its own reference.
    const storage = shared.storage;
    storage.retain();
    this.release();
    return storage;
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
    // The group's own reference; each tensor that took the storage holds its own.
    if (--this.shared.holders === 0) this.shared.storage?.drop();
  }
}

/** The expression of a tensor's values: its deferred expression, or the tensor itself as an input. */
function operand(t: Tensor, inline: boolean): Expr {
  const d = t.deferred;
  if (inline && d instanceof FusedValue) return d.expr;
  return { kind: 'leaf', storage: t.sharedStorage, offset: t.byteOffset / 4, shape: t.shape, int: t.dtype === 'i32' };
}

/** Inputs a fused kernel may bind: the adapter's storage-buffer limit less the output. */
const maxLeaves = () => Math.max(1, Math.min(8, runtime().limits.maxStorageBuffersPerShaderStage - 1));

/** A deferred tensor of `shape` whose expression `make` builds over the operands' expressions. */
function build(xs: Tensor[], shape: Shape, make: (args: Expr[]) => Exclude<Expr, Leaf>): Tensor {
  // Inline every operand whose expression keeps the whole within bounds; compute the others first, the largest
  // first (it shrinks the expression most). An operand computed meanwhile (the same tensor twice) is a leaf.
  const inline = xs.map(() => true);
  const args = () => xs.map((t, i) => operand(t, inline[i]));
  let es = args();
  while (nodeCount(make(es)) > MAX_NODES || leavesOf(make(es)).size > maxLeaves()) {
    const sizes = es.map((e, i) => (inline[i] && e.kind !== 'leaf' ? nodeCount(e) : -1));
    const j = sizes.indexOf(Math.max(...sizes));
    if (sizes[j] < 0) break;
    inline[j] = false;
    es = args();
  }
  return deferred(make(es), shape);
}

/** A tensor whose values are `expr`, computed when first needed (into the buffer of `shared`'s group, if given). */
function deferred(expr: Exclude<Expr, Leaf>, shape: Shape, shared?: Shared): Tensor {
  const value = new FusedValue(expr, shared);
  return value.adopt(new Tensor(value, shape));
}

const map = (kind: 'unary' | 'binary', op: UnaryOp | BinaryOp, shape: Shape, a: number, b: number) => (args: Expr[]): Node => ({ kind, op, args, a, b, shape });
const view = (kind: View['kind'], shape: Shape, begin: readonly number[], perm: readonly number[] = [], groups: number[][] = []) => ([x]: Expr[]): View => ({ kind, args: [x], begin, perm, groups, shape });

export const fuseUnary = (op: UnaryOp, x: Tensor, a: number, b: number): Tensor => build([x], x.shape, map('unary', op, x.shape, a, b));
export const fuseBinary = (op: BinaryOp, x: Tensor, y: Tensor, shape: Shape, a: number, b: number): Tensor => build([x, y], shape, map('binary', op, shape, a, b));
/** x broadcast to `shape` without a copy: each reader indexes x with stride 0 along the broadcast axes. */
export const fuseBroadcast = (x: Tensor, shape: Shape): Tensor => build([x], shape, map('unary', 'identity', shape, 0, 0));
/** x[begin : begin + size] as an index map: readers index x directly. */
export const fuseSlice = (x: Tensor, begin: readonly number[], size: Shape): Tensor => build([x], size, view('slice', size, begin));
/** x placed at `begin` in zeros of `shape` (x's shape fits there), as an index map with a bounds test. */
export const fusePad = (x: Tensor, shape: Shape, begin: readonly number[]): Tensor => build([x], shape, view('pad', shape, begin));
/** x with its axes permuted (out axis k is x's axis perm[k]), as an index map. */
export const fusePermute = (x: Tensor, perm: readonly number[]): Tensor =>
  build([x], perm.map((p) => x.shape[p]), view('permute', perm.map((p) => x.shape[p]), [], perm));
/** The xs joined along `axis`, each starting at `starts[i]`: a sum of pads, one kernel however many parts. */
export function fuseConcat(xs: Tensor[], axis: number, shape: Shape, starts: readonly number[]): Tensor {
  return build(xs, shape, (es) => {
    const parts: Expr[] = es.map((e, i) => view('pad', shape, shape.map((_, k) => (k === axis ? starts[i] : 0)))([e]));
    return parts.slice(1).reduce((acc, p) => map('binary', 'add', shape, 0, 0)([acc, p]), parts[0]) as Exclude<Expr, Leaf>;
  });
}

/**
 * x's deferred values under a new shape of the same size, still deferred, when its expression is elementwise over
 * full-size or single-element inputs (a reshape then commutes with every op in it); otherwise null, and the
 * caller views the computed buffer.
 */
export function fuseReshape(x: Tensor, shape: Shape): Tensor | null {
  const d = x.deferred;
  if (!(d instanceof FusedValue)) return null;
  // Splitting axes (and adding or dropping size-1 ones) keeps every index map affine: any expression takes it.
  const groups = splitGroups(x.shape, shape);
  if (groups) return deferred(view('split', shape, [], [], groups)([d.expr]), shape, d.shared);
  const n = sizeOf(shape);
  const memo = new Map<Expr, Expr | null>();
  const reshaped = (e: Expr): Expr | null => {
    if (memo.has(e)) return memo.get(e)!;
    let r: Expr | null = null;
    if (e.kind === 'leaf') {
      const size = sizeOf(e.shape);
      r = size === n ? { ...e, shape } : size === 1 ? { ...e, shape: [] } : null;
    } else if ((e.kind === 'unary' || e.kind === 'binary') && sizeOf(e.shape) === n) {
      const args = e.args.map(reshaped);
      r = args.every((a) => a !== null) ? { ...e, args: args as Expr[], shape } : null;
    }
    memo.set(e, r);
    return r;
  };
  const expr = reshaped(d.expr);
  return expr && expr.kind !== 'leaf' ? deferred(expr, shape, d.shared) : null;
}

/** For each axis of `from`, the run of axes of `to` it splits into, when `to` refines `from` that way; else null. */
function splitGroups(from: Shape, to: Shape): number[][] | null {
  const groups: number[][] = [];
  let j = 0;
  const skipOnes = () => {
    while (j < to.length && to[j] === 1) j++;
  };
  for (const d of from) {
    if (d === 1) {
      groups.push([]);
      continue;
    }
    skipOnes();
    const run: number[] = [];
    let product = 1;
    while (j < to.length && product < d) {
      if (to[j] !== 1) {
        product *= to[j];
        run.push(j);
      }
      j++;
    }
    if (product !== d) return null;
    groups.push(run);
  }
  skipOnes();
  return j === to.length ? groups : null;
}

// ---------------------------------------------------------------- code generation

/** A node's coordinate along one of its axes as a function of the output's: sum of coef * c[axis], plus shift. */
interface Coord {
  terms: readonly { axis: number; coef: number }[];
  shift: number;
}
type AxisMap = readonly Coord[];
const ZERO: Coord = { terms: [], shift: 0 };
const coordKey = (c: Coord) => `${c.terms.map((t) => `${t.coef}c${t.axis}`).join('+')}+${c.shift}`;

/** How the expression's argument of shape `argShape` is indexed, given the node's own axis map. */
function argMap(e: Exclude<Expr, Leaf>, m: AxisMap, argShape: Shape): AxisMap {
  if (e.kind === 'slice') return m.map((a, k) => ({ terms: a.terms, shift: a.shift + e.begin[k] }));
  if (e.kind === 'pad') return m.map((a, k) => ({ terms: a.terms, shift: a.shift - e.begin[k] }));
  if (e.kind === 'split') {
    return e.groups.map((run) => {
      const terms: { axis: number; coef: number }[] = [];
      let shift = 0;
      let weight = 1;
      for (let j = run.length - 1; j >= 0; j--) {
        const c = m[run[j]];
        for (const t of c.terms) terms.push({ axis: t.axis, coef: t.coef * weight });
        shift += c.shift * weight;
        weight *= e.shape[run[j]];
      }
      return { terms, shift };
    });
  }
  if (e.kind === 'permute') {
    const out: Coord[] = new Array(m.length);
    e.perm.forEach((p, k) => (out[p] = m[k]));
    return out;
  }
  // Right-aligned broadcasting: an argument's size-1 axis always reads its index 0.
  const lead = e.shape.length - argShape.length;
  return argShape.map((d, k) => (d === 1 ? ZERO : m[lead + k]));
}

/** One read of an input: element base + sum_k c_k stride_k of binding `input`, over the output's (unmerged) axes. */
interface Read {
  input: number;
  base: number;
  strides: number[];
  /** Under a pad: the index may fall outside the input (its value is then discarded), so it is clamped. */
  clamp: boolean;
}
/** A pad's bounds test: for each of the padded axes, 0 <= its coordinate < bound. */
type Guard = { coord: Coord; bound: number }[];

type Step =
  | { kind: 'read'; read: number }
  | { kind: 'map'; node: Node; args: number[] }
  | { kind: 'pad'; arg: number; guard: number }
  | { kind: 'zero' };

/** The expression as straight-line steps over the output's coordinates, shared subexpressions once per index map. */
function linearise(root: Exclude<Expr, Leaf>, leaves: Leaf[]) {
  const ids = new Map(leaves.map((l, j) => [leafId(l), j]));
  const steps: Step[] = [];
  const reads: Read[] = [];
  const guards: Guard[] = [];
  const memo = new Map<string, number>();
  const readIndex = new Map<string, number>();
  const exprIds = new Map<Expr, number>();
  const exprId = (e: Expr) => {
    let id = exprIds.get(e);
    if (id === undefined) exprIds.set(e, (id = exprIds.size));
    return id;
  };
  const push = (key: string, s: Step) => {
    const known = memo.get(key);
    if (known !== undefined) return known;
    steps.push(s);
    memo.set(key, steps.length - 1);
    return steps.length - 1;
  };
  const rank = root.shape.length;
  const visit = (e: Expr, m: AxisMap, guarded: boolean): number => {
    const at = `${exprId(e)}|${m.map(coordKey).join(',')}|${guarded}`;
    const known = memo.get(at);
    if (known !== undefined) return known;
    if (e.kind === 'leaf') {
      const st = stridesOf(e.shape);
      const strides = new Array<number>(rank).fill(0);
      let base = 0;
      m.forEach((a, k) => {
        base += a.shift * st[k];
        for (const t of a.terms) strides[t.axis] += t.coef * st[k];
      });
      const input = ids.get(leafId(e))!;
      const rkey = `read ${input}:${base}:${strides.join(',')}:${guarded}`;
      let r = readIndex.get(rkey);
      if (r === undefined) readIndex.set(rkey, (r = reads.push({ input, base, strides, clamp: guarded }) - 1));
      const step = push(rkey, { kind: 'read', read: r });
      memo.set(at, step);
      return step;
    }
    if (e.kind === 'pad') {
      const inner = argMap(e, m, e.args[0].shape);
      const guard: Guard = [];
      let never = false;
      inner.forEach((a, k) => {
        const bound = e.args[0].shape[k];
        if (!a.terms.length) never ||= a.shift < 0 || a.shift >= bound;
        else if (!(e.begin[k] === 0 && bound === e.shape[k])) guard.push({ coord: a, bound });
      });
      if (never) return push(at, { kind: 'zero' });
      if (!guard.length) return memo.set(at, visit(e.args[0], inner, guarded)).get(at)!;
      const arg = visit(e.args[0], inner, true);
      const g = guards.push(guard) - 1;
      return push(at, { kind: 'pad', arg, guard: g });
    }
    if (e.kind === 'slice' || e.kind === 'permute' || e.kind === 'split') return memo.set(at, visit(e.args[0], argMap(e, m, e.args[0].shape), guarded)).get(at)!;
    const args = e.args.map((x) => visit(x, argMap(e, m, x.shape), guarded));
    return push(at, { kind: 'map', node: e as Node, args });
  };
  visit(root, root.shape.map((d, k) => (d === 1 ? ZERO : { terms: [{ axis: k, coef: 1 }], shift: 0 })), false);
  return { steps, reads, guards };
}

/**
 * The output's axes after merging neighbours that every read steps through as one and no bounds test looks at,
 * with size-1 axes dropped: `keep[j]` lists the original axes of merged axis j.
 */
function mergeAxes(shape: Shape, reads: Read[], guards: Guard[]): { shape: number[]; groups: number[][] } {
  const tested = new Set(guards.flatMap((g) => g.flatMap((t) => t.coord.terms.map((x) => x.axis))));
  const merged: number[] = [];
  const groups: number[][] = [];
  shape.forEach((d, k) => {
    if (d === 1) return;
    const last = groups.length - 1;
    const prev = last >= 0 ? groups[last][groups[last].length - 1] : -1;
    if (prev >= 0 && !tested.has(k) && !tested.has(prev) && reads.every((r) => r.strides[prev] === r.strides[k] * d)) {
      merged[last] *= d;
      groups[last].push(k);
    } else {
      merged.push(d);
      groups.push([k]);
    }
  });
  return { shape: merged, groups };
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

function compile(root: Exclude<Expr, Leaf>, leaves: Leaf[], pre = 'f_'): FusedRead {
  const { steps, reads, guards } = linearise(root, leaves);
  const plan = mergeAxes(root.shape, reads, guards);
  const rank = plan.shape.length;
  if (rank > MAX_RANK) throw new Error(`fused elementwise: ${rank} axes after merging exceed ${MAX_RANK}`);
  const axisOf = new Map<number, number>();
  plan.groups.forEach((g, j) => g.forEach((k) => axisOf.set(k, j)));
  // Each read's stride along a merged axis is its stride along the group's innermost axis.
  const strides = reads.map((r) => plan.groups.map((g) => r.strides[g[g.length - 1]]));
  const contiguous = stridesOf(plan.shape);
  const identity = reads.map((r, j) => r.base === 0 && !r.clamp && strides[j].every((s, k) => s === contiguous[k]) && sizeOf(leaves[r.input].shape) === sizeOf(root.shape));
  const strided = reads.map((_, j) => j).filter((j) => !identity[j]);
  const coords = strided.length > 0 || guards.length > 0;

  // The structure (ops, wiring, which reads are strided or clamped, which axes each bounds test looks at, the
  // rank) is the pipeline's key; sizes, offsets, strides and the ops' scalars are uniforms.
  const structure: string[] = [];
  const params: number[] = [];
  const guardValues: number[] = [];
  // Per padded axis: its shift, its bound, then the coefficient of each output axis its coordinate combines.
  const guardAxes = guards.map((g) => g.map((t) => t.coord.terms.map((x) => axisOf.get(x.axis)!)));
  for (const g of guards) for (const t of g) guardValues.push(t.coord.shift >>> 0, t.bound, ...t.coord.terms.map((x) => x.coef));
  steps.forEach((s) => {
    if (s.kind === 'read') structure.push(`L${s.read}`);
    else if (s.kind === 'zero') structure.push('0');
    else if (s.kind === 'pad') structure.push(`pad(v${s.arg},g${s.guard})`);
    else {
      structure.push(`${s.node.op}(${s.args.map((a) => `v${a}`).join(',')})`);
      params.push(s.node.a, s.node.b);
    }
  });
  const readKey = reads.map((r, j) => `x${r.input}${identity[j] ? 'i' : r.clamp ? 'c' : 's'}${leaves[r.input].int ? 'n' : ''}`).join(',');
  const guardKey = guardAxes.map((g) => g.map((t) => t.join('+')).join('.')).join(',');

  const axes = { array: 'u32', length: MAX_RANK } as const;
  const uniforms: UniformDecl = {};
  const values: Record<string, number | number[]> = {};
  if (coords) {
    uniforms[`${pre}shape`] = axes;
    values[`${pre}shape`] = plan.shape;
  }
  for (const j of strided) {
    uniforms[`${pre}s${j}`] = axes;
    values[`${pre}s${j}`] = strides[j];
  }
  if (strided.length) {
    uniforms[`${pre}o`] = { array: 'u32', length: strided.length };
    values[`${pre}o`] = strided.map((j) => reads[j].base >>> 0);
  }
  if (guardValues.length) {
    uniforms[`${pre}g`] = { array: 'u32', length: guardValues.length };
    values[`${pre}g`] = guardValues;
  }
  uniforms[`${pre}p`] = { array: 'f32', length: Math.max(1, params.length) };
  values[`${pre}p`] = params.length ? params : [0];
  // The WGSL text is wanted only when the pipeline cache misses; the key and values above are needed every dispatch.
  const prelude = () => {
    const at = (a: string, k: number) => `u.${a}[${k >> 2}][${k & 3}]`;
    const ops = new Map<string, string>();
    for (const s of steps) {
      if (s.kind !== 'map') continue;
      const e = s.node;
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
    if (coords) {
      lines.push('  var rem = i;');
      for (let k = rank - 1; k >= 0; k--) lines.push(`  let c${k} = rem % ${at(`${pre}shape`, k)}; rem = rem / ${at(`${pre}shape`, k)};`);
    }
    // u32 arithmetic wraps: a negative base or shift (under a pad) is stored as its two's complement.
    let g0 = 0;
    guardAxes.forEach((g, p) => {
      const tests = g.map((axes) => {
        const [shift, bound] = [at(`${pre}g`, g0), at(`${pre}g`, g0 + 1)];
        const sum = axes.map((k, t) => `c${k} * ${at(`${pre}g`, g0 + 2 + t)}`).join(' + ');
        g0 += 2 + axes.length;
        return `${sum} + ${shift} < ${bound}`;
      });
      lines.push(`  let g${p} = ${tests.join(' && ')};`);
    });
    const offsets = new Map(strided.map((j, o) => [j, o]));
    const readExpr = (j: number) => {
      const r = reads[j];
      const cast = (v: string) => (leaves[r.input].int ? `f32(${v})` : v);
      if (identity[j]) return cast(`${pre}x${r.input}[i]`);
      const idx = [at(`${pre}o`, offsets.get(j)!), ...plan.shape.map((_, k) => `c${k} * ${at(`${pre}s${j}`, k)}`)].join(' + ');
      return cast(`${pre}x${r.input}[${r.clamp ? `min(${idx}, arrayLength(&${pre}x${r.input}) - 1u)` : idx}]`);
    };
    let p = 0;
    steps.forEach((s, t) => {
      if (s.kind === 'read') lines.push(`  let v${t} = ${readExpr(s.read)};`);
      else if (s.kind === 'zero') lines.push(`  let v${t} = 0.0;`);
      else if (s.kind === 'pad') lines.push(`  let v${t} = select(0.0, v${s.arg}, g${s.guard});`);
      else {
        const fn = `${pre}${s.node.kind === 'unary' ? 'u' : 'b'}_${s.node.op}`;
        lines.push(`  let v${t} = ${fn}(${s.args.map((a) => `v${a}`).join(', ')}, ${at(`${pre}p`, p)}, ${at(`${pre}p`, p + 1)});`);
        p += 2;
      }
    });
    lines.push(`  return v${steps.length - 1};`);
    return `${[...ops.values()].join('\n')}\nfn ${pre}fused(i: u32) -> f32 {\n${lines.join('\n')}\n}`;
  };
  return {
    key: `${structure.join(';')}:${readKey}:${guardKey}:r${rank}`,
    inputs: leaves.map((l, j) => (l.int ? { name: `${pre}x${j}`, type: 'i32' } : `${pre}x${j}`)),
    uniforms,
    prelude,
    bindings: leaves.map((l) => ({ buffer: l.storage.buffer, offset: l.offset * 4, size: sizeOf(l.shape) * 4 })),
    values,
  };
}

/** The elementwise kernel of an expression: out[i] = fused(i). */
function dispatchFused(root: Exclude<Expr, Leaf>, leaves: Leaf[], out: GPUBuffer): void {
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
 * Whether matmul and conv read a deferred operand through its expression. They read each operand value many
 * times (once per output tile or tap), recomputing the expression as often. On a GPU that is cheaper than the
 * dispatch and the round trip through memory it saves. On a software renderer, where loads bound these kernels,
 * it is not: there the operand is computed first (GFZ compact training step on llvmpipe, 2026-12-02: 330 ms with
 * conv prologues against 291 ms without fusion on an AMD EPYC; 103 ms with matmul prologues against 94 ms without
 * on an Intel Xeon, `npm run bench:profile -- --model gfz --task train`).
 */
export const heavyPrologue = () => runtime().kernelProfile === 'gpu';

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
