// 2-D convolution and transposed convolution (NCHW, PyTorch semantics and weight layouts) with fused bias and
// activation, each forward beside its vector-Jacobian product.
import { Tensor, record, fmt } from '../tensor.js';
import {
  conv2dForward,
  conv2dBackwardInput,
  conv2dBackwardFilter,
  conv2dBackwardFilterBias,
  convTranspose2dForward,
  convTranspose2dBackwardInput,
  convTranspose2dBackwardFilter,
  convTranspose2dOutputSize,
  type Activation,
  type Conv2dParams,
  type ConvTranspose2dParams,
} from '../../kernels/conv.js';
import { binaryKernel } from '../../kernels/elementwise.js';
import { sum } from './base.js';

export type ConvActivation = Activation;

export interface Conv2dOptions {
  stride?: number | [number, number];
  /** Symmetric zero padding, or 'same': output ceil(H / stride), the odd pixel of padding on the bottom/right (as TensorFlow). */
  padding?: number | [number, number] | 'same';
  activation?: ConvActivation;
}

export interface ConvTranspose2dOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
  /** Extra rows/columns on the bottom/right of the output; must be smaller than the stride. */
  outputPadding?: number | [number, number];
  activation?: ConvActivation;
}

const ACTIVATIONS: readonly ConvActivation[] = ['none', 'relu', 'sigmoid'];

/** An integer option >= min given as one number or an [h, w] pair. */
function pair(op: string, name: string, v: number | readonly number[] | undefined, fallback: number, min: number): [number, number] {
  const p = v === undefined ? [fallback, fallback] : typeof v === 'number' ? [v, v] : [...v];
  if (p.length !== 2 || !p.every((d) => Number.isInteger(d) && d >= min)) {
    throw new Error(`${op}: ${name} must be an integer >= ${min} or a pair of them, got ${Array.isArray(v) ? fmt(v) : String(v)}`);
  }
  return p as [number, number];
}

function checkActivation(op: string, a: ConvActivation | undefined): ConvActivation {
  const act = a ?? 'none';
  if (!ACTIVATIONS.includes(act)) throw new Error(`${op}: activation must be one of ${ACTIVATIONS.join(', ')}, got '${String(a)}'`);
  return act;
}

function checkInputs(op: string, x: Tensor, weight: Tensor, bias: Tensor | null, inChannelsAxis: number, outChannelsAxis: number, layout: string): void {
  for (const [what, t] of [['x', x], ['weight', weight], ['bias', bias]] as const) {
    if (t && t.dtype !== 'f32') throw new Error(`${op}: ${what} must be f32, got ${t.dtype}`);
  }
  if (x.rank !== 4) throw new Error(`${op}: x must be [N, C, H, W], got ${fmt(x.shape)}`);
  if (weight.rank !== 4) throw new Error(`${op}: weight must be ${layout}, got ${fmt(weight.shape)}`);
  if (weight.shape[inChannelsAxis] !== x.shape[1]) {
    throw new Error(`${op}: weight ${fmt(weight.shape)} (${layout}) expects ${weight.shape[inChannelsAxis]} input channels, but x ${fmt(x.shape)} has ${x.shape[1]}`);
  }
  const cout = weight.shape[outChannelsAxis];
  if (bias && (bias.rank !== 1 || bias.shape[0] !== cout)) throw new Error(`${op}: bias must be [${cout}], got ${fmt(bias.shape)}`);
}

/** The upstream gradient through a fused activation, from the saved output y. */
function throughActivation(act: ConvActivation, g: Tensor, y: Tensor): Tensor {
  if (act === 'relu') return binaryKernel('reluGrad', g, y);
  if (act === 'sigmoid') return binaryKernel('sigmoidGrad', g, y);
  return g;
}

