/**
 * Reading the small files a colony is configured with (connection files, key files, server
 * configurations, topologies, transaction files) with a bound on their size. `readFileSync` reads
 * to the end, and a path that names a device or a pipe that never ends (/dev/zero, say) is read
 * until the process runs out of memory and aborts; here it is refused at the bound.
 */
import { closeSync, openSync, readSync } from "node:fs";

/** A file that is longer than the bound its reader set. */
export class FileTooLargeError extends Error {
  override name = "FileTooLargeError";
}

const pieceBytes = 64 * 1024;

/** Refuses bytes that are not UTF-8 rather than replace them (a path in a file would change). */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/** The offset of the first byte that makes `bytes` not UTF-8 (it has one). */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  // A prefix decodes in streaming mode (an unfinished sequence at its end allowed) until it takes
  // in the first invalid byte: the shortest prefix that does not ends with it.
  const decodes = (length: number): boolean => {
    try {
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, length), { stream: true });
      return true;
    } catch {
      return false;
    }
  };
  let low = 0;
  let high = bytes.length;
  if (decodes(high)) return high;
  while (high - low > 1) {
    const middle = (low + high) >>> 1;
    if (decodes(middle)) low = middle;
    else high = middle;
  }
  // Decoding failed at byte high - 1; if a character was begun before it and left unfinished, the
  // ill-formed sequence starts at that character's first byte.
  let at = high - 1;
  for (let back = 1; back <= 3 && at - back >= 0; back++) {
    const byte = bytes[at - back] as number;
    if ((byte & 0xc0) === 0x80) continue;
    const length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : 2;
    if ((byte & 0xc0) === 0xc0 && back < length) at -= back;
    break;
  }
  return at;
}

/**
 * The text (UTF-8) of `file`, or of standard input for fd 0, if it is at most `maxBytes` long;
 * otherwise a FileTooLargeError once that many bytes were read. Other errors are those of open
 * and read.
 */
export function readBoundedText(file: string | 0, maxBytes: number): string {
  const fd = file === 0 ? 0 : openSync(file, "r");
  try {
    const pieces: Buffer[] = [];
    let total = 0;
    for (;;) {
      const piece = Buffer.allocUnsafe(Math.min(pieceBytes, maxBytes + 1 - total));
      let read: number;
      try {
        read = readSync(fd, piece, 0, piece.length, null);
      } catch (error) {
        // Standard input in non-blocking mode with nothing yet: wait a moment, as a read would.
        if ((error as NodeJS.ErrnoException).code !== "EAGAIN") throw error;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
        continue;
      }
      if (read === 0) break;
      total += read;
      if (total > maxBytes)
        throw new FileTooLargeError(`${file === 0 ? "standard input" : file} is over ${maxBytes} bytes`);
      pieces.push(piece.subarray(0, read));
    }
    const bytes = Buffer.concat(pieces);
    try {
      return utf8.decode(bytes);
    } catch {
      const at = firstInvalidUtf8(bytes);
      const where = at < bytes.length ? `byte ${at} is not` : "it ends inside a character";
      throw new Error(`it is not UTF-8 text (${where}): save it as UTF-8, paths and names in it included`);
    }
  } finally {
    if (fd !== 0) closeSync(fd);
  }
}
