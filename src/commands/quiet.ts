// Quiet start-up. Dawn, the Vulkan loader and Mesa print from native code straight to file descriptor 2 while
// the adapters are probed: on a machine without a Vulkan GPU every command that opens the GPU starts with Dawn's
// reasons for rejecting each Vulkan driver, its notes on the OpenGL adapter's limits and Mesa's complaint about
// XDG_RUNTIME_DIR. Node cannot redirect a descriptor, so a command that opens the GPU runs as a child process
// whose stderr passes through a filter here: the probe's messages are held back (and printed only when no adapter
// is found, or always with GENCLS_GPU_LOG=1); everything else, progress bars included, passes through at once.
import { spawn } from 'node:child_process';
import { Socket } from 'node:net';
import { constants } from 'node:os';
import { STDERR_TTY, STDERR_COLUMNS } from '../progress.js';

/** Set in the child so it does not supervise itself; the child's stderr is then a pipe, not the terminal. */
const CHILD = 'GENCLS_SUPERVISED';

/**
 * A message of the adapter probe: Dawn's `Warning: ...` blocks (followed by ` - While ...` context and
 * `    at Function (file:line)` frames), and the drivers' own one-liners.
 */
const HEADS = [/^Warning: /, /^error: XDG_RUNTIME_DIR is invalid or not set in the environment\.?$/, /^MESA: warning: /, /^WARNING: lavapipe is not a conformant vulkan implementation/];
const CONTINUATIONS = [/^ - /, /^ {4}at .*\(.*:\d+\)$/, /^$/];

/** The message that says no adapter was found, after which the held-back probe messages explain why. */
const NO_ADAPTER = /No WebGPU adapter found/;

export class ProbeFilter {
  private pending = '';
  private inBlock = false;
  private sawNoAdapter = false;
  readonly held: string[] = [];

  constructor(private readonly write: (text: string) => void) {}

  /** Feeds a chunk of the child's stderr; writes what is not probe noise. */
  push(chunk: string): void {
    this.pending += chunk;
    let nl: number;
    while ((nl = this.pending.indexOf('\n')) >= 0) {
      this.line(this.pending.slice(0, nl), true);
      this.pending = this.pending.slice(nl + 1);
    }
    // A partial line (a progress bar redrawn with \r) goes out now unless it may be the start of a probe message.
    if (this.pending && !this.mayBeNoise(this.pending)) {
      this.write(this.pending);
      this.pending = '';
      this.inBlock = false;
    }
  }

  /** The child has exited: writes what is left, and the held messages when no adapter was found. */
  end(): void {
    if (this.pending) this.line(this.pending, false);
    this.pending = '';
    if (this.sawNoAdapter && this.held.length) this.write(`\nThe adapter probe printed:\n${this.held.join('\n')}\n`);
  }

  private line(text: string, newline: boolean): void {
    const bare = text.replace(/\r$/, '');
    if (HEADS.some((re) => re.test(bare)) || (this.inBlock && CONTINUATIONS.some((re) => re.test(bare)))) {
      this.inBlock = bare !== '';
      if (bare !== '') this.held.push(bare);
      return;
    }
    this.inBlock = false;
    if (NO_ADAPTER.test(bare)) this.sawNoAdapter = true;
    this.write(text + (newline ? '\n' : ''));
  }

  private mayBeNoise(partial: string): boolean {
    const starts = ['Warning: ', 'error: XDG_RUNTIME_DIR', 'MESA: warning: ', 'WARNING: lavapipe', ...(this.inBlock ? [' - ', '    at '] : [])];
    return starts.some((s) => s.startsWith(partial) || partial.startsWith(s)) || (this.inBlock && partial.trim() === '');
  }
}

/**
 * Call first thing in an entry point that opens the GPU. In the parent it runs the same command as a child
 * behind the filter and exits with the child's status (never returning); in the child, or with
 * GENCLS_GPU_LOG=1, it returns at once.
 */
export async function quietStart(): Promise<void> {
  if (process.env[CHILD] === '1') return followParent();
  if (process.env.GENCLS_GPU_LOG === '1') return;
  const err = process.stderr;
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    // fd 3: a pipe the child watches, closed by the kernel whatever way this process ends.
    stdio: ['inherit', 'inherit', 'pipe', 'pipe'],
    env: { ...process.env, [CHILD]: '1', [STDERR_TTY]: err.isTTY ? '1' : '0', ...(err.columns ? { [STDERR_COLUMNS]: String(err.columns) } : {}) },
  });
  const filter = new ProbeFilter((text) => err.write(text));
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => filter.push(chunk));
  // Ctrl-C reaches the whole process group: the child stops itself cleanly, and this process waits for it.
  process.on('SIGINT', () => {});
  for (const sig of ['SIGTERM', 'SIGHUP'] as const) process.on(sig, () => child.kill(sig));
  const code = await new Promise<number>((resolve) => {
    child.on('error', (e) => {
      err.write(`error: could not start the command: ${e.message}\n`);
      resolve(1);
    });
    child.on('close', (status, signal) => resolve(status ?? (signal ? 128 + (constants.signals[signal] ?? 0) : 1)));
  });
  filter.end();
  process.exit(code);
}

/**
 * In the child: when the parent is gone (killed, even by SIGKILL, which it cannot pass on), end as abruptly, so a
 * killed command leaves nothing running behind it.
 */
function followParent(): void {
  let lifeline: Socket;
  try {
    lifeline = new Socket({ fd: 3, readable: true, writable: false });
  } catch {
    return;
  }
  lifeline.on('error', () => {});
  lifeline.on('close', () => process.kill(process.pid, 'SIGKILL'));
  lifeline.resume();
  lifeline.unref();
}
