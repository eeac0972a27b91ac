// The page: an image (a shipped test image, or drawn), both models' p(y|x) and detectors on it, an attack that
// shows every iterate, and the kernel benchmark. All GPU work runs one job at a time (`gpu`); the page's state
// is mirrored on window.gencls for test/web.test.ts.
import { CLASS_NAMES, MODEL_STRUCTURE } from '../src/models/factorisations.js';
import { loadLab, read, attack, fgsAt, Stopped, PIXELS, type Lab, type Reading, type Settings, type AttackSpec } from './lab.js';
import { PAGE_MODELS, type PageModel } from './format.js';
import { benchCases, runBench, type BenchRow } from './bench-panel.js';

type Readings = Partial<Record<PageModel, Reading>>;

export interface PageState {
  status: 'loading' | 'ready' | 'error';
  adapter?: string;
  error?: string;
  index: number;
  edited: boolean;
  settings: Settings;
  clean: Readings;
  adversarial: Readings | null;
  attack: { model: PageModel; kind: AttackSpec['kind']; label: number; running: boolean; iteration: number; done: boolean; eps?: number; l2?: number; linf?: number; error?: string } | null;
  bench: BenchRow[];
  benchRunning: boolean;
}

declare global {
  interface Window {
    gencls?: PageState;
  }
}

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const input = (id: string) => $<HTMLInputElement>(id);
const nextFrame = () => new Promise<void>((r) => requestAnimationFrame(() => r()));

const state: PageState = { status: 'loading', index: 0, edited: false, settings: { samples: 10, seed: 1 }, clean: {}, adversarial: null, attack: null, bench: [], benchRunning: false };
window.gencls = state;

let lab: Lab;
let image = new Float32Array(PIXELS);
let adversarial: Float32Array | null = null;
let fgsDirection: Float32Array | null = null;
let stopRequested = false;

// ---------------------------------------------------------------- one GPU job at a time

let queue: Promise<unknown> = Promise.resolve();
function gpu<T>(job: () => Promise<T>): Promise<T> {
  const run = queue.then(job);
  queue = run.catch(() => {});
  return run;
}

function setStatus(text: string, error = false): void {
  const el = $('status');
  el.textContent = text;
  el.classList.toggle('error', error);
}

function fail(where: string, e: unknown): void {
  const msg = `${where}: ${(e as Error)?.message ?? e}`;
  state.error = msg;
  setStatus(msg, true);
  console.error(e);
}

// ---------------------------------------------------------------- drawing images

function paint(canvas: HTMLCanvasElement, rgba: (i: number) => [number, number, number]): void {
  const small = new OffscreenCanvas(28, 28);
  const sctx = small.getContext('2d')!;
  const img = sctx.createImageData(28, 28);
  for (let i = 0; i < PIXELS; i++) {
    const [r, g, b] = rgba(i);
    img.data.set([r, g, b, 255], 4 * i);
  }
  sctx.putImageData(img, 0, 0);
  const ctx = canvas.getContext('2d')!;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}

const grey = (x: Float32Array) => (i: number) => {
  const v = Math.round(255 * x[i]);
  return [v, v, v] as [number, number, number];
};

/** adv - x in a diverging map: red up, blue down, white 0, full colour at the largest |change|. */
function paintPerturbation(x: Float32Array, adv: Float32Array): number {
  let scale = 0;
  for (let i = 0; i < PIXELS; i++) scale = Math.max(scale, Math.abs(adv[i] - x[i]));
  paint($<HTMLCanvasElement>('perturbation'), (i) => {
    const t = scale > 0 ? (adv[i] - x[i]) / scale : 0;
    const fade = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? [255, fade, fade] : [fade, fade, 255];
  });
  $('perturbation-scale').textContent = `perturbation (red +, blue −; full colour = ±${scale.toFixed(3)})`;
  return scale;
}

// ---------------------------------------------------------------- readings

const fmt = (v: number) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

