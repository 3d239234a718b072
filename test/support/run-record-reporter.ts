import { writeFileSync } from "node:fs";
import type { Reporter, SerializedError, TestModule, TestRunEndReason } from "vitest/node";

/** What test/run.ts reads after vitest exits, to judge the run by what ran rather than by vitest's exit code alone. */
export interface RunRecord {
  reason: TestRunEndReason;
  unhandledErrors: string[];
  modules: Array<{ file: string; project: string; state: string; passed: number; failed: number; skipped: number }>;
}

/**
 * Writes a record of the run to the file named by PC_TEST_RECORD (set by test/run.ts), once the
 * run has ended. When vitest stops before that (a global setup that throws, a crash of vitest
 * itself), no record is written, and test/run.ts fails the run for that.
 */
export default class RunRecordReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError>, reason: TestRunEndReason): void {
    const file = process.env.PC_TEST_RECORD;
    if (!file) return;
    const record: RunRecord = {
      reason,
      unhandledErrors: unhandledErrors.map((error) => String(error.message ?? error).split("\n")[0]),
      modules: modules.map((module) => {
        const states = [...module.children.allTests()].map((test) => test.result().state);
        return {
          file: module.moduleId,
          project: module.project.name,
          state: module.state(),
          passed: states.filter((s) => s === "passed").length,
          failed: states.filter((s) => s === "failed").length,
          skipped: states.filter((s) => s === "skipped").length,
        };
      }),
    };
    writeFileSync(file, JSON.stringify(record));
  }
}
