// Float64 reference convolutions: direct loops over NCHW arrays with PyTorch weight layouts.
import type { Ref } from './tensor.js';

export interface RefConvOptions {
  stride: [number, number];
  /** Zero padding before the input (top, left). */
  padding: [number, number];
}

/**
 * y[n, co, oy, ox] = b[co] + sum w[co, ci, ky, kx] x[n, ci, oy*s - pT + ky, ox*s - pL + kx], for an explicit output
 * size (so asymmetric 'same' padding is the caller's choice of outSize).
 */
export function refConv2d(x: Ref, w: Ref, b: Ref | null, opts: RefConvOptions & { outputSize: [number, number] }): Ref {
  const [N, Cin, H, W] = x.shape;
  const [Cout, , KH, KW] = w.shape;
  const [Ho, Wo] = opts.outputSize;
  const [sh, sw] = opts.stride;
  const [pt, pl] = opts.padding;
  const y = new Float64Array(N * Cout * Ho * Wo);
  for (let n = 0; n < N; n++)
    for (let co = 0; co < Cout; co++)
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          let s = b ? b.data[co] : 0;
          for (let ci = 0; ci < Cin; ci++)
            for (let ky = 0; ky < KH; ky++) {
              const iy = oy * sh - pt + ky;
              if (iy < 0 || iy >= H) continue;
              for (let kx = 0; kx < KW; kx++) {
                const ix = ox * sw - pl + kx;
                if (ix < 0 || ix >= W) continue;
                s += w.data[((co * Cin + ci) * KH + ky) * KW + kx] * x.data[((n * Cin + ci) * H + iy) * W + ix];
              }
            }
          y[((n * Cout + co) * Ho + oy) * Wo + ox] = s;
        }
  return { shape: [N, Cout, Ho, Wo], data: y };
}

/**
 * PyTorch ConvTranspose2d with weight [Cin, Cout, kh, kw]: every input pixel scatters w[ci, co] into
 * y[n, co, iy*s - p + ky, ix*s - p + kx]; output size (H - 1)*s - 2p + k + outputPadding.
 */
export function refConvTranspose2d(x: Ref, w: Ref, b: Ref | null, opts: RefConvOptions & { outputPadding: [number, number] }): Ref {
  const [N, Cin, H, W] = x.shape;
  const [, Cout, KH, KW] = w.shape;
  const [sh, sw] = opts.stride;
  const [ph, pw] = opts.padding;
  const Ho = (H - 1) * sh - 2 * ph + KH + opts.outputPadding[0];
  const Wo = (W - 1) * sw - 2 * pw + KW + opts.outputPadding[1];
  const y = new Float64Array(N * Cout * Ho * Wo);
  for (let n = 0; n < N; n++)
    for (let co = 0; co < Cout; co++) {
      const bias = b ? b.data[co] : 0;
      for (let i = 0; i < Ho * Wo; i++) y[(n * Cout + co) * Ho * Wo + i] = bias;
    }
  for (let n = 0; n < N; n++)
    for (let ci = 0; ci < Cin; ci++)
      for (let iy = 0; iy < H; iy++)
        for (let ix = 0; ix < W; ix++) {
          const v = x.data[((n * Cin + ci) * H + iy) * W + ix];
          for (let co = 0; co < Cout; co++)
            for (let ky = 0; ky < KH; ky++) {
              const oy = iy * sh - ph + ky;
              if (oy < 0 || oy >= Ho) continue;
              for (let kx = 0; kx < KW; kx++) {
                const ox = ix * sw - pw + kx;
                if (ox < 0 || ox >= Wo) continue;
                y[((n * Cout + co) * Ho + oy) * Wo + ox] += v * w.data[((ci * Cout + co) * KH + ky) * KW + kx];
              }
            }
        }
  return { shape: [N, Cout, Ho, Wo], data: y };
}
