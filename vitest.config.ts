import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // the install test packs, installs and compiles: minutes, not seconds
    testTimeout: 120_000,
    hookTimeout: 900_000,
    pool: 'forks',
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
