// Kernels described, not hand-assembled (after TensorFlow.js's webgpu_program.ts): a kernel declares its
// storage inputs and outputs, its uniforms by name and type, its workgroup size and its body; `program` writes
// the bindings, the uniform struct and the entry point, packs the uniforms by name in the struct's layout, and
// builds the WGSL only when the runtime's pipeline cache misses. Binding 0 holds the uniforms (when there are
// any), then the inputs in order (read), then the outputs (read_write), as Runtime.dispatch binds them.
import { runtime } from './tensor.js';
import { GROUP_INDEX_WGSL, type Dispatch, type KernelSource, type UniformPatch } from './runtime.js';
import type { SeedResolver } from '../core/dynamic.js';

/** A scalar, or an `array<vec4<T>, ceil(length / 4)>` of `length` scalars (element k is `u.name[k >> 2][k & 3]`). */
export type UniformType = 'u32' | 'i32' | 'f32' | { array: 'u32' | 'i32' | 'f32'; length: number };
export type UniformDecl = Record<string, UniformType>;
export type UniformValues<U extends UniformDecl> = { [K in keyof U]: U[K] extends string ? number : ArrayLike<number> };

/** A storage binding: its name in WGSL and its element type (default f32). */
export type BindingDecl = string | { name: string; type: string };

export interface KernelDecl<U extends UniformDecl = UniformDecl> {
  /** Reported in errors and profiles (e.g. 'unary.exp'). */
  name: string;
  /** Pipeline cache key: the name plus every compile-time choice that changes the WGSL. */
  key: string;
  inputs: readonly BindingDecl[];
  outputs: readonly BindingDecl[];
  uniforms?: U;
  workgroupSize: number | readonly [number, number?, number?];
  /**
   * Uses subgroup operations (only where `runtime().subgroups`): the module enables them and the entry point
   * has `sgid` (subgroup_invocation_id) and `sgsize` (subgroup_size) in scope.
   */
  subgroups?: boolean;
  /** WGSL before the entry point: helper functions, workgroup memory, constants, extra structs. */
  prelude?: () => string;
  /**
   * The entry point's body. In scope: `u` (the uniforms), every binding by name, and the builtins `wid`
   * (workgroup_id), `nwg` (num_workgroups), `lid` (local_invocation_index), `lid3` (local_invocation_id) and
   * `gid` (global_invocation_id); `groupIndex(wid, nwg)` is the flat index of a folded 1-D dispatch.
   */
  body: () => string;
}

interface Field {
  name: string;
  type: UniformType;
  /** Offset in 4-byte words. */
  offset: number;
  /** Words the field occupies (arrays: 4 per vec4). */
  words: number;
}

const SCALARS = new Set(['u32', 'i32', 'f32']);

/** The uniform struct's layout under WGSL's uniform address-space rules: scalars 4-aligned, vec4 arrays 16. */
export function uniformLayout(decl: UniformDecl): { fields: Field[]; words: number } {
  const fields: Field[] = [];
  let at = 0;
  for (const [name, type] of Object.entries(decl)) {
    if (typeof type === 'string') {
      if (!SCALARS.has(type)) throw new Error(`uniform '${name}': unknown type '${type}'`);
      fields.push({ name, type, offset: at, words: 1 });
      at += 1;
    } else {
      if (!SCALARS.has(type.array) || !Number.isInteger(type.length) || type.length < 1) throw new Error(`uniform '${name}': bad array type ${JSON.stringify(type)}`);
      at = Math.ceil(at / 4) * 4;
      const words = Math.ceil(type.length / 4) * 4;
      fields.push({ name, type, offset: at, words });
      at += words;
    }
  }
  return { fields, words: Math.max(4, Math.ceil(at / 4) * 4) };
}

const wgslType = (t: UniformType) => (typeof t === 'string' ? t : `array<vec4<${t.array}>, ${Math.ceil(t.length / 4)}>`);
const bindingName = (b: BindingDecl) => (typeof b === 'string' ? b : b.name);
const bindingType = (b: BindingDecl) => (typeof b === 'string' ? 'f32' : b.type);

/** The WGSL a declaration describes. */
export function generateWgsl(decl: KernelDecl): string {
  const out: string[] = decl.subgroups ? ['enable subgroups;'] : [];
  let binding = 0;
  const uniforms = decl.uniforms && Object.keys(decl.uniforms).length ? decl.uniforms : null;
  if (uniforms) {
    // Explicit padding members keep the struct's size a multiple of 16 as the writer fills it.
    const { fields, words } = uniformLayout(uniforms);
    const members: string[] = [];
    let at = 0;
    let pad = 0;
    for (const f of fields) {
      while (at < f.offset) {
        members.push(`_pad${pad++}: u32`);
        at++;
      }
      members.push(`${f.name}: ${wgslType(f.type)}`);
      at += f.words;
    }
    while (at < words) {
      members.push(`_pad${pad++}: u32`);
      at++;
    }
    out.push(`struct U { ${members.join(', ')} }`, `@group(0) @binding(${binding++}) var<uniform> u: U;`);
  }
  for (const b of decl.inputs) out.push(`@group(0) @binding(${binding++}) var<storage, read> ${bindingName(b)}: array<${bindingType(b)}>;`);
  for (const b of decl.outputs) out.push(`@group(0) @binding(${binding++}) var<storage, read_write> ${bindingName(b)}: array<${bindingType(b)}>;`);
  out.push(GROUP_INDEX_WGSL);
  if (decl.prelude) out.push(decl.prelude());
  const ws = typeof decl.workgroupSize === 'number' ? [decl.workgroupSize] : decl.workgroupSize.filter((d): d is number => d !== undefined);
  out.push(
    `@compute @workgroup_size(${ws.join(', ')})`,
    'fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32,',
    `        @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(global_invocation_id) gid: vec3<u32>${decl.subgroups ? ',\n        @builtin(subgroup_invocation_id) sgid: u32, @builtin(subgroup_size) sgsize: u32' : ''}) {`,
    decl.body(),
    '}',
  );
  return out.join('\n');
}

