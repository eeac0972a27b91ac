// Reverse mode: topologically sort the graph behind an output, then run each node's backward closure.
import { Tensor, noGrad, keep, fmt } from './tensor.js';
import { add } from './ops/elementwise.js';
import { full } from './ops/shape.js';
import { binaryKernel } from '../kernels/elementwise.js';

function topoSort(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative DFS: deep graphs (long training graphs, many attack iterations) must not overflow the stack.
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [node, i] = top;
    if (i < node.parents.length) {
      top[1]++;
      const p = node.parents[i];
      if (p.requiresGrad && !seen.has(p)) {
        seen.add(p);
        stack.push([p, 0]);
      }
    } else {
      order.push(node);
      stack.pop();
    }
  }
  return order;
}

/**
 * Gradients of `output` (seeded with `seed`, default ones) with respect to every tensor in its graph, or, given
 * `wrt`, only along paths that reach those tensors: an attack's input gradient computes no weight gradients.
 *
 * A fused activation's derivative is folded into the kernel that produces its output's gradient (the next layer's
 * input gradient, through reshapes), saving a pass over memory per layer; a contribution from an op that cannot
 * fold it gets it applied on its own. The gradient of such an output is then never formed, so it is left out of
 * the map unless it is named in `wrt`.
 */
export function gradients(output: Tensor, seed?: Tensor | null, wrt?: readonly Tensor[]): Map<Tensor, Tensor> {
  if (!output.requiresGrad) throw new Error(`backward: output ${fmt(output.shape)} does not depend on any tensor that requires a gradient`);
  if (!seed && output.size !== 1) throw new Error(`backward: output has shape ${fmt(output.shape)}; pass a seed gradient for non-scalar outputs`);
  if (seed && seed.size !== output.size) throw new Error(`backward: seed ${fmt(seed.shape)} does not match output ${fmt(output.shape)}`);
  return noGrad(() => {
    const order = topoSort(output);
    // Parents come before children in `order`, so one forward sweep finds every node a target depends on.
    let leadsToTarget: Set<Tensor> | null = null;
    if (wrt) {
      const reach = new Set<Tensor>(wrt);
      for (const node of order) if (node.parents.some((p) => reach.has(p))) reach.add(node);
      leadsToTarget = reach;
    }
    const targets = new Set<Tensor>(wrt ?? []);
    const wants = new Map<Tensor, boolean>();
    // Whether t's gradient is formed with its activation's derivative applied: not for targets, and through a
    // reshape only when its parent's is too (the reshape hands its gradient on unchanged).
    const wantsMask = (t: Tensor): boolean => {
      let w = wants.get(t);
      if (w === undefined) {
        w = t.gradActivation !== null && !targets.has(t) && (!t.maskTransparent || wantsMask(t.parents[0]));
        wants.set(t, w);
      }
      return w;
    };
    const masked = new Set<Tensor>();
    const grads = new Map<Tensor, Tensor>([[output, seed ?? full(output.shape, 1)]]);
    for (const node of order.reverse()) {
      const g = grads.get(node);
      if (!g || !node.backwardFn) continue;
      const need = node.parents.map((p) => p.requiresGrad && (!leadsToTarget || leadsToTarget.has(p)));
      const fold = node.parents.map((p, i) => (node.foldsMask?.[i] && need[i] && wantsMask(p) ? { activation: p.gradActivation!, y: p } : null));
      const pgs = node.backwardFn(g, need, { masked: masked.has(node), fold });
      node.parents.forEach((p, i) => {
        let pg = pgs[i];
        if (!pg || !need[i]) return;
        if (wantsMask(p)) {
          const carries = fold[i] !== null || (node.maskTransparent && masked.has(node));
          if (!carries) pg = binaryKernel(p.gradActivation === 'relu' ? 'reluGrad' : 'sigmoidGrad', pg, p);
          masked.add(p);
        }
        const prev = grads.get(p);
        grads.set(p, prev ? add(prev, pg) : pg);
      });
    }
    // Folded gradients are partial (the derivative already applied) and nobody asked for them.
    for (const t of masked) {
      grads.get(t)?.dispose();
      grads.delete(t);
    }
    return grads;
  });
}

/** Accumulates d(output)/d(leaf) into `.grad` of every leaf that requires a gradient. */
export function backward(output: Tensor, seed?: Tensor): void {
  for (const [t, g] of gradients(output, seed)) {
    if (t.parents.length > 0 || t === output) continue;
    if (t.grad) {
      const sum = noGrad(() => add(t.grad!, g));
      t.grad.dispose();
      t.grad = keep(sum);
    } else {
      // A gradient may alias another tensor (e.g. add passes g through); copy so `.grad` owns its buffer.
      t.grad = keep(noGrad(() => add(g, full([], 0))));
    }
  }
}

/**
 * Functional form: `valueAndGrad(f)(...args)` evaluates f and returns its scalar value with the gradient
 * with respect to each argument. Arguments need not require gradients; they are watched for this call.
 */
export function valueAndGrad<A extends Tensor[]>(f: (...args: A) => Tensor) {
  return (...args: A): { value: Tensor; grads: Tensor[] } => {
    const saved = args.map((a) => a.requiresGrad);
    args.forEach((a) => a.requireGrad(true));
    try {
      const value = f(...args);
      const grads = gradients(value);
      return {
        value,
        grads: args.map((a) => grads.get(a) ?? noGrad(() => full(a.shape, 0))),
      };
    } finally {
      args.forEach((a, i) => (a.requiresGrad = saved[i]));
    }
  };
}

export function grad<A extends Tensor[]>(f: (...args: A) => Tensor) {
  const vg = valueAndGrad(f);
  return (...args: A): Tensor[] => vg(...args).grads;
}