function renderReadings(el: HTMLElement, readings: Readings, truth: number | null): void {
  el.replaceChildren(
    ...PAGE_MODELS.filter((m) => readings[m]).map((m) => {
      const r = readings[m]!;
      const div = document.createElement('div');
      div.className = 'model';
      div.dataset.model = m;
      div.dataset.predicted = String(r.predicted);
      const bars = r.probabilities
        .map((p, c) => {
          const cls = ['bar', c === r.predicted ? 'predicted' : '', c === truth ? 'truth' : ''].join(' ');
          return `<div class="${cls}"><span class="name">${CLASS_NAMES[c]}</span><span class="track"><span class="fill" style="width:${(100 * p).toFixed(1)}%;display:block"></span></span><span class="p">${p.toFixed(3)}</span></div>`;
        })
        .join('');
      const row = (name: string, title: string, d: Reading['detectors']['marginal']) =>
        `<tr title="${title}"><td>${name}</td><td class="num">${fmt(d.value)}</td><td class="num">${d.rejectsBelow ? '&lt;' : '&gt;'} ${fmt(d.threshold)}</td><td class="verdict ${d.rejected ? 'reject' : 'ok'}">${d.rejected ? 'reject' : 'pass'}</td></tr>`;
      div.innerHTML =
        `<h3>${m.toUpperCase()} <span>${MODEL_STRUCTURE[m].factorisation}</span></h3>` +
        `<p class="note">predicted <b>${CLASS_NAMES[r.predicted]}</b></p>${bars}` +
        `<table class="detectors"><thead><tr><th>detector</th><th>value</th><th>rejects</th><th></th></tr></thead><tbody>` +
        row('log p(x)', 'marginal detector: rejects when log p(x) is below its threshold', r.detectors.marginal) +
        row('log p(x, ŷ)', 'logit detector: rejects when the predicted class\'s logit is below its per-class threshold', r.detectors.logit) +
        row('KL', 'KL detector: rejects when KL(mean softmax of the class || this softmax) exceeds its per-class threshold', r.detectors.kl) +
        `</tbody></table>`;
      return div;
    }),
  );
}

async function readBoth(x: Float32Array): Promise<Readings> {
  const out: Readings = {};
  for (const m of PAGE_MODELS) out[m] = (await read(lab, m, x, state.settings))[0];
  return out;
}

const truthLabel = () => (state.edited ? null : lab.labels[state.index]);

// Readings of the (possibly edited) image: the latest image wins, so a stroke triggers at most one read behind it.
let readPending = false;
let reading = false;
function scheduleRead(): void {
  readPending = true;
  if (reading) return;
  reading = true;
  void gpu(async () => {
    try {
      while (readPending) {
        readPending = false;
        const snapshot = image.slice();
        state.clean = await readBoth(snapshot);
        renderReadings($('clean'), state.clean, truthLabel());
        await nextFrame();
      }
    } catch (e) {
      fail('classifying', e);
    } finally {
      reading = false;
    }
  });
}

// ---------------------------------------------------------------- the image

function showImage(): void {
  paint($<HTMLCanvasElement>('image'), grey(image));
  const t = truthLabel();
  $('label').textContent = t === null ? `test image ${state.index}, edited (attacks move away from the predicted class)` : `test image ${state.index}: ${CLASS_NAMES[t]} (label ${t})`;
}

function imageChanged(): void {
  adversarial = null;
  fgsDirection = null;
  state.adversarial = null;
  state.attack = null;
  $('adversarial-readings').replaceChildren();
  $('attack-summary').textContent = '';
  showImage();
  scheduleRead();
}

function selectImage(i: number): void {
  state.index = ((i % lab.count) + lab.count) % lab.count;
  input('index').value = String(state.index);
  image = lab.images.slice(state.index * PIXELS, (state.index + 1) * PIXELS);
  state.edited = false;
  imageChanged();
}

function setUpDrawing(): void {
  const canvas = $<HTMLCanvasElement>('image');
  let drawing = false;
  let erasing = false;
  const brush = (e: PointerEvent) => {
    const rect = canvas.getBoundingClientRect();
    const cx = ((e.clientX - rect.left) / rect.width) * 28 - 0.5;
    const cy = ((e.clientY - rect.top) / rect.height) * 28 - 0.5;
    const radius = Number(input('brush').value);
    for (let y = Math.max(0, Math.floor(cy - 2 * radius)); y <= Math.min(27, Math.ceil(cy + 2 * radius)); y++) {
      for (let x = Math.max(0, Math.floor(cx - 2 * radius)); x <= Math.min(27, Math.ceil(cx + 2 * radius)); x++) {
        const w = Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (radius * radius));
        const i = y * 28 + x;
        image[i] = erasing ? image[i] * (1 - w) : Math.max(image[i], w);
      }
    }
    state.edited = true;
    showImage();
    scheduleRead();
  };
  canvas.addEventListener('contextmenu', (e) => e.preventDefault());
  canvas.addEventListener('pointerdown', (e) => {
    if (state.attack?.running) return;
    drawing = true;
    erasing = input('erase').checked || e.shiftKey || e.button === 2;
    canvas.setPointerCapture(e.pointerId);
    if (adversarial) imageChanged();
    brush(e);
  });
  canvas.addEventListener('pointermove', (e) => drawing && brush(e));
  canvas.addEventListener('pointerup', () => (drawing = false));
  $('clear').addEventListener('click', () => {
    image.fill(0);
    state.edited = true;
    imageChanged();
  });
  $('reset').addEventListener('click', () => selectImage(state.index));
}

