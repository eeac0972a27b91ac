import { defineConfig } from 'vitest/config';

/**
 * The kernel, gradient, runtime and model files run a second time on Dawn's Vulkan backend over SwiftShader (Debian's
 * chromium package ships it; .ci/setup installs it): the core feature level, timestamp queries and the `gpu`
 * kernel profile, on machines without a GPU. SwiftShader is slow, so only these files run there.
 */
const SWIFTSHADER_FILES = ['subgroups', 'elementwise', 'reduce', 'shape', 'matmul', 'conv', 'adam', 'random', 'autograd', 'composite', 'models', 'profiler', 'program', 'fusion', 'conv-gemm'].map((f) => `test/${f}.test.ts`);

// One GPU device per worker process; Mesa's llvmpipe already uses every core, so files run one at a time.
export default defineConfig({
  test: {
    pool: 'forks',
    poolOptions: { forks: { singleFork: true } },
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    env: { EGL_PLATFORM: 'surfaceless' },
    projects: [
      { extends: true, test: { name: 'default', include: ['test/**/*.test.ts'] } },
      {
        extends: true,
        test: { name: 'swiftshader', include: SWIFTSHADER_FILES, env: { EGL_PLATFORM: 'surfaceless', GENCLS_TEST_ADAPTER: 'swiftshader', GENCLS_KERNEL_PROFILE: 'gpu' } },
      },
    ],
  },
});
