// Acquires a WebGPU device from a browser's navigator.gpu: the core feature level where the browser offers it,
// else compatibility mode, with every limit at the adapter's own value.
import { describeAdapter, requestFullDevice, type AcquiredDevice } from './backend/gpu.js';

export async function acquireBrowserDevice(gpu: GPU | undefined = (globalThis.navigator as Navigator | undefined)?.gpu): Promise<AcquiredDevice> {
  if (!gpu) throw new Error('No WebGPU in this browser (navigator.gpu is undefined): use a browser with WebGPU enabled, in a secure context (https or localhost)');
  for (const featureLevel of ['core', 'compatibility'] as const) {
    const adapter = await gpu.requestAdapter({ featureLevel, powerPreference: 'high-performance' } as GPURequestAdapterOptions);
    if (!adapter) continue;
    const device = await requestFullDevice(adapter);
    return { device, adapter, backend: 'browser', description: describeAdapter(adapter.info, 'browser', featureLevel), featureLevel };
  }
  throw new Error('No WebGPU adapter: navigator.gpu.requestAdapter() returned null at the core and compatibility feature levels');
}
