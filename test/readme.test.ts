// The documentation's commands work: every CLI command README.md and docs/*.md name answers --help and lists
// the options shown with it, every `npm run` script they name exists, the README's engine example imports only
// what src/index.ts exports, and relative links reach a file (and heading). Runs the CLI in-process, so no GPU
// is touched.
import { describe, it, expect } from 'vitest';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join, dirname, normalize } from 'node:path';
import { COMMANDS } from '../src/cli.js';
import { runCli } from './cli-run.js';

const DOCS = ['README.md', ...(existsSync('docs') ? readdirSync('docs').filter((f) => f.endsWith('.md')).map((f) => join('docs', f)) : [])];
const text = Object.fromEntries(DOCS.map((f) => [f, readFileSync(f, 'utf8')]));

interface Mention {
  file: string;
  command: string;
  options: string[];
  line: string;
}

/**
 * `npx tsx src/cli.ts <command> ...` (or the compiled `node dist/src/cli.js`), up to the end of its code span, line
 * or shell command. Placeholders such as `<command>` are not commands. A pipe ends the command only when spaced,
 * so `--model dfz|gfz` stays one.
 */
function cliMentions(file: string, source: string): Mention[] {
  const out: Mention[] = [];
  const re = /(?:npx tsx src\/cli\.ts|node dist\/src\/cli\.js) +([a-z][\w-]*)([^`\n;&#]*)/g;
  for (const m of source.matchAll(re)) {
    const rest = m[2].split(/ \| /)[0];
    out.push({ file, command: m[1], options: [...rest.matchAll(/(?:^|\s)--([a-z][\w-]*)/g)].map((o) => o[1]), line: m[0] });
  }
  return out;
}

function npmScripts(source: string): string[] {
  // A placeholder such as `bench:<name>` is no script name.
  return [...source.matchAll(/npm run ([\w-]+(?::[\w-]+)*)(?=[^\w:<]|$)/g)].map((m) => m[1]);
}

const help = (command: string) => runCli(command, '--help');

const mentions = DOCS.flatMap((f) => cliMentions(f, text[f]));

describe('the parsers', () => {
  it('find commands and their options, and skip placeholders', () => {
    const m = cliMentions('x.md', 'run `npx tsx src/cli.ts train --model dfz|gfz --preset compact` and `npx tsx src/cli.ts <command> --help`\n' +
      'npx tsx src/cli.ts data && npx tsx src/cli.ts experiment --fresh | tee log # --not-an-option');
    expect(m.map((x) => [x.command, x.options])).toEqual([
      ['train', ['model', 'preset']],
      ['data', []],
      ['experiment', ['fresh']],
    ]);
    expect(npmScripts('`npm run bench:kernels -- --torch`, npm run build. `npm run bench:<name>`')).toEqual(['bench:kernels', 'build']);
  });
});

describe('README.md and docs/ name only commands that exist', () => {
  it('name every command of the CLI at least once, README.md the two commands', async () => {
    const named = new Set(mentions.map((m) => m.command));
    for (const c of COMMANDS.map((e) => e.name)) expect(named, c).toContain(c);
    expect(text['README.md']).toContain('bash .ci/run\n');
    expect(text['README.md']).toContain('bash .ci/setup && npx tsx src/cli.ts data && npx tsx src/cli.ts experiment\n');
  });

  const commands = [...new Set(mentions.map((m) => m.command))];
  for (const command of commands) {
    it(`${command} --help names the command and every option shown with it`, async () => {
      const r = await help(command);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toMatch(/^Usage: npx tsx src\/cli\.ts [a-z]+ /);
      expect(r.out).toMatch(new RegExp(`^[a-z, ]*\\b${command}\\b[a-z, ]*: `, 'm'));
      for (const m of mentions.filter((x) => x.command === command)) {
        for (const option of m.options) {
          expect(r.out, `${m.file}: \`${m.line.trim()}\` uses --${option}`).toMatch(new RegExp(`--${option}(?= |$)`, 'm'));
        }
      }
    });
  }

  it('every `npm run` script they name is in package.json', () => {
    const scripts = Object.keys(JSON.parse(readFileSync('package.json', 'utf8')).scripts as Record<string, string>);
    const named = DOCS.flatMap((f) => npmScripts(text[f]).map((s) => [f, s] as const));
    expect(named.length).toBeGreaterThan(0);
    for (const [file, script] of named) expect(scripts, `${file} names npm run ${script}`).toContain(script);
  });

  it("the README's engine example imports only what src/index.ts exports", async () => {
    const block = /```ts\n([\s\S]*?)```/.exec(text['README.md']);
    expect(block, 'a ```ts block in README.md').not.toBeNull();
    const imported = /import \{([^}]+)\} from '\.\/src\/index\.js'/.exec(block![1]);
    expect(imported, 'the example imports from ./src/index.js').not.toBeNull();
    const names = imported![1].split(',').map((s) => s.trim().replace(/^type /, '')).filter(Boolean);
    const index = (await import('../src/index.js')) as Record<string, unknown>;
    for (const name of names) expect(index[name], name).toBeDefined();
  });

  it('relative links reach an existing file, and a heading there when they name one', () => {
    for (const file of DOCS) {
      for (const [, target] of text[file].matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target)) continue;
        const [path, anchor] = target.split('#');
        const resolved = path ? normalize(join(dirname(file), path)) : file;
        expect(existsSync(resolved), `${file} links to ${target}`).toBe(true);
        if (anchor && resolved.endsWith('.md')) expect(headingSlugs(readFileSync(resolved, 'utf8')), `${file} links to ${target}`).toContain(anchor);
      }
    }
  });
});

/** GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens. */
function headingSlugs(markdown: string): string[] {
  const slugs: string[] = [];
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = !fenced && /^#{1,6} +(.+?) *$/.exec(line);
    if (m) slugs.push(m[1].toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-'));
  }
  return slugs;
}
