// The attacks' public surface (`gencls-webgpu/attacks`): the classifier an attack sees, the white-box, black-box
// and detection-aware attacks, and the likelihood-based detectors.
export * from './classifier.js';
export * from './gradient.js';
export * from './deepfool.js';
export * from './cw.js';
export * from './square.js';
export * from './hopskipjump.js';
export * from './transfer.js';
export * from './adaptive.js';
export * from './detection.js';
