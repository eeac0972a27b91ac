// Float64 reference Adam (torch.optim.Adam / AdamW update rules), one parameter array at a time.
// A parameter with no gradient in a step is skipped and keeps its own step count, as in PyTorch.

export interface RefAdamOptions {
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  decoupledWeightDecay?: boolean;
}

export class RefAdam {
  readonly params: Float64Array[];
  readonly m: Float64Array[];
  readonly v: Float64Array[];
  readonly steps: number[];
  private readonly o: Required<RefAdamOptions>;

  constructor(initial: ArrayLike<number>[], opts: RefAdamOptions = {}) {
    this.o = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, decoupledWeightDecay: false, ...opts };
    this.params = initial.map((p) => Float64Array.from(p));
    this.m = this.params.map((p) => new Float64Array(p.length));
    this.v = this.params.map((p) => new Float64Array(p.length));
    this.steps = this.params.map(() => 0);
  }

  set lr(value: number) {
    this.o.lr = value;
  }

  step(grads: (ArrayLike<number> | null)[]): void {
    const { lr, beta1, beta2, eps, weightDecay, decoupledWeightDecay } = this.o;
    grads.forEach((g, k) => {
      if (!g) return;
      const t = ++this.steps[k];
      const p = this.params[k];
      const m = this.m[k];
      const v = this.v[k];
      const bias1 = 1 - beta1 ** t;
      const bias2 = 1 - beta2 ** t;
      for (let i = 0; i < p.length; i++) {
        let gi = g[i];
        if (decoupledWeightDecay) p[i] *= 1 - lr * weightDecay;
        else gi += weightDecay * p[i];
        m[i] = beta1 * m[i] + (1 - beta1) * gi;
        v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
        p[i] -= ((lr / bias1) * m[i]) / (Math.sqrt(v[i] / bias2) + eps);
      }
    });
  }
}
