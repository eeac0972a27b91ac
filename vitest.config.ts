import { defineConfig } from 'vitest/config';

// One GPU device per worker process; Mesa's llvmpipe already uses every core, so files run one at a time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    poolOptions: { forks: { singleFork: true } },
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    env: { EGL_PLATFORM: 'surfaceless' },
  },
});
