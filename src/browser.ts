/// <reference types="@webgpu/types" />
// The engine in a browser: its surface (src/engine.ts), with navigator.gpu as the device provider. Nothing it
// imports touches a Node module.
import { setDeviceProvider } from './autograd/tensor.js';
import { acquireBrowserDevice } from './device-browser.js';

export * from './engine.js';
export { acquireBrowserDevice } from './device-browser.js';

setDeviceProvider(() => acquireBrowserDevice());