// ---------------------------------------------------------------- attacks

function attackSpec(): AttackSpec {
  const kind = $<HTMLSelectElement>('attack-kind').value as AttackSpec['kind'];
  const eps = Number(input('eps').value);
  const iterations = Math.max(1, Math.floor(Number(input('iterations').value) || 1));
  if (kind === 'fgs') return { kind, eps };
  // PGD: steps of 2.5 eps / iterations, so the iterate can cross the eps-ball (Madry et al.'s rule of thumb).
  if (kind === 'pgd') return { kind, eps, iterations, stepSize: (2.5 * eps) / iterations };
  return { kind, maxIterations: iterations, overshoot: 0.02 };
}

function updateAttackControls(): void {
  const kind = $<HTMLSelectElement>('attack-kind').value;
  $('eps-row').hidden = kind === 'deepfool';
  $('iter-row').hidden = kind === 'fgs';
  $('eps-value').textContent = Number(input('eps').value).toFixed(2);
}

async function showAdversarial(adv: Float32Array, iteration: number, total: number): Promise<void> {
  adversarial = adv;
  paint($<HTMLCanvasElement>('adversarial'), grey(adv));
  const linf = paintPerturbation(image, adv);
  let l2 = 0;
  for (let i = 0; i < PIXELS; i++) l2 += (adv[i] - image[i]) ** 2;
  l2 = Math.sqrt(l2);
  state.adversarial = await readBoth(adv);
  const a = state.attack!;
  Object.assign(a, { iteration, l2, linf });
  renderReadings($('adversarial-readings'), state.adversarial, truthLabel());
  const before = state.clean[a.model]?.predicted;
  const after = state.adversarial[a.model]!.predicted;
  const name = a.kind === 'fgs' ? `FGS eps=${a.eps!.toFixed(2)}` : a.kind === 'pgd' ? `PGD eps=${a.eps!.toFixed(2)}` : 'DeepFool L2';
  const summary = $('attack-summary');
  summary.dataset.flipped = String(before !== undefined && after !== before);
  summary.textContent = `${name} on ${a.model.toUpperCase()}, away from ${CLASS_NAMES[a.label]}: ${before === undefined ? '?' : CLASS_NAMES[before]} → ${CLASS_NAMES[after]}${after !== before ? ' (changed)' : ' (unchanged)'} · L2 ${l2.toFixed(3)}, L∞ ${linf.toFixed(3)}`;
  $('attack-progress').textContent = total > 1 ? `iteration ${iteration + 1} of at most ${total}` : '';
}

async function runAttack(): Promise<void> {
  if (state.attack?.running) return;
  const model = $<HTMLSelectElement>('attack-model').value as PageModel;
  const spec = attackSpec();
  const clean = state.clean[model];
  const label = truthLabel() ?? clean?.predicted ?? 0;
  const total = spec.kind === 'fgs' ? 1 : spec.kind === 'pgd' ? spec.iterations : spec.maxIterations + 1;
  state.attack = { model, kind: spec.kind, label, running: true, iteration: 0, done: false, eps: spec.kind === 'deepfool' ? undefined : spec.eps };
  fgsDirection = null;
  stopRequested = false;
  $<HTMLButtonElement>('run').disabled = true;
  $<HTMLButtonElement>('stop').disabled = spec.kind === 'fgs';
  setStatus(`running ${spec.kind} on ${model.toUpperCase()}…`);
  const x = image.slice();
  try {
    const result = await gpu(() => attack(lab, model, x, label, spec, state.settings, async (f) => {
      await showAdversarial(f.adversarial, f.iteration, total);
      await nextFrame();
    }, () => stopRequested));
    fgsDirection = result.direction ?? null;
    state.attack.done = true;
    setStatus(spec.kind === 'fgs' ? 'ready: move the eps slider to see FGS at other eps (same gradient)' : 'ready');
  } catch (e) {
    if (e instanceof Stopped) setStatus('stopped');
    else {
      state.attack.error = (e as Error).message;
      fail('attack', e);
    }
  } finally {
    state.attack.running = false;
    $<HTMLButtonElement>('run').disabled = false;
    $<HTMLButtonElement>('stop').disabled = true;
  }
}

