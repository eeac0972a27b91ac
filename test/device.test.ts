import { describe, it, expect } from 'vitest';
import * as T from './lib.js';
import { NoAdapterError, parseBackend, dawnToggleFlags } from '../src/device.js';
import { kernelProfileFor } from '../src/backend/runtime.js';

describe('device acquisition', () => {
  it('parses backends and rejects unknown ones by name', () => {
    expect(parseBackend(undefined)).toBe('auto');
    expect(parseBackend('OpenGL')).toBe('opengl');
    expect(() => parseBackend('cuda')).toThrow(/Unknown backend 'cuda': expected one of auto, native, opengl/);
  });

  it('picks the kernel profile from the adapter, or from GENCLS_KERNEL_PROFILE', () => {
    expect(kernelProfileFor('llvmpipe-llvm-15-0-6-256-bits- / OpenGL version 4.5 (Core Profile) Mesa 22.3.6 [dawn opengl, compatibility]', '')).toBe('software');
    expect(kernelProfileFor('Google / SwiftShader Device (Subzero) [dawn native, core]', undefined)).toBe('software');
    expect(kernelProfileFor('nvidia / nvidia-h200 / NVIDIA: 580.159.04 580.159.4.0 [dawn native, core]', undefined)).toBe('gpu');
    expect(kernelProfileFor('llvmpipe', 'gpu')).toBe('gpu');
    expect(() => kernelProfileFor('llvmpipe', 'fast')).toThrow(/GENCLS_KERNEL_PROFILE must be one of software, gpu, got 'fast'/);
  });

  it('turns GENCLS_DAWN_TOGGLES into Dawn\'s enable and disable flags, and refuses what is not a toggle name', () => {
    expect(dawnToggleFlags(undefined)).toEqual([]);
    expect(dawnToggleFlags('')).toEqual([]);
    expect(dawnToggleFlags('disable_robustness, skip_validation,-lazy_clear_resource_on_first_use')).toEqual([
      'enable-dawn-features=disable_robustness,skip_validation',
      'disable-dawn-features=lazy_clear_resource_on_first_use',
    ]);
    expect(() => dawnToggleFlags('skip_validation;rm')).toThrow(/GENCLS_DAWN_TOGGLES: 'skip_validation;rm' is not a Dawn toggle name/);
  });

  it('the no-adapter error names what was tried and what to install', () => {
    const e = new NoAdapterError(['native (core): no adapter', 'opengl (compatibility): no adapter']);
    expect(e.message).toMatch(/Tried: native \(core\): no adapter; opengl/);
    expect(e.message).toMatch(/libgl1-mesa-dri/);
    expect(e.message).toMatch(/EGL_PLATFORM=surfaceless/);
  });

  it('acquires an adapter and describes it', async () => {
    const rt = await T.init();
    expect(rt.description).toMatch(/\[dawn (native|opengl), (core|compatibility)\]/);
    expect(rt.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(1 << 27);
  });
});

describe('runtime errors', () => {
  it('one pipeline serves every shape', async () => {
    const a = T.add(T.zeros([3]), T.zeros([3]));
    await a.data();
    const n = T.runtime().pipelineCount;
    for (const s of [[7], [5, 9], [2, 3, 4]]) await T.add(T.ones(s), T.ones(s)).data();
    expect(T.runtime().pipelineCount).toBe(n);
  });

  it('a WGSL compile error surfaces as an error naming the kernel, not as zeros', async () => {
    const rt = T.runtime();
    const out = T.zeros([4]);
    rt.dispatch(
      { key: 'test:broken', name: 'brokenKernel', wgsl: () => '@compute @workgroup_size(1) fn main() { let x: f32 = undefined_thing; }' },
      { inputs: [], outputs: [out.binding], uniforms: new ArrayBuffer(16), workgroups: [1] },
    );
    await expect(out.data()).rejects.toThrow(/kernel 'brokenKernel': failed to compile/);
    // The runtime stays usable afterwards.
    expect(Array.from(await T.add(T.ones([2]), T.ones([2])).data())).toEqual([2, 2]);
  });

  it('device loss rejects pending and later work instead of hanging', async () => {
    const rt = T.runtime();
    const x = T.exp(T.ones([1000]));
    rt.device.destroy();
    await expect(x.data()).rejects.toThrow(/GPU device lost|destroyed|lost/i);
    expect(() => T.exp(T.ones([2]))).toThrow(/GPU device lost/);
    T.shutdown();
    // A fresh device can be acquired afterwards.
    await T.init();
    expect(await T.sum(T.ones([3])).item()).toBe(3);
    T.shutdown();
  });
});