/** A declared kernel: its pipeline source and its uniform writer. */
export class Program<U extends UniformDecl = UniformDecl> {
  readonly source: KernelSource;
  private readonly layout: { fields: Field[]; words: number } | null;

  constructor(readonly decl: KernelDecl<U>) {
    this.source = { key: decl.key, name: decl.name, wgsl: () => generateWgsl(decl) };
    this.layout = decl.uniforms && Object.keys(decl.uniforms).length ? uniformLayout(decl.uniforms) : null;
  }

  /** The uniforms' bytes, by name; a missing, unknown or oversized value is an error naming the kernel. */
  pack(values: UniformValues<U> | undefined): ArrayBuffer | undefined {
    if (!this.layout) {
      if (values && Object.keys(values).length) throw new Error(`kernel '${this.decl.name}' declares no uniforms, got ${Object.keys(values).join(', ')}`);
      return undefined;
    }
    const given = (values ?? {}) as Record<string, number | ArrayLike<number>>;
    for (const k of Object.keys(given)) if (!this.layout.fields.some((f) => f.name === k)) throw new Error(`kernel '${this.decl.name}': unknown uniform '${k}'`);
    const buf = new ArrayBuffer(this.layout.words * 4);
    const views = { u32: new Uint32Array(buf), i32: new Int32Array(buf), f32: new Float32Array(buf) };
    for (const f of this.layout.fields) {
      const v = given[f.name];
      if (v === undefined) throw new Error(`kernel '${this.decl.name}': uniform '${f.name}' not given`);
      if (typeof f.type === 'string') {
        if (typeof v !== 'number') throw new Error(`kernel '${this.decl.name}': uniform '${f.name}' is a ${f.type}, got an array`);
        views[f.type][f.offset] = v;
      } else {
        if (typeof v === 'number') throw new Error(`kernel '${this.decl.name}': uniform '${f.name}' is an array, got a number`);
        if (v.length > f.type.length) throw new Error(`kernel '${this.decl.name}': uniform '${f.name}' holds ${f.type.length} values, got ${v.length}`);
        const view = views[f.type.array];
        for (let i = 0; i < v.length; i++) view[f.offset + i] = v[i];
      }
    }
    return buf;
  }

  /**
   * Enqueues one dispatch on the runtime. `replayed` names scalar uniforms that a compiled function recomputes
   * from its seed arguments at every replay (src/core/dynamic.ts); eagerly, `uniforms` holds their values.
   */
  run(d: Omit<Dispatch, 'uniforms' | 'patches'> & { uniforms?: UniformValues<U>; replayed?: Partial<Record<keyof U & string, SeedResolver>> }): void {
    runtime().dispatch(this.source, { inputs: d.inputs, outputs: d.outputs, uniforms: this.pack(d.uniforms), workgroups: d.workgroups, patches: d.replayed && this.patches(d.replayed) });
  }

  private patches(replayed: Partial<Record<string, SeedResolver>>): UniformPatch[] {
    return Object.entries(replayed).map(([name, value]) => {
      const f = this.layout?.fields.find((x) => x.name === name);
      if (!f || typeof f.type !== 'string') throw new Error(`kernel '${this.decl.name}': '${name}' is not a scalar uniform`);
      return { word: f.offset, type: f.type, value: value! };
    });
  }
}

/** The first lines of a 1-D kernel's body: its flat invocation index `name`, returning past `bound`. */
export const flatIndex = (workgroupSize: number, bound: string, name = 'i') =>
  `  let ${name} = groupIndex(wid, nwg) * ${workgroupSize}u + lid;\n  if (${name} >= ${bound}) { return; }`;

const programs = new Map<string, Program>();

/**
 * The declared kernel for `key`, made by `declare` on first use: later calls with the same key build nothing
 * (no declaration, no WGSL).
 */
export function program<U extends UniformDecl>(key: string, declare: () => Omit<KernelDecl<U>, 'key'>): Program<U> {
  let p = programs.get(key);
  if (!p) {
    p = new Program<U>({ ...declare(), key }) as unknown as Program;
    programs.set(key, p);
  }
  return p as unknown as Program<U>;
}