// The FGS slider after a run: every eps from the one gradient, latest value wins.
let epsPending = false;
function fgsSlider(): void {
  updateAttackControls();
  if (!fgsDirection || !state.attack || state.attack.kind !== 'fgs' || state.attack.running) return;
  if (epsPending) return;
  epsPending = true;
  void gpu(async () => {
    epsPending = false;
    if (!fgsDirection || !state.attack) return;
    const eps = Number(input('eps').value);
    state.attack.eps = eps;
    await showAdversarial(await fgsAt(image, fgsDirection, eps), 0, 1);
  }).catch((e) => fail('FGS', e));
}

// ---------------------------------------------------------------- benchmark

async function runBenchPanel(): Promise<void> {
  if (state.benchRunning) return;
  const cases = benchCases(input('bench-only').value);
  const body = $('bench-table').querySelector('tbody')!;
  body.replaceChildren();
  state.bench = [];
  if (cases.length === 0) return void setStatus(`benchmark: no case matches '${input('bench-only').value}'`, true);
  state.benchRunning = true;
  $<HTMLButtonElement>('bench-run').disabled = true;
  const reps = Math.max(1, Math.floor(Number(input('bench-reps').value) || 1));
  try {
    await gpu(() =>
      runBench(cases, reps, async (r) => {
        state.bench.push(r);
        const tr = document.createElement('tr');
        tr.innerHTML = `<td>${r.op}</td><td>${r.pass}</td><td>${r.shape}</td><td class="num">${r.ms === null ? '–' : r.ms.toFixed(2)}</td><td class="num">${r.gflops === null ? (r.error ?? '–') : r.gflops.toFixed(1)}</td>`;
        body.append(tr);
        setStatus(`benchmark: ${state.bench.length} of ${cases.length} cases`);
        await nextFrame();
      }),
    );
    setStatus(`benchmark: ${cases.length} cases done`);
  } catch (e) {
    fail('benchmark', e);
  } finally {
    state.benchRunning = false;
    $<HTMLButtonElement>('bench-run').disabled = false;
  }
}

// ---------------------------------------------------------------- start

async function main(): Promise<void> {
  try {
    lab = await loadLab(document.baseURI, (what) => setStatus(`${what}…`));
  } catch (e) {
    state.status = 'error';
    return fail('loading', e);
  }
  state.adapter = lab.adapter;
  $('adapter').textContent = `adapter: ${lab.adapter}`;
  $('bench-adapter').textContent = lab.adapter;
  input('index').max = String(lab.count - 1);
  $('prev').addEventListener('click', () => selectImage(state.index - 1));
  $('next').addEventListener('click', () => selectImage(state.index + 1));
  $('random').addEventListener('click', () => selectImage(Math.floor(Math.random() * lab.count)));
  input('index').addEventListener('change', () => selectImage(Math.floor(Number(input('index').value) || 0)));
  for (const id of ['samples', 'seed']) {
    input(id).addEventListener('change', () => {
      const samples = Math.max(1, Math.floor(Number(input('samples').value) || 1));
      const seed = Math.max(0, Math.floor(Number(input('seed').value) || 0));
      state.settings = { samples, seed };
      imageChanged();
    });
  }
  setUpDrawing();
  $('attack-kind').addEventListener('change', updateAttackControls);
  input('eps').addEventListener('input', fgsSlider);
  $('run').addEventListener('click', () => void runAttack());
  $('stop').addEventListener('click', () => (stopRequested = true));
  $('bench-run').addEventListener('click', () => void runBenchPanel());
  updateAttackControls();
  const fromUrl = Number(new URLSearchParams(location.search).get('image') ?? 0);
  selectImage(Number.isInteger(fromUrl) ? fromUrl : 0);
  await gpu(async () => {});
  while (reading) await gpu(async () => {});
  state.status = state.error ? 'error' : 'ready';
  if (!state.error) setStatus(`ready: ${lab.count} test images; DFZ and GFZ compact, detectors fitted on ${lab.detectorsFile.fit.trainImages} training images`);
}

void main();
