/// <reference types="@webgpu/types" />
// The engine in Node: its surface (src/engine.ts), with Dawn (the `webgpu` package) as the device provider.
import { setDeviceProvider } from './autograd/tensor.js';
import { acquireDevice, type Backend } from './device.js';

export * from './engine.js';
export { acquireDevice, parseBackend, NoAdapterError, type Backend } from './device.js';

setDeviceProvider((opts) => acquireDevice({ backend: opts.backend as Backend | undefined }));
