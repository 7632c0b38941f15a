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
    return Buffer.concat(pieces).toString("utf8");
  } finally {
    if (fd !== 0) closeSync(fd);
  }
}
