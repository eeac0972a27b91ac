// The pointwise maps as WGSL expressions, shared by the elementwise kernels (one op per dispatch) and the fused
// kernels (src/kernels/fusion.ts: a chain of them in one dispatch).
/** WGSL expressions over `x` (and uniform params `a`, `b`); numerically stable where it matters. */
export const UNARY_OPS = {
  /** The value itself: broadcastTo as a fused read. */
  identity: 'x',
  neg: '-x',
  exp: 'exp(x)',
  log: 'log(x)',
  sqrt: 'sqrt(x)',
  square: 'x * x',
  abs: 'abs(x)',
  sign: 'sign(x)',
  relu: 'max(x, 0.0)',
  step: 'select(0.0, 1.0, x > 0.0)',
  sigmoid: 'stableSigmoid(x)',
  softplus: 'max(x, 0.0) + log1p(exp(-abs(x)))',
  tanh: 'stableTanh(x)',
  clamp: 'clamp(x, a, b)',
  /** x * a + b: scalar scale and shift. */
  affine: 'fma(x, a, b)',
  /** |x|^a, used by p-norms. */
  powAbs: 'pow(abs(x), a)',
  reciprocal: '1.0 / x',
} as const;
export type UnaryOp = keyof typeof UNARY_OPS;

/** WGSL expressions over `x`, `y` (and uniform params `a`, `b`). Ops suffixed Grad are fused backward maps: (x = upstream gradient, y = saved value). */
export const BINARY_OPS = {
  add: 'x + y',
  sub: 'x - y',
  mul: 'x * y',
  div: 'x / y',
  maximum: 'max(x, y)',
  minimum: 'min(x, y)',
  ge: 'select(0.0, 1.0, x >= y)',
  gt: 'select(0.0, 1.0, x > y)',
  eq: 'select(0.0, 1.0, x == y)',
  reluGrad: 'select(0.0, x, y > 0.0)',
  sigmoidGrad: 'x * y * (1.0 - y)',
  tanhGrad: 'x * (1.0 - y * y)',
  softplusGrad: 'x * stableSigmoid(y)',
  sqrtGrad: 'x * 0.5 / y',
  clampGrad: 'select(0.0, x, y >= a && y <= b)',
  /** gradient of |y|^a: x * a * |y|^(a-1) * sign(y) (zero at y = 0 for a > 1). */
  powAbsGrad: 'select(0.0, x * a * pow(abs(y), a - 1.0) * sign(y), y != 0.0)',
} as const;
export type BinaryOp = keyof typeof BINARY_OPS;
