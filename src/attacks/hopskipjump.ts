// HopSkipJump (Chen, Jordan & Wainwright 2020), L2 and untargeted: a decision-based attack that sees only the
// classifier's predicted label. From a misclassified starting point on the decision boundary it repeats
//   1. estimate the boundary's normal at x_t from B_t = min(initNumEvals sqrt(t), maxNumEvals) random unit
//      directions u_b of size delta_t: grad ~ mean_b (phi_b - mean phi) u_b, phi_b = +1 where x_t + delta_t u_b
//      is adversarial and -1 where not (the baseline mean phi is dropped when every phi_b agrees);
//   2. step along it by xi = ||x_t - x|| / sqrt(t), halving xi until the step lands on an adversarial point;
//   3. binary-search between x and that point back to the boundary, to a blend tolerance
//      theta = gamma / d^(3/2), which gives x_{t+1}.
// delta_1 = 0.1 (a tenth of the box, as in the reference code) and delta_t = sqrt(d) theta ||x_{t-1} - x|| after,
// the paper's choice (the reference code takes the distance before the last binary search instead).
// Every image in [0, 1] is clipped there throughout. The search for a starting point draws uniform noise images
// until one is misclassified and blends it toward x by binary search (to a tolerance of theta relative to the
// blend it finds, which the reference code reaches in two searches).
//
// A query is one image's candidate in one classifier call. All images of the batch advance together: every
// step evaluates the candidates of every image still being attacked in batched classifier calls of at most
// `chunkRows` rows, and the gradient samples are drawn, clipped and reduced on the GPU. The bookkeeping (budgets,
// binary-search bounds, the iterates) stays on the host, a few vectors per image next to the model's cost. The
// searches' one-candidate queries (`rowQuery`) are compiled per bucket of images for seeded classifiers, and so
// are the gradient estimates, their sample count (which grows every iteration) padded to a bucket and masked.
import { Tensor, tensor, tidy, noGrad, add, sub, mul, div, sqrt, sum, square, clamp, affine, reshape, broadcastTo, slice, argmax, oneHot, randomNormal, randomUniform, readAll } from '../engine.js';
import { assertSeed, Rng } from '../autograd/rng.js';
import { type Classifier, hostBatch, rowQuery, padRows, meanOverDraws, checkLogits } from './classifier.js';

export interface HopSkipJumpOptions {
  /** Most classifier queries per image, the check of the clean prediction included. */
  queryBudget: number;
  seed: number;
  /** Gradient-estimation samples at iteration 1; iteration t takes initNumEvals * sqrt(t) (default 100). */
  initNumEvals?: number;
  /** Most samples of one gradient estimate (default 10,000). */
  maxNumEvals?: number;
  /** Sets the binary-search tolerance theta = gamma / d^(3/2) (default 1). */
  gamma?: number;
  /** Most iterations (default: as many as the budget allows). */
  maxIterations?: number;
  /** Most noise images tried per image for a starting point (default 10,000, the reference code's limit). */
  maxInitTrials?: number;
  /** Most rows (candidate images) in one classifier call (default 1000). */
  chunkRows?: number;
  /** Called after every iteration with the number of images that go on to the next. */
  onIteration?: (iteration: number, active: number) => void;
}

export interface HopSkipJumpResult {
  /** The closest adversarial point found per image; the clean image where none was found or none was needed. */
  adversarial: Tensor;
  /** Queries each image used, the check of the clean prediction included. */
  queries: Int32Array;
  /** 1 where the returned image is misclassified, as the attack saw it. */
  success: Uint8Array;
  /** L2 distance of the returned image from the clean one: 0 if it was misclassified already, Infinity if no adversarial point was found. */
  l2: Float64Array;
}

/** Blend steps a binary search over [0, 1] takes to bring its bracket within theta. */
export function binarySearchSteps(theta: number): number {
  let steps = 0;
  for (let width = 1; width > theta; width /= 2) steps++;
  return steps;
}

const positiveInteger = (name: string, v: number) => {
  if (!Number.isInteger(v) || v < 1) throw new Error(`hopskipjump: ${name} must be a positive integer, got ${v}`);
};

