// File access shared by the readers and writers in lib/io: whole-file reads that fail with a typed error naming
// the argument, and writes that never leave a partial file behind (temp file in the same folder, then rename).
// Not for: parsing any format (npy.ts, safetensors.ts) or streaming files too large to hold in memory.

import { randomBytes } from 'node:crypto';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ArgumentTypeError, ArgumentValueError, describeValue } from '../errors.js';

/** Short human reasons for the errno codes a read or write of a user-named path typically hits. */
const ERRNO_REASONS: Record<string, string> = {
  ENOENT: 'not found',
  ENOTDIR: 'a parent is not a directory',
  EISDIR: 'is a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  ENAMETOOLONG: 'name too long',
};

function errnoReason(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code !== undefined) return ERRNO_REASONS[code] ?? code;
  return error instanceof Error ? error.message : String(error);
}

function checkPathArgument(path: unknown, argName: string): asserts path is string {
  if (typeof path !== 'string' || path.length === 0) {
    throw new ArgumentTypeError(`Expected a non-empty string path for ${argName} but received ${describeValue(path)}`);
  }
}

/**
 * Read a whole file.
 * @param argName - how the caller's user named this path (e.g. 'input', '--weights'), used in error messages.
 * @throws ArgumentTypeError when path is not a non-empty string.
 * @throws ArgumentValueError when the file is missing or unreadable, e.g.
 *   `Expected an existing file for input but received 'x.npy' (not found)`.
 */
export async function readFileChecked(path: string, argName: string): Promise<Buffer> {
  checkPathArgument(path, argName);
  try {
    return await readFile(path);
  } catch (error) {
    throw readError(path, argName, error);
  }
}

/** The typed error for a failed read of a user-named path. */
function readError(path: string, argName: string, error: unknown): ArgumentValueError {
  const adjective = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'an existing' : 'a readable';
  const wrapped = new ArgumentValueError(`Expected ${adjective} file for ${argName} but received '${path}' (${errnoReason(error)})`);
  wrapped.cause = error;
  return wrapped;
}

/**
 * The first `length` bytes of a file (fewer when the file is shorter), e.g. to tell formats apart by magic bytes.
 * @throws ArgumentValueError when the file is missing or unreadable, worded as {@link readFileChecked}.
 */
export async function readFileHead(path: string, length: number, argName: string): Promise<Buffer> {
  checkPathArgument(path, argName);
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'r');
    const head = Buffer.alloc(length);
    const { bytesRead } = await handle.read(head, 0, length, 0);
    return head.subarray(0, bytesRead);
  } catch (error) {
    throw readError(path, argName, error);
  } finally {
    await handle?.close();
  }
}

/** Names of writeFileAtomic's temp files: `.NAME.PID.RANDOM.tmp` (what a killed writer leaves behind). */
export const TEMP_FILE_PATTERN = /^\..+\.\d+\.[0-9a-f]{12}\.tmp$/;

/** Write every byte of every chunk; FileHandle.write may write less than asked. */
async function writeAll(handle: FileHandle, chunks: readonly Uint8Array[]): Promise<void> {
  for (const chunk of chunks) {
    let written = 0;
    while (written < chunk.byteLength) {
      const { bytesWritten } = await handle.write(chunk, written, chunk.byteLength - written, null);
      written += bytesWritten;
    }
  }
}

/**
 * Write a file so that readers see either the old content or the complete new content, never a partial file:
 * the data goes to a temp file in the destination's folder, is flushed to disk, then renamed over the path.
 * Passing a list of chunks avoids concatenating large tensors into one buffer first.
 * @param argName - how the caller's user named this path, used in error messages.
 * @throws ArgumentTypeError when path is not a non-empty string.
 * @throws ArgumentValueError when the destination cannot be written (missing folder, permissions, full disk),
 *   e.g. `Expected a writable path for output but received 'out/x.npy' (folder does not exist)`; the temp file is removed.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | readonly Uint8Array[], argName = 'path'): Promise<void> {
  checkPathArgument(path, argName);
  const chunks = data instanceof Uint8Array ? [data] : data;
  // A leading dot keeps the temp file out of casual listings; the random part lets writers run concurrently.
  const tempPath = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let handle: FileHandle | undefined;
  let tempCreated = false;
  try {
    handle = await open(tempPath, 'wx');
    tempCreated = true;
    await writeAll(handle, chunks);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await rename(tempPath, path);
  } catch (error) {
    await handle?.close().catch(() => undefined);
    if (tempCreated) await unlink(tempPath).catch(() => undefined);
    // ENOENT on a write means the folder is missing, which 'not found' would leave unclear.
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'folder does not exist' : errnoReason(error);
    const wrapped = new ArgumentValueError(`Expected a writable path for ${argName} but received '${path}' (${reason})`);
    wrapped.cause = error;
    throw wrapped;
  }
}
