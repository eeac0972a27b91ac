// Runs in headless Chromium (test/browser.test.ts): the engine on navigator.gpu computes a small network's
// output and gradients, which the test compares with the same computation in Node.
import { init, randomUniform, matmul, relu, square, sum, conv2d, gradients, tidy, readAll } from '../../src/browser.js';

declare global {
  interface Window {
    engineResult?: { adapter: string; values: number[][] } | { error: string };
  }
}

/** The shared computation: seeded Philox inputs, so both sides start from the same bits. */
export async function compute(): Promise<number[][]> {
  const x = randomUniform([37, 29], 1);
  const w = randomUniform([29, 23], 2).requireGrad();
  const img = randomUniform([3, 1, 12, 12], 3);
  const k = randomUniform([4, 1, 5, 5], 4).requireGrad();
  const out = tidy(() => {
    const y = relu(matmul(x, w));
    const c = conv2d(img, k, null, { stride: 2, padding: 2, activation: 'relu' });
    const loss = sum(square(y));
    const lossC = sum(square(c));
    const gw = gradients(loss, null, [w]).get(w)!;
    const gk = gradients(lossC, null, [k]).get(k)!;
    return [y, gw, c, gk];
  });
  return (await readAll(out)).map((a) => Array.from(a));
}

async function main(): Promise<void> {
  try {
    const rt = await init();
    // SwiftShader compiles the software profile's large register tiles for minutes; the GPU profile's in seconds.
    rt.kernelProfile = 'gpu';
    window.engineResult = { adapter: rt.description, values: await compute() };
  } catch (e) {
    window.engineResult = { error: String((e as Error).stack ?? e) };
  }
}

if (typeof window !== 'undefined') void main();
