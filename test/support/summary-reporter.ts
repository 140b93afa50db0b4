import type { Reporter, TestModule } from 'vitest/node';

/** Ends the run with the line CI reads: `N passed, N failed`. A file that fails to load counts as failed. */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown>): void {
    let passed = 0;
    let failed = unhandledErrors.length;
    for (const m of testModules) {
      let tests = 0;
      for (const t of m.children.allTests()) {
        tests++;
        const state = t.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
      }
      if (tests === 0 && m.state() === 'failed') failed++;
    }
    process.stdout.write(`${passed} passed, ${failed} failed\n`);
  }
}
