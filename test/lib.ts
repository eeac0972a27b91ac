// Tests import the engine through one module so they exercise the public surface.
export * from '../src/index.js';
export type { Runtime } from '../src/backend/runtime.js';
