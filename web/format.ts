// What web/assets.ts writes and the page reads: plain data, shared so the two cannot drift apart.
import type { Detectors } from '../src/attacks/detection.js';

/** The models the page shows: the shipped compact checkpoints (checkpoints/<key>-compact.safetensors). */
export const PAGE_MODELS = ['dfz', 'gfz'] as const;
export type PageModel = (typeof PAGE_MODELS)[number];

export interface PageDetectorsFile {
  format: 'gencls-page-detectors-v1';
  /** The command that wrote the file, with its options. */
  command: string;
  adapter: string;
  createdAt: string;
  testImages: { count: number; source: string };
  /** Logits of the first `trainImages` training images, K = `samples`, one noise seed per batch from `seed`'s stream. */
  fit: { trainImages: number; samples: number; seed: number; batchSize: number; falsePositiveRate: number };
  models: Partial<Record<PageModel, { checkpoint: string; sha256: string; epoch: number; detectors: Detectors }>>;
}
