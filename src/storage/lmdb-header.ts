/**
 * A look at an lmdb environment's data file before lmdb maps it. lmdb trusts its file: one cut
 * short of the pages its header names is read past its end (SIGBUS), and a header it cannot read
 * may make it read at random (SIGSEGV); either kills the server without a word. This checks the
 * two meta pages at the start of `data.mdb` (lmdb's MDB_meta: the magic 0xBEEFC0DE, then the
 * version, the map address and size, two database records of which the first carries the page
 * size, the last page used and the transaction id) and the file's length against the newer of
 * them. Damage deeper in the file is beyond it: lmdb keeps no checksums of its pages, and the
 * records' own CRCs (docs/PROTOCOL.md section 11a) catch damaged values.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { join } from "node:path";

const metaMagic = 0xbeefc0de;
/**
 * Where the magic sits in a meta page: after a page header of 24 bytes (the lmdb build lmdb-js
 * ships keeps a transaction id in each page header) or of 16 (lmdb 0.9).
 */
const magicOffsets = [24, 16] as const;
/** From the magic: version 4, map address 8, map size 8, then the two database records. */
const databasesFromMagic = 24;
/** From the first database record: two records of 48 bytes, then the last page and the transaction id. */
const lastPageFromDatabases = 96;
const transactionFromDatabases = 104;
const metaBytesMax = magicOffsets[0] + databasesFromMagic + transactionFromDatabases + 8;

interface Meta {
  readonly pageSize: number;
  readonly lastPage: number;
  readonly transaction: bigint;
}

function readMeta(page: Buffer): Meta | null {
  for (const at of magicOffsets) {
    const databases = at + databasesFromMagic;
    if (page.length < databases + transactionFromDatabases + 8 || page.readUInt32LE(at) !== metaMagic)
      continue;
    const pageSize = page.readUInt32LE(databases);
    // A power of two an lmdb page can be.
    if (pageSize < 256 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) return null;
    const lastPage = page.readBigUInt64LE(databases + lastPageFromDatabases);
    if (lastPage > BigInt(Number.MAX_SAFE_INTEGER)) return null;
    return {
      pageSize,
      lastPage: Number(lastPage),
      transaction: page.readBigUInt64LE(databases + transactionFromDatabases),
    };
  }
  return null;
}

/**
 * Why the data file of the lmdb environment in `directory` cannot be opened safely, or null if
 * its header holds together (or there is no file yet, or an empty one, which lmdb starts afresh).
 */
export function environmentFileProblem(directory: string): string | null {
  const file = join(directory, "data.mdb");
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) return `${file} is not a file: it is lmdb's data file, or should be`;
    const size = stats.size;
    if (size === 0) return null;
    const read = (at: number): Buffer => {
      const page = Buffer.alloc(Math.max(0, Math.min(metaBytesMax, size - at)));
      if (page.length > 0) readSync(fd, page, 0, page.length, at);
      return page;
    };
    const first = readMeta(read(0));
    if (first === null)
      return `${file} (${size} bytes) does not start with an lmdb header: it is damaged, or not this server's data file`;
    const second = readMeta(read(first.pageSize));
    const newest = second !== null && second.transaction > first.transaction ? second : first;
    const needed = (newest.lastPage + 1) * newest.pageSize;
    if (size < needed)
      return `${file} is ${size} bytes, but its header names pages up to byte ${needed}: the file was cut short`;
    return null;
  } finally {
    closeSync(fd);
  }
}
