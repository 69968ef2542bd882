// Typed errors of the public API. Every error carries a stable `code` so that callers (and the CLI, which maps
// codes to exit statuses) can branch on the kind of failure without parsing messages.
// Not for: native failures' text formatting (native/core/check.h produces "CODE: message" strings we parse here).

/** Base class of every error this library throws on purpose. */
export class RepvggError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** An argument has the wrong type (e.g. a Float64Array where float32 data is required). */
export class ArgumentTypeError extends RepvggError {
  constructor(message: string) {
    super('ERR_ARG_TYPE', message);
  }
}

/** An argument has a bad value: out of range, unknown name, non-finite number. */
export class ArgumentValueError extends RepvggError {
  constructor(message: string) {
    super('ERR_ARG_VALUE', message);
  }
}

/** A tensor's shape (rank, channel count, spatial size) does not fit the operation. */
export class ShapeError extends RepvggError {
  constructor(message: string) {
    super('ERR_SHAPE', message);
  }
}

/** A file is missing, truncated, garbled, or not the format we expected. */
export class FormatError extends RepvggError {
  constructor(message: string) {
    super('ERR_FORMAT', message);
  }
}

/** Weights do not match the requested architecture (missing/unexpected keys, shape mismatches). */
export class WeightsMismatchError extends RepvggError {
  constructor(message: string) {
    super('ERR_WEIGHTS_MISMATCH', message);
  }
}

/** A backend is unavailable or failed (addon not built, library missing, native error). */
export class BackendError extends RepvggError {
  constructor(message: string, code = 'ERR_BACKEND') {
    super(code, message);
  }
}

/** An object was used after dispose(). */
export class DisposedError extends RepvggError {
  constructor(what: string) {
    super('ERR_DISPOSED', `${what} was used after dispose()`);
  }
}

/** Describe a received value for error messages: type plus a short rendering. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (ArrayBuffer.isView(value)) {
    return `${value.constructor.name}(${(value as unknown as { length: number }).length})`;
  }
  if (Array.isArray(value)) return `array [${value.slice(0, 8).map(String).join(', ')}${value.length > 8 ? ', ...' : ''}]`;
  if (typeof value === 'string') return `string '${value.length > 60 ? value.slice(0, 60) + '...' : value}'`;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `${typeof value} ${String(value)}`;
  }
  return typeof value;
}

/** Render a shape as [a, b, c]. */
export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** The command line was wrong (unknown flag, missing argument): the CLI exits with status 2. */
export class UsageError extends RepvggError {
  constructor(message: string) {
    super('ERR_USAGE', message);
  }
}

/** A serving queue has no room for a request: the server answers 503 with Retry-After: retryAfterSeconds. */
export class QueueFullError extends RepvggError {
  /** Whole seconds after which a retry is likely to fit, estimated from recent batch compute times (at least 1). */
  readonly retryAfterSeconds: number;
  constructor(message: string, retryAfterSeconds: number) {
    super('ERR_QUEUE_FULL', message);
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** A request's deadline passed before its computation started: it was dropped (HTTP 504). */
export class DeadlineError extends RepvggError {
  constructor(message: string) {
    super('ERR_DEADLINE', message);
  }
}

/** A request was cancelled by its caller (an AbortSignal) before its computation started. */
export class CancelledError extends RepvggError {
  constructor(message: string) {
    super('ERR_CANCELLED', message);
  }
}

/** A service (e.g. the batcher) is draining or closed and accepts no more work (HTTP 503). */
export class ClosedError extends RepvggError {
  constructor(message: string) {
    super('ERR_CLOSED', message);
  }
}
