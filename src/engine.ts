/// <reference types="@webgpu/types" />
// The engine's public surface, the same in Node and in a browser; src/index.ts and src/browser.ts add the
// device acquisition of each.
export { init, shutdown, runtime, tidy, keep, noGrad, readAll, setDeviceProvider, Tensor, type Shape, type DType } from './autograd/tensor.js';
export { backward, gradients, grad, valueAndGrad } from './autograd/tape.js';
export * from './autograd/ops/index.js';
export { Rng } from './autograd/rng.js';
export { compile, type CompiledFunction, type CompileOptions, type TracedFunction } from './autograd/compile.js';
export { ParameterSet, Adam, type ParameterSpec } from './autograd/optim.js';
export { LIMIT_KEYS, type AcquiredDevice, type DeviceProvider } from './backend/gpu.js';
