import type { Reporter, TestModule } from 'vitest/node';

/**
 * Ends the run with the line CI reads: `N passed, N failed, N skipped`. A file whose setup fails
 * (a beforeAll, an import) counts as one more failure even when its tests were only skipped, and
 * skipped tests are counted so that none vanish from the line.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>): void {
    let passed = 0;
    let failed = unhandledErrors.length;
    let skipped = 0;
    for (const m of testModules) {
      let failedTests = 0;
      for (const t of m.children.allTests()) {
        const state = t.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failedTests++;
        else skipped++;
      }
      failed += failedTests;
      if (failedTests === 0 && m.state() === 'failed') failed++;
    }
    process.stdout.write(`${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
