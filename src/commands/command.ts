// Shared plumbing for CLI commands: option specs with help text, strict parsing through node's util.parseArgs
// with errors that name the command and the offending option, and generated `--help` text.
import { parseArgs } from 'node:util';

export const PROG = 'npx tsx src/cli.ts';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Shown in help as `--name <valueName>` (string options). */
  valueName?: string;
  description: string;
  /** Documented default (applied by the command, so env fallbacks stay possible). */
  defaultText?: string;
}

export type OptionValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

export interface CommandContext {
  values: OptionValues;
  positionals: string[];
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export interface Command {
  name: string;
  aliases?: string[];
  /** One line for the command list. */
  summary: string;
  /** Extra paragraphs for `--help`. */
  description?: string;
  /** Positional synopsis, e.g. '<run-dir>'; omit when the command takes none. */
  positionals?: string;
  options: Record<string, OptionSpec>;
  /** Returns the exit code (default 0). */
  run(ctx: CommandContext): Promise<number | void>;
}

/** A usage error: printed without a stack trace, exit code 2. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export const HELP_OPTION: OptionSpec = { type: 'boolean', short: 'h', description: 'show this help' };

/** `--backend auto|native|opengl`, shared by every command that touches the GPU. */
export const BACKEND_OPTION: OptionSpec = {
  type: 'string',
  valueName: 'auto|native|opengl',
  description: 'WebGPU backend: native (Vulkan/Metal/D3D12), opengl (Dawn GL/EGL, e.g. Mesa llvmpipe) or auto (native, then opengl)',
  defaultText: 'env GENCLS_BACKEND, else auto',
};

export function parseCommandArgs(cmd: Command, argv: string[]): { values: OptionValues; positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, spec] of Object.entries({ ...cmd.options, help: HELP_OPTION })) {
    options[name] = { type: spec.type, ...(spec.short ? { short: spec.short } : {}), ...(spec.multiple ? { multiple: true } : {}) };
  }
  try {
    const { values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: cmd.positionals !== undefined });
    return { values: values as OptionValues, positionals };
  } catch (e) {
    throw new CliError(`${cmd.name}: ${describeParseError(e as Error & { code?: string })}\nRun '${PROG} ${cmd.name} --help' for its options.`);
  }
}

function describeParseError(e: Error & { code?: string }): string {
  const msg = e.message;
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': {
      const m = /Unknown option '([^']+)'/.exec(msg);
      return `unknown option '${m ? m[1] : msg}'`;
    }
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL': {
      const m = /Unexpected argument '([^']+)'/.exec(msg);
      return `unexpected argument '${m ? m[1] : msg}' (this command takes no positional arguments)`;
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      // e.g. "Option '--backend <value>' argument missing" or a value given to a boolean flag.
      return msg.replace(/\.$/, '');
    default:
      return msg;
  }
}

export function formatCommandHelp(cmd: Command): string {
  const lines: string[] = [];
  const names = [cmd.name, ...(cmd.aliases ?? [])].join(', ');
  lines.push(`Usage: ${PROG} ${cmd.name} [options]${cmd.positionals ? ' ' + cmd.positionals : ''}`);
  lines.push('');
  lines.push(`${names}: ${cmd.summary}`);
  if (cmd.description) lines.push('', cmd.description);
  lines.push('', 'Options:');
  const rows: [string, string][] = [];
  for (const [name, spec] of Object.entries({ ...cmd.options, help: HELP_OPTION })) {
    const flag = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.type === 'string' ? ` <${spec.valueName ?? 'value'}>` : ''}`;
    rows.push([flag, spec.description + (spec.defaultText ? ` (default: ${spec.defaultText})` : '')]);
  }
  const w = Math.max(...rows.map(([f]) => f.length));
  for (const [f, d] of rows) lines.push(`  ${f.padEnd(w)}  ${d}`);
  return lines.join('\n') + '\n';
}

/** A string option's value (last one wins when given twice). */
export function stringOpt(values: OptionValues, name: string): string | undefined {
  const v = values[name];
  if (Array.isArray(v)) return v.length ? String(v[v.length - 1]) : undefined;
  return typeof v === 'string' ? v : undefined;
}

export function boolOpt(values: OptionValues, name: string): boolean {
  return values[name] === true;
}

export interface NumberBounds {
  min?: number;
  max?: number;
}

function parseNumberOpt(values: OptionValues, name: string, fallback: number, bounds: NumberBounds, integer: boolean): number {
  const raw = stringOpt(values, name);
  if (raw === undefined) return fallback;
  const kind = integer ? 'an integer' : 'a number';
  const v = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(v) || (integer && !Number.isInteger(v))) throw new CliError(`--${name} expects ${kind}, got '${raw}'`);
  if (bounds.min !== undefined && v < bounds.min) throw new CliError(`--${name} must be >= ${bounds.min}, got ${raw}`);
  if (bounds.max !== undefined && v > bounds.max) throw new CliError(`--${name} must be <= ${bounds.max}, got ${raw}`);
  return v;
}

/** An integer string option (default when absent); a non-integer or out-of-range value is a usage error naming the option. */
export function intOpt(values: OptionValues, name: string, fallback: number, bounds: NumberBounds = {}): number {
  return parseNumberOpt(values, name, fallback, bounds, true);
}

/** A numeric string option (default when absent); a non-number or out-of-range value is a usage error naming the option. */
export function numberOpt(values: OptionValues, name: string, fallback: number, bounds: NumberBounds = {}): number {
  return parseNumberOpt(values, name, fallback, bounds, false);
}