export async function hopSkipJump(clf: Classifier, x: Tensor, labels: Tensor, opts: HopSkipJumpOptions): Promise<HopSkipJumpResult> {
  const budget = opts.queryBudget;
  const initNumEvals = opts.initNumEvals ?? 100;
  const maxNumEvals = opts.maxNumEvals ?? 10000;
  const gamma = opts.gamma ?? 1;
  const maxIterations = opts.maxIterations ?? Infinity;
  const maxInitTrials = opts.maxInitTrials ?? 10000;
  const chunkRows = opts.chunkRows ?? 1000;
  positiveInteger('queryBudget', budget);
  positiveInteger('initNumEvals', initNumEvals);
  positiveInteger('maxNumEvals', maxNumEvals);
  if (!(gamma > 0) || !Number.isFinite(gamma)) throw new Error(`hopskipjump: gamma must be a finite number > 0, got ${gamma}`);
  if (maxIterations !== Infinity) positiveInteger('maxIterations', maxIterations);
  positiveInteger('maxInitTrials', maxInitTrials);
  positiveInteger('chunkRows', chunkRows);
  assertSeed('hopskipjump', opts.seed);
  const { n, h, w, d, xHost, labelsHost } = await hostBatch('hopskipjump', clf, x, labels);
  const numClasses = clf.numClasses;
  const rng = new Rng(opts.seed);
  const theta = gamma / d ** 1.5;
  const { draws } = clf;
  const queries = new Int32Array(n);
  const left = (i: number) => budget - queries[i];
  const image = (data: Float32Array, i: number) => data.subarray(i * d, (i + 1) * d);
  const distance = (a: ArrayLike<number>, i: number) => {
    let s = 0;
    for (let k = 0; k < d; k++) s += (a[k] - xHost[i * d + k]) ** 2;
    return Math.sqrt(s);
  };

  let calls = 0;
  /**
   * Logits of a batch laid out [copies, owners.length]: row c * m + j is a candidate for image owners[j], which
   * sees the noise it has in the whole batch in every copy. Under expectation over noise each query averages
   * the classifier's draws (and still counts as one query), fresh draws per call.
   */
  const logitsOf = (images: Tensor, owners: number[], copies: number): Tensor => {
    const rows = { indices: owners, of: n };
    const draw0 = calls++ * draws;
    return meanOverDraws(draws, (k) => checkLogits('hopskipjump', clf, clf.logits(images, draw0 + k, copies, rows), copies * owners.length));
  };

  /** Classifier calls for `copies` candidates of each of m images, each call at most chunkRows rows. */
  const chunks = (m: number, copies: number) => {
    const out: { j0: number; images: number; copies: number }[] = [];
    if (copies <= chunkRows) {
      const per = Math.floor(chunkRows / copies);
      for (let j0 = 0; j0 < m; j0 += per) out.push({ j0, images: Math.min(per, m - j0), copies });
    } else {
      for (let j = 0; j < m; j++) for (let c0 = 0; c0 < copies; c0 += chunkRows) out.push({ j0: j, images: 1, copies: Math.min(chunkRows, copies - c0) });
    }
    return out;
  };

  const query = rowQuery('hopskipjump', clf, n, xHost, h, w);
  /** Whether each candidate (row j of `images`, one per image owners[j]) is adversarial; one query each. */
  const decide = async (owners: number[], images: Float32Array): Promise<Uint8Array> => {
    const out = new Uint8Array(owners.length);
    for (const { j0, images: m } of chunks(owners.length, 1)) {
      const part = owners.slice(j0, j0 + m);
      const z = await query(images.subarray(j0 * d, (j0 + m) * d), part, calls++ * draws);
      part.forEach((i, j) => {
        queries[i]++;
        // The first largest logit, as argmax takes it.
        let best = 0;
        for (let c = 1; c < numClasses; c++) if (z[j * numClasses + c] > z[j * numClasses + best]) best = c;
        out[j0 + j] = best !== labelsHost[i] ? 1 : 0;
      });
    }
    return out;
  };

  /** Images grouped by a per-image count, so each group can be laid out [count, images]. */
  const byCount = (owners: number[], count: (i: number) => number) => {
    const groups = new Map<number, number[]>();
    for (const i of owners) {
      const c = count(i);
      if (!groups.has(c)) groups.set(c, []);
      groups.get(c)!.push(i);
    }
    return groups;
  };

  /** Draws `copies` uniform noise images for each of `owners`; the first misclassified one per image, if any. */
  const tryNoise = async (owners: number[], copies: number, found: Map<number, Float32Array>): Promise<void> => {
    for (const ch of chunks(owners.length, copies)) {
      const part = owners.slice(ch.j0, ch.j0 + ch.images);
      // A split image already has its starting point from an earlier part: the rest is not queried.
      if (part.length === 1 && found.has(part[0])) continue;
      const m = part.length;
      const res = noGrad(() =>
        tidy(() => {
          const noise = randomUniform([ch.copies * m, 1, h, w], rng.nextSeed());
          return { noise, pred: argmax(logitsOf(noise, part, ch.copies)) };
        }),
      );
      const [noise, pred] = await readAll([res.noise, res.pred]);
      res.noise.dispose();
      res.pred.dispose();
      part.forEach((i, j) => {
        queries[i] += ch.copies;
        for (let c = 0; c < ch.copies && !found.has(i); c++) {
          const r = c * m + j;
          if (pred[r] !== labelsHost[i]) found.set(i, (noise as Float32Array).slice(r * d, (r + 1) * d));
        }
      });
    }
  };

  const current = new Float32Array(n * d); // x_t, on the adversarial side of the boundary
  const dist = new Float64Array(n); // ||x_t - x||

  /**
   * Batched binary search on the segments from x (blend 0, not adversarial) to far[i] (blend 1, adversarial)
   * until `done(low, high)` or the image's budget is spent; x_t becomes the image at the adversarial end.
   */
  const boundarySearch = async (far: Map<number, Float32Array>, done: (low: number, high: number) => boolean): Promise<void> => {
    const low = new Map<number, number>();
    const high = new Map<number, number>();
    for (const [i, f] of far) {
      low.set(i, 0);
      high.set(i, 1);
      current.set(f, i * d);
    }
    let searching = [...far.keys()];
    for (;;) {
      searching = searching.filter((i) => !done(low.get(i)!, high.get(i)!) && left(i) > 0);
      if (!searching.length) break;
      const mids = searching.map((i) => (low.get(i)! + high.get(i)!) / 2);
      const blends = new Float32Array(searching.length * d);
      searching.forEach((i, j) => {
        const f = far.get(i)!;
        const a = mids[j];
        for (let k = 0; k < d; k++) blends[j * d + k] = Math.min(1, Math.max(0, (1 - a) * xHost[i * d + k] + a * f[k]));
      });
      const adversarial = await decide(searching, blends);
      searching.forEach((i, j) => {
        if (adversarial[j]) {
          high.set(i, mids[j]);
          current.set(image(blends, j), i * d);
        } else low.set(i, mids[j]);
      });
    }
    for (const i of far.keys()) dist[i] = distance(image(current, i), i);
  };

  /**
   * One chunk of a gradient estimate, as tensors: r random unit directions u of size delta around each of k
   * images xt [1, k, d], clipped to [0, 1]; v the direction actually taken once clipped (as the reference code
   * uses it), phi = +1 where the perturbed image is adversarial. Returns [sum_b v, sum_b phi v, sum_b phi] per
   * image; `mask` [r, 1, 1] (0 for padding samples) leaves samples out of the sums.
   */
  const estimateTerms = (xt: Tensor, dl: Tensor, truth: Tensor, mask: Tensor | null, seed: number, r: number, k: number, logits: (images: Tensor) => Tensor): Tensor[] => {
    const z = randomNormal([r, k, d], seed);
    const u = div(z, sqrt(sum(square(z), -1, true)));
    const perturbed = clamp(add(xt, mul(dl, u)), 0, 1);
    const v = div(sub(perturbed, xt), dl);
    const correct = sum(mul(oneHot(argmax(logits(reshape(perturbed, [r * k, 1, h, w]))), numClasses), truth), -1);
    const phi = reshape(affine(correct, -2, 1), [r, k, 1]);
    const [mv, mphi] = mask ? [mul(v, mask), mul(phi, mask)] : [v, phi];
    return [sum(mv, 0), sum(mul(mphi, v), 0), sum(mphi, 0)];
  };

  /**
   * For seeded classifiers a chunk is a compiled function, traced per bucket of (samples, images): samples padded
   * up to the bucket are masked out of the sums, images padded with other rows of the batch are dropped. The
   * sample count grows every iteration, so a bucket spans a quarter of an octave and is replayed until it grows past;
   * the model keeps the last few buckets' traces only, since the count never comes back down.
   */
  const seeded = clf.seeded;
  const estimateChunk = seeded
    ? (() => {
        const f = seeded.model.compiled(
          `hopskipjump estimate ${seeded.key} draws=${draws} of ${n}`,
          () => ([xt, dl, labelHot, mask, rowIds], seeds) => {
            const [r, k] = [mask.shape[0], xt.shape[1]];
            const truth = reshape(broadcastTo(reshape(labelHot, [1, k, numClasses]), [r, k, numClasses]), [r * k, numClasses]);
            return estimateTerms(xt, dl, truth, mask, seeds[0], r, k, (images) => meanOverDraws(draws, (q) => seeded.logits(images, seeds[1 + q], r, { indices: rowIds, of: n })));
          },
          4,
        );
        return (part: number[], base: Float32Array, deltas: Float32Array, r: number): Tensor[] => {
          const k = part.length;
          const [rb, kb] = [quarterOctave(r), Math.min(n, quarterOctave(k))];
          const rows = padRows(part, kb);
          const xt = new Float32Array(kb * d);
          xt.set(base);
          const dl = new Float32Array(kb).fill(1);
          dl.set(deltas);
          const hot = new Float32Array(kb * numClasses);
          rows.forEach((i, j) => (hot[j * numClasses + labelsHost[i]] = 1));
          const seeds = [rng.nextSeed(), ...Array.from({ length: draws }, () => seeded.nextSeed())];
          const inputs = [tensor(xt, [1, kb, d]), tensor(dl, [1, kb, 1]), tensor(hot, [kb, numClasses]), tensor(Float32Array.from({ length: rb }, (_, b) => (b < r ? 1 : 0)), [rb, 1, 1]), tensor(rows, [kb], 'i32')];
          const out = f(inputs, seeds);
          inputs.forEach((t) => t.dispose());
          // The first k images' sums; the padding images' are dropped.
          const cut = out.map((t) => noGrad(() => slice(t, [0, 0], [k, t.shape[1]])));
          out.forEach((t) => t.dispose());
          return cut;
        };
      })()
    : null;

  /**
   * Boundary-normal estimates at x_t for images `owners` with `samples` directions each, step sizes delta[i];
   * returns unit directions (or null where the estimate vanished).
   */
  const estimateGradient = async (owners: number[], samples: number, delta: Float64Array): Promise<Map<number, Float64Array | null>> => {
    const m = owners.length;
    const sumV = new Float64Array(m * d);
    const sumPhiV = new Float64Array(m * d);
    const sumPhi = new Float64Array(m);
    for (const ch of chunks(m, samples)) {
      const part = owners.slice(ch.j0, ch.j0 + ch.images);
      const k = part.length;
      const r = ch.copies;
      const base = new Float32Array(k * d);
      part.forEach((i, j) => base.set(image(current, i), j * d));
      const res = estimateChunk ? estimateChunk(part, base, Float32Array.from(part, (i) => delta[i]), r) : noGrad(() =>
        tidy(() => {
          const xt = tensor(base, [1, k, d]);
          const dl = tensor(Float32Array.from(part, (i) => delta[i]), [1, k, 1]);
          const truth = oneHot(tensor(Array.from({ length: r * k }, (_, row) => labelsHost[part[row % k]]), [r * k], 'i32'), numClasses);
          return estimateTerms(xt, dl, truth, null, rng.nextSeed(), r, k, (images) => logitsOf(images, part, r));
        }),
      );
      const [v, phiV, phi] = await readAll(res);
      res.forEach((t) => t.dispose());
      const j0 = ch.j0;
      for (let e = 0; e < k * d; e++) {
        sumV[j0 * d + e] += v[e];
        sumPhiV[j0 * d + e] += phiV[e];
      }
      part.forEach((i, j) => {
        sumPhi[j0 + j] += phi[j];
        queries[i] += r;
      });
    }
    const out = new Map<number, Float64Array | null>();
    owners.forEach((i, j) => {
      const mean = sumPhi[j] / samples;
      const g = new Float64Array(d);
      for (let e = 0; e < d; e++) {
        const sv = sumV[j * d + e];
        // All decisions alike: the baseline would cancel everything, so the reference keeps +-mean(v).
        g[e] = (Math.abs(mean) === 1 ? mean * sv : sumPhiV[j * d + e] - mean * sv) / samples;
      }
      const norm = Math.hypot(...g);
      out.set(i, norm > 0 && Number.isFinite(norm) ? g.map((e) => e / norm) : null);
    });
    return out;
  };

  // The clean predictions (one query each).
  const every = Array.from({ length: n }, (_, i) => i);
  const cleanAdversarial = await decide(every, xHost);
  const adversarialOut = Float32Array.from(xHost);
  const success = Uint8Array.from(cleanAdversarial);
  const l2 = Float64Array.from(cleanAdversarial, (a) => (a ? 0 : Infinity));

  // Starting points: 1, 2, 4, ... noise images per image and round, so few images need many classifier calls.
  const trials = new Int32Array(n);
  const starts = new Map<number, Float32Array>();
  let searching = every.filter((i) => !cleanAdversarial[i]);
  for (let round = 0; ; round++) {
    searching = searching.filter((i) => !starts.has(i) && left(i) > 0 && trials[i] < maxInitTrials);
    if (!searching.length) break;
    const want = 2 ** Math.min(round, 30);
    const count = (i: number) => Math.min(want, left(i), maxInitTrials - trials[i]);
    for (const [copies, owners] of byCount(searching, count)) {
      owners.forEach((i) => (trials[i] += copies));
      await tryNoise(owners, copies, starts);
    }
  }
  await boundarySearch(starts, (low, high) => high - low <= theta * high);
  const keepBest = (i: number) => {
    success[i] = 1;
    if (dist[i] < l2[i]) {
      l2[i] = dist[i];
      adversarialOut.set(image(current, i), i * d);
    }
  };
  for (const i of starts.keys()) keepBest(i);

  // Each iteration keeps back what its step search (at least one query) and binary search need.
  const searchSteps = binarySearchSteps(theta);
  const reserve = 1 + searchSteps;
  const canIterate = (i: number) => left(i) - reserve >= 1;
  const maxHalvings = 30; // far below f32 resolution; only a stochastic classifier could reject every step
  let active = [...starts.keys()].filter(canIterate);
  const delta = new Float64Array(n);
  for (let t = 1; t <= maxIterations && active.length; t++) {
    const samplesNow = Math.min(Math.floor(initNumEvals * Math.sqrt(t)), maxNumEvals);
    // The last iteration of an image may take fewer samples, so that the whole iteration fits its budget.
    const samples = (i: number) => Math.min(samplesNow, left(i) - reserve);
    for (const i of active) delta[i] = t === 1 ? 0.1 : Math.sqrt(d) * theta * dist[i];
    const grads = new Map<number, Float64Array | null>();
    for (const [b, owners] of byCount(active, samples)) for (const [i, g] of await estimateGradient(owners, b, delta)) grads.set(i, g);

    // Geometric step-size search from xi = ||x_t - x|| / sqrt(t).
    const xi = new Map<number, number>();
    const far = new Map<number, Float32Array>();
    let stepping = active.filter((i) => grads.get(i));
    stepping.forEach((i) => xi.set(i, dist[i] / Math.sqrt(t)));
    for (let halving = 0; halving <= maxHalvings; halving++) {
      stepping = stepping.filter((i) => left(i) > 0);
      if (!stepping.length) break;
      const candidates = new Float32Array(stepping.length * d);
      stepping.forEach((i, j) => {
        const g = grads.get(i)!;
        const s = xi.get(i)!;
        for (let k = 0; k < d; k++) candidates[j * d + k] = Math.min(1, Math.max(0, current[i * d + k] + s * g[k]));
      });
      const adversarial = await decide(stepping, candidates);
      stepping.forEach((i, j) => {
        if (adversarial[j]) far.set(i, candidates.slice(j * d, (j + 1) * d));
        else xi.set(i, xi.get(i)! / 2);
      });
      stepping = stepping.filter((i, j) => !adversarial[j]);
    }
    await boundarySearch(far, (low, high) => high - low <= theta);
    for (const i of far.keys()) keepBest(i);
    active = active.filter(canIterate);
    opts.onIteration?.(t, active.length);
  }

  return { adversarial: tensor(adversarialOut, x.shape), queries, success, l2 };
}

/** v rounded up to a quarter of its octave (v itself up to 4): the padded size of a compiled chunk. */
function quarterOctave(v: number): number {
  if (v <= 4) return v;
  const step = 2 ** (Math.floor(Math.log2(v)) - 2);
  return Math.ceil(v / step) * step;
}