/**
 * 2-D convolution as PyTorch's F.conv2d: x [N, Cin, H, W], weight [Cout, Cin, kh, kw], bias [Cout] -> [N, Cout, Ho, Wo]
 * with Ho = floor((H + 2p - kh) / s) + 1, then the activation (fused).
 */
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  const op = 'conv2d';
  checkInputs(op, x, weight, bias, 1, 0, '[Cout, Cin, kh, kw]');
  const stride = pair(op, 'stride', opts.stride, 1, 1);
  const act = checkActivation(op, opts.activation);
  const [h, w] = [x.shape[2], x.shape[3]];
  const kernel = [weight.shape[2], weight.shape[3]];
  let padding: [number, number];
  let outputSize: [number, number];
  if (opts.padding === 'same') {
    outputSize = [Math.ceil(h / stride[0]), Math.ceil(w / stride[1])];
    padding = [0, 1].map((d) => Math.floor(Math.max((outputSize[d] - 1) * stride[d] + kernel[d] - [h, w][d], 0) / 2)) as [number, number];
  } else {
    const pad = pair(op, 'padding', opts.padding, 0, 0);
    if (h + 2 * pad[0] < kernel[0] || w + 2 * pad[1] < kernel[1]) {
      throw new Error(`${op}: kernel ${kernel[0]}x${kernel[1]} is larger than the padded input ${h + 2 * pad[0]}x${w + 2 * pad[1]} (x ${fmt(x.shape)}, padding ${fmt(pad)})`);
    }
    padding = pad;
    outputSize = [0, 1].map((d) => Math.floor(([h, w][d] + 2 * pad[d] - kernel[d]) / stride[d]) + 1) as [number, number];
  }
  const params: Conv2dParams = { stride, padding, outputSize };
  const y = conv2dForward(x, weight, bias, { ...params, activation: act });
  return record(y, op, bias ? [x, weight, bias] : [x, weight], (g, need, ctx) => {
    const gz = ctx.masked ? g : throughActivation(act, g, y);
    // The weight's and the bias's gradients in one pass where both are wanted.
    const both = bias && need[1] && need[2] ? conv2dBackwardFilterBias(x, gz, weight.shape, params) : null;
    const grads = [
      need[0] ? conv2dBackwardInput(gz, weight, x.shape, params, ctx.fold[0]) : null,
      both ? both.dw : need[1] ? conv2dBackwardFilter(x, gz, weight.shape, params) : null,
      ...(bias ? [both ? both.db : need[2] ? sum(gz, [0, 2, 3]) : null] : []),
    ];
    if (gz !== g) gz.dispose();
    return grads;
  }, { gradActivation: act === 'none' ? null : act, foldsMask: [true, false, false] });
}

/**
 * Transposed convolution as PyTorch's F.conv_transpose2d: x [N, Cin, H, W], weight [Cin, Cout, kh, kw], bias [Cout]
 * -> [N, Cout, Ho, Wo] with Ho = (H - 1) * s - 2p + kh + outputPadding, then the activation (fused).
 */
export function convTranspose2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: ConvTranspose2dOptions = {}): Tensor {
  const op = 'convTranspose2d';
  checkInputs(op, x, weight, bias, 0, 1, '[Cin, Cout, kh, kw]');
  const stride = pair(op, 'stride', opts.stride, 1, 1);
  const padding = pair(op, 'padding', opts.padding, 0, 0);
  const outputPadding = pair(op, 'outputPadding', opts.outputPadding, 0, 0);
  if (outputPadding[0] >= stride[0] || outputPadding[1] >= stride[1]) {
    throw new Error(`${op}: outputPadding ${fmt(outputPadding)} must be smaller than the stride ${fmt(stride)}`);
  }
  const act = checkActivation(op, opts.activation);
  const params: ConvTranspose2dParams = { stride, padding, outputPadding };
  const out = convTranspose2dOutputSize([x.shape[2], x.shape[3]], [weight.shape[2], weight.shape[3]], params);
  if (out[0] < 1 || out[1] < 1) {
    throw new Error(`${op}: output size ${out[0]}x${out[1]} is not positive (x ${fmt(x.shape)}, weight ${fmt(weight.shape)}, padding ${fmt(padding)})`);
  }
  const y = convTranspose2dForward(x, weight, bias, { ...params, activation: act });
  return record(y, op, bias ? [x, weight, bias] : [x, weight], (g, need, ctx) => {
    const gz = ctx.masked ? g : throughActivation(act, g, y);
    const grads = [
      need[0] ? convTranspose2dBackwardInput(gz, weight, x.shape, params, ctx.fold[0]) : null,
      need[1] ? convTranspose2dBackwardFilter(x, gz, weight.shape, params) : null,
      ...(bias ? [need[2] ? sum(gz, [0, 2, 3]) : null] : []),
    ];
    if (gz !== g) gz.dispose();
    return grads;
  }, { gradActivation: act === 'none' ? null : act, foldsMask: [true, false, false] });
}
