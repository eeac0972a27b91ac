// A small progress bar with rate and ETA for long-running commands (training, attacks, benchmarks).
// On a TTY it redraws one line in place (at most every `redrawMs`); otherwise (CI logs, files, pipes) it
// prints a plain line every `intervalMs`, so logs stay readable and bounded.

export interface ProgressOptions {
  /** Number of steps expected; 0 or undefined when unknown (then no bar and no ETA). */
  total?: number;
  /** Prefix, e.g. 'epoch 3/10' or 'PGD'. */
  label?: string;
  /** What one step is, used in the rate ('it', 'batch', 'img'). Default 'it'. */
  unit?: string;
  /** Where to write; default process.stderr so stdout stays clean for results. */
  stream?: ProgressStream;
  /** Forces TTY (redraw) or line mode; default: the stream's isTTY. */
  tty?: boolean;
  /** Line mode: print at most one line per this many ms (default 10 s). */
  intervalMs?: number;
  /** TTY mode: redraw at most this often (default 100 ms). */
  redrawMs?: number;
  /** Bar width in characters (default 24). */
  width?: number;
  /** Clock in ms (tests inject one); default performance.now. */
  now?: () => number;
}

export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** 75 -> '1:15', 3725 -> '1:02:05'; non-finite -> '?'. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const pad = (n: number) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}

/** Rate with a readable magnitude: '12.3 it/s', or '4.20 s/it' when slower than one step per second. */
export function formatRate(perSecond: number, unit: string): string {
  if (!Number.isFinite(perSecond) || perSecond <= 0) return `? ${unit}/s`;
  if (perSecond < 1) return `${(1 / perSecond).toFixed(2)} s/${unit}`;
  return `${perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(1)} ${unit}/s`;
}

/** Set by a parent whose pipe stands for the terminal (src/commands/quiet.ts): '1' when that was a TTY, and its width. */
export const STDERR_TTY = 'GENCLS_STDERR_TTY';
export const STDERR_COLUMNS = 'GENCLS_STDERR_COLUMNS';

export class Progress {
  readonly total: number;
  private done = 0;
  private status = '';
  private readonly start: number;
  private lastDraw = -Infinity;
  private finished = false;
  private readonly tty: boolean;
  private readonly stream: ProgressStream;
  private readonly now: () => number;
  private readonly opts: Required<Pick<ProgressOptions, 'label' | 'unit' | 'intervalMs' | 'redrawMs' | 'width'>>;

  constructor(options: ProgressOptions = {}) {
    this.total = Math.max(0, Math.floor(options.total ?? 0));
    this.stream = options.stream ?? process.stderr;
    // Under the quiet start-up (src/commands/quiet.ts) stderr is a pipe to the parent, which says what it stands for.
    const piped = this.stream === process.stderr ? process.env[STDERR_TTY] : undefined;
    this.tty = options.tty ?? (piped !== undefined ? piped === '1' : Boolean(this.stream.isTTY));
    this.now = options.now ?? (() => performance.now());
    this.opts = {
      label: options.label ?? '',
      unit: options.unit ?? 'it',
      intervalMs: options.intervalMs ?? 10_000,
      redrawMs: options.redrawMs ?? 100,
      width: options.width ?? 24,
    };
    this.start = this.now();
  }

  /** Advances by `n` steps, optionally replacing the status text (e.g. `loss 0.4321`). */
  tick(n = 1, status?: string): void {
    this.update(this.done + n, status);
  }

  /** Sets the absolute number of completed steps. */
  update(done: number, status?: string): void {
    if (this.finished) return;
    this.done = Math.max(0, done);
    if (status !== undefined) this.status = status;
    this.maybeDraw(false);
  }

  /** Replaces the status text without advancing. */
  setStatus(status: string): void {
    this.status = status;
    this.maybeDraw(false);
  }

  get elapsedSeconds(): number {
    return (this.now() - this.start) / 1000;
  }

  /** Draws the final state and ends the line; later calls do nothing. */
  finish(status?: string): void {
    if (this.finished) return;
    if (status !== undefined) this.status = status;
    this.maybeDraw(true);
    if (this.tty) this.stream.write('\n');
    this.finished = true;
  }

  /** The current line, without control characters. */
  render(): string {
    const elapsed = this.elapsedSeconds;
    const rate = elapsed > 0 ? this.done / elapsed : 0;
    const parts: string[] = [];
    if (this.opts.label) parts.push(this.opts.label);
    if (this.total > 0) {
      const frac = Math.min(1, this.done / this.total);
      const filled = Math.round(frac * this.opts.width);
      const bar = '#'.repeat(filled) + '-'.repeat(this.opts.width - filled);
      parts.push(`[${bar}] ${this.done}/${this.total} ${(frac * 100).toFixed(0).padStart(3)}%`);
    } else {
      parts.push(`${this.done}`);
    }
    parts.push(formatRate(rate, this.opts.unit));
    parts.push(`elapsed ${formatDuration(elapsed)}`);
    if (this.total > 0) {
      const remaining = this.total - this.done;
      parts.push(`ETA ${remaining <= 0 ? '0:00' : rate > 0 ? formatDuration(remaining / rate) : '?'}`);
    }
    if (this.status) parts.push(this.status);
    return parts.join('  ');
  }

  private maybeDraw(force: boolean): void {
    const t = this.now();
    const gap = this.tty ? this.opts.redrawMs : this.opts.intervalMs;
    if (!force && t - this.lastDraw < gap) return;
    this.lastDraw = t;
    let line = this.render();
    if (this.tty) {
      const cols = this.stream.columns ?? (this.stream === process.stderr ? Number(process.env[STDERR_COLUMNS]) || undefined : undefined);
      if (cols && line.length > cols - 1) line = line.slice(0, cols - 1);
      // \r + clear-to-end-of-line redraws in place without leaving debris from a longer previous line.
      this.stream.write(`\r${line}\x1b[K`);
    } else {
      this.stream.write(line + '\n');
    }
  }
}
