// The single-op API in one import: every op has an async form (Promise, off the event loop) and a *Sync form.
export * from './conv.js';
export * from './norm.js';
export * from './eltwise.js';
export * from './pool.js';
export * from './linear.js';
export * from './loss.js';
export * from './layout.js';
export { retainFreedMemory } from './alloc.js';
