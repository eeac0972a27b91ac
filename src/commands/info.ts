// `info` (alias `device`): acquires the WebGPU device the engine would use and prints what it is.
import { acquireDevice, parseBackend, NoAdapterError, LIMIT_KEYS } from '../device.js';
import { BACKEND_OPTION, CliError, boolOpt, stringOpt, type Command } from './command.js';


function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = -1;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v >= 100 ? 0 : 2)} ${units[i]}`;
}

export const command: Command = {
  name: 'info',
  aliases: ['device'],
  summary: 'acquire the WebGPU device and print the adapter, backend, feature level and key limits',
  description:
    'Exits with status 1 and an install hint when no adapter is found. On CPU-only Linux the engine uses\n' +
    "Dawn's OpenGL backend on Mesa llvmpipe (EGL_PLATFORM=surfaceless is set automatically when unset).",
  options: {
    backend: BACKEND_OPTION,
    json: { type: 'boolean', description: 'print one JSON object instead of text' },
  },
  async run({ values, stdout, stderr }) {
    const raw = stringOpt(values, 'backend');
    let backend;
    try {
      backend = parseBackend(raw ?? process.env.GENCLS_BACKEND);
    } catch (e) {
      throw new CliError(`info: ${(e as Error).message}`);
    }
    let acquired;
    try {
      acquired = await acquireDevice({ backend });
    } catch (e) {
      if (e instanceof NoAdapterError) {
        stderr.write(`error: ${e.message}\n`);
        return 1;
      }
      throw e;
    }
    const { device, adapter, description, featureLevel } = acquired;
    try {
      const info = adapter.info;
      const limits: Record<string, number> = {};
      for (const k of LIMIT_KEYS) {
        const v = (device.limits as unknown as Record<string, number | undefined>)[k];
        if (typeof v === 'number') limits[k] = v;
      }
      const features = [...adapter.features].map(String).sort();
      if (boolOpt(values, 'json')) {
        const out = {
          adapter: description,
          backend: acquired.backend,
          requested: backend,
          featureLevel,
          vendor: info.vendor,
          architecture: info.architecture,
          device: info.device,
          description: info.description,
          limits,
          features,
        };
        stdout.write(JSON.stringify(out, null, 2) + '\n');
        return 0;
      }
      const rows: [string, string][] = [
        ['adapter', description],
        ['backend', `${acquired.backend}${backend === 'auto' ? ' (auto)' : ''}`],
        ['feature level', featureLevel],
        ['vendor', info.vendor || '-'],
        ['architecture', info.architecture || '-'],
        ['device', info.device || '-'],
        ['description', info.description || '-'],
      ];
      const w = Math.max(...rows.map(([k]) => k.length));
      for (const [k, v] of rows) stdout.write(`${(k + ':').padEnd(w + 1)} ${v}\n`);
      stdout.write('limits:\n');
      const lw = Math.max(...Object.keys(limits).map((k) => k.length));
      for (const [k, v] of Object.entries(limits)) {
        const bytes = /Size$|Alignment$/.test(k) && !/WorkgroupSize/.test(k) ? `  (${humanBytes(v)})` : '';
        stdout.write(`  ${k.padEnd(lw)}  ${v}${bytes}\n`);
      }
      stdout.write(`features: ${features.length ? features.join(', ') : '(none)'}\n`);
      return 0;
    } finally {
      device.destroy();
    }
  },
};
