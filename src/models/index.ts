// The models' public surface (`gencls-webgpu/models`): the seven factorisations, their layers and likelihoods,
// checkpoints in safetensors, training and evaluation, and the black-box attacker's substitute CNN.
export * from './factorisations.js';
export * from './layers.js';
export * from './distributions.js';
export * from './checkpoint.js';
export * from './restore.js';
export * from './store.js';
export * from './train.js';
export * from './substitute.js';
