/**
 * Free space on the file system that holds a server's data directory, for its metrics and for
 * the messages of storage failures. A full disk shows up in lmdb as "Input/output error" (a
 * short write is reported as EIO) and in the journal as ENOSPC only when the file must grow, so
 * the failure's own message rarely says what an operator has to do; the free space next to it
 * does.
 */
import { statfsSync } from "node:fs";

/**
 * Below this, a server's storage counts as full. lmdb grows its file as checkpoints need pages,
 * and each journal file is preallocated to 8 MiB when it is created or reset, so a data
 * directory with less than this left cannot be relied on to take the next checkpoint.
 */
export const diskNearlyFullBytes = 64 * 1024 * 1024;

/**
 * Bytes an unprivileged process may still write on the file system holding `path` (statfs's
 * available blocks, not its free ones: root's reserve is not the server's), or null when the
 * file system cannot be asked (the path is gone, or the platform has no statfs).
 */
export function freeBytes(path: string): number | null {
  try {
    const stats = statfsSync(path);
    return stats.bavail * stats.bsize;
  } catch {
    return null;
  }
}

/**
 * What to add to a storage failure's message: the free space where `path` lives and, when it is
 * nearly gone, that the disk is full and what to do. Empty when the space cannot be read, and,
 * with `onlyWhenFull`, unless the disk is full.
 */
export function diskSpaceNote(
  path: string,
  { onlyWhenFull = false, free = freeBytes(path) }: { onlyWhenFull?: boolean; free?: number | null } = {},
): string {
  if (free === null) return "";
  const amount = `${formatBytes(free)} free on the file system holding ${path}`;
  if (free < diskNearlyFullBytes)
    return `; the disk is full (${amount}): free space there, then start the server again`;
  return onlyWhenFull ? "" : `; ${amount}`;
}

/**
 * Below this a running server warns in its log, once a minute while it stays below: room for a
 * few minutes of a busy server's journal and checkpoints, time for an operator to act before
 * the server has to stop.
 */
export const diskLowBytes = 256 * 1024 * 1024;

/** The warning for a data directory with `free` bytes left, or null above diskLowBytes. */
export function diskLowWarning(path: string, free: number | null): string | null {
  if (free === null || free >= diskLowBytes) return null;
  return (
    `the disk is nearly full: ${formatBytes(free)} free on the file system holding ${path}; ` +
    "the server stops once it cannot make a write durable: free space there"
  );
}

function formatBytes(bytes: number): string {
  if (bytes < 1024 * 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
  return `${(bytes / (1024 * 1024 * 1024)).toFixed(1)} GiB`;
}
