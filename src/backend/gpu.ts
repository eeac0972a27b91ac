// What the engine needs of a WebGPU device, whoever acquired it: Dawn in Node (src/device.ts) or the browser's
// navigator.gpu (src/device-browser.ts). No imports, so the engine below the models runs in either.

export interface AcquiredDevice {
  device: GPUDevice;
  adapter: GPUAdapter;
  /** Which way it was acquired: Dawn's native or OpenGL backend in Node, or a browser's navigator.gpu. */
  backend: 'native' | 'opengl' | 'browser';
  /** Human-readable adapter string recorded in every benchmark and run. */
  description: string;
  featureLevel: 'core' | 'compatibility';
}

// GPUBufferUsage and GPUMapMode bits as literals: Node defines those globals only once Dawn's are installed, and
// the kernels' modules load before that.
export const USAGE_MAP_READ = 0x01;
export const USAGE_MAP_WRITE = 0x02;
export const USAGE_COPY_SRC = 0x04;
export const USAGE_COPY_DST = 0x08;
export const USAGE_UNIFORM = 0x40;
export const USAGE_STORAGE = 0x80;
export const USAGE_QUERY_RESOLVE = 0x200;
export const MAP_READ = 0x1;

/** Acquires a device; `backend` is the Node adapter's choice of Dawn backend, ignored in a browser. */
export type DeviceProvider = (opts: { backend?: string }) => Promise<AcquiredDevice>;

/** The limits the engine requests at the adapter's own values (and `info` prints). */
export const LIMIT_KEYS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBufferBindingSize',
  'maxBindGroups',
  'minStorageBufferOffsetAlignment',
  'minUniformBufferOffsetAlignment',
] as const;

export function describeAdapter(info: GPUAdapterInfo, backend: string, featureLevel: string): string {
  const parts = [info.vendor, info.architecture, info.device, info.description].filter((s) => s && s.length > 0);
  return `${parts.join(' / ') || 'unknown adapter'} [${backend}, ${featureLevel}]`;
}

/**
 * A device with everything the adapter offers: compatibility-mode defaults are tiny, so every limit at the
 * adapter's value; timestamp queries (bench:profile times each dispatch with them; unused, they cost nothing)
 * and subgroups (the row reductions use them, see Runtime.subgroups).
 */
export async function requestFullDevice(adapter: GPUAdapter): Promise<GPUDevice> {
  const requiredLimits: Record<string, number> = {};
  for (const key of LIMIT_KEYS) {
    const v = (adapter.limits as unknown as Record<string, number>)[key];
    if (typeof v === 'number') requiredLimits[key] = v;
  }
  const requiredFeatures = (['timestamp-query', 'subgroups'] as GPUFeatureName[]).filter((f) => adapter.features.has(f));
  return adapter.requestDevice({ requiredLimits, requiredFeatures });
}
