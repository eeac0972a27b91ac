// Transfer (grey-box) attacks: adversarial examples crafted with a white-box attack on a substitute classifier,
// then shown to the target, which the attack never queried.
import { Tensor, tidy, noGrad, argmax } from '../engine.js';
import { type Classifier, checkLabels } from './classifier.js';

/** A white-box attack bound to its options, e.g. `(clf, x, y) => fgs(clf, x, y, { eps: 0.1 })`. */
export type CraftAttack = (clf: Classifier, x: Tensor, labels: Tensor) => Promise<Tensor>;

export interface TransferResult {
  adversarial: Tensor;
  /** The target's predictions on the adversarial images (its noise draw 0). */
  targetPredictions: Int32Array;
  /** The substitute's predictions on the same images, to compare how well the attack worked where it was crafted. */
  substitutePredictions: Int32Array;
}

async function predict(clf: Classifier, x: Tensor): Promise<Int32Array> {
  const pred = noGrad(() => tidy(() => argmax(clf.logits(x, 0))));
  const host = (await pred.data()) as Int32Array;
  pred.dispose();
  return host;
}

export async function transferAttack(substitute: Classifier, target: Classifier, x: Tensor, labels: Tensor, craft: CraftAttack): Promise<TransferResult> {
  if (substitute.numClasses !== target.numClasses) {
    throw new Error(`transfer: substitute '${substitute.name}' has ${substitute.numClasses} classes but target '${target.name}' has ${target.numClasses}`);
  }
  checkLabels('transfer', x, labels);
  const adversarial = await craft(substitute, x, labels);
  if (adversarial.shape.length !== x.shape.length || adversarial.shape.some((dim, k) => dim !== x.shape[k])) {
    adversarial.dispose();
    throw new Error(`transfer: the attack returned shape [${adversarial.shape.join(', ')}] for images [${x.shape.join(', ')}]`);
  }
  const [targetPredictions, substitutePredictions] = [await predict(target, adversarial), await predict(substitute, adversarial)];
  return { adversarial, targetPredictions, substitutePredictions };
}
