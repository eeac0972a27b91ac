/// <reference types="@webgpu/types" />
export { init, shutdown, runtime, tidy, keep, noGrad, readAll, Tensor, type Shape, type DType } from './autograd/tensor.js';
export { backward, gradients, grad, valueAndGrad } from './autograd/tape.js';
export * from './autograd/ops/index.js';
export { Rng } from './autograd/rng.js';
export { acquireDevice, parseBackend, NoAdapterError, type Backend } from './device.js';
export { ParameterSet, Adam, type ParameterSpec } from './autograd/optim.js';
