// The page's build: `npm run web` (dev server) and `npm run web:build` (static files in dist/page/, served by
// any static server). The shipped checkpoints are served and bundled from checkpoints/ rather than copied into
// web/public/, and a Node built-in anywhere in what the page imports fails the build instead of being stubbed.
import { builtinModules } from 'node:module';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { defineConfig, type Plugin } from 'vite';
import { PAGE_MODELS } from './format.js';

const here = dirname(fileURLToPath(import.meta.url));
const checkpointsDir = join(here, '..', 'checkpoints');
const files = PAGE_MODELS.map((m) => `${m}-compact.safetensors`);

function checkpoints(): Plugin {
  return {
    name: 'gencls-checkpoints',
    configureServer(server) {
      server.middlewares.use((req, res, next) => {
        const name = req.url?.match(/\/checkpoints\/([^/?]+)$/)?.[1];
        if (!name || !files.includes(name)) return next();
        res.setHeader('content-type', 'application/octet-stream');
        res.end(readFileSync(join(checkpointsDir, name)));
      });
    },
    generateBundle() {
      for (const name of files) this.emitFile({ type: 'asset', fileName: `checkpoints/${name}`, source: readFileSync(join(checkpointsDir, name)) });
    },
  };
}

function browserOnly(): Plugin {
  const builtins = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
  return {
    name: 'gencls-browser-only',
    enforce: 'pre',
    resolveId(id, importer) {
      if (builtins.has(id) || id.startsWith('node:')) this.error(`${importer ?? 'the page'} imports the Node module '${id}': the page may import only browser-safe modules`);
      return null;
    },
  };
}

export default defineConfig({
  root: here,
  base: './',
  publicDir: join(here, 'public'),
  plugins: [browserOnly(), checkpoints()],
  build: { outDir: join(here, '..', 'dist', 'page'), emptyOutDir: true, target: 'es2022', chunkSizeWarningLimit: 2000 },
  server: { host: '127.0.0.1', port: 5173 },
  preview: { host: '127.0.0.1', port: 4173 },
});
