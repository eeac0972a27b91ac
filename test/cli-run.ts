// Running the CLI in-process for tests: its output captured, no subprocess (and no GPU unless the command opens it).
import { main } from '../src/cli.js';

/** A writable stream that keeps what is written (optionally claiming to be a TTY). */
export function sink(isTTY = false) {
  const chunks: string[] = [];
  return { write: (s: string) => (chunks.push(s), true), isTTY, text: () => chunks.join(''), chunks } as const;
}

/** Runs `npx tsx src/cli.ts ...argv` in-process: its exit code, stdout and stderr. */
export async function runCli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const stdout = sink();
  const stderr = sink();
  const code = await main(argv, { stdout: stdout as unknown as NodeJS.WritableStream, stderr: stderr as unknown as NodeJS.WritableStream });
  return { code, out: stdout.text(), err: stderr.text() };
}
