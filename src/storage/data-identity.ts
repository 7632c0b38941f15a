/**
 * Which server a data directory belongs to. Every node stored in a directory is one server's
 * (its id is part of each node's identity), so a server started on another server's directory,
 * by a configuration whose `data` or `server` was mistyped or copied, would load nodes that are
 * not its own: their messages are refused by every peer, the cells it should host are missing,
 * and it answers for cells it does not hold. The directory keeps the server's id in a small file,
 * written once, and a server whose id differs refuses to start, naming both.
 *
 * A directory without the file (made before it existed) is adopted: the id of its first stored
 * node, when it has one, must be the server's, and the file is then written.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";

export const identityFileName = "server-id";

/** Server ids are short; anything longer is not this file's content. */
const identityBytesMax = 1024;

export class DataDirectoryIdentityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DataDirectoryIdentityError";
  }
}

/**
 * The server id the directory at `path` was made for, or null when it has no identity file.
 * Throws DataDirectoryIdentityError when the file cannot be read or holds no id.
 */
export function readDataIdentity(path: string): string | null {
  const file = join(path, identityFileName);
  let text: string;
  try {
    const stat = statSync(file);
    if (!stat.isFile() || stat.size > identityBytesMax)
      throw new Error(`it is not a file of at most ${identityBytesMax} bytes`);
    text = readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new DataDirectoryIdentityError(
      `cannot read ${file}, which names the server this data directory belongs to: ${(error as Error).message}`,
    );
  }
  const id = text.trim();
  if (id === "" || /\s/.test(id))
    throw new DataDirectoryIdentityError(
      `${file} should hold the id of the server this data directory belongs to, and holds ${JSON.stringify(text.slice(0, 40))}; ` +
        "if you know whose directory it is, write that server's id in it",
    );
  return id;
}

/**
 * Throws DataDirectoryIdentityError when the identity file of the directory at `path` names a
 * server other than `serverId`; returns whether it names `serverId` (false: the directory has no
 * file yet, and claimDataDirectory is still to be called). Reads nothing else: a server checks
 * this before its storage replays anything.
 */
export function refuseOthersDirectory(path: string, serverId: string): boolean {
  const recorded = readDataIdentity(path);
  if (recorded !== null && recorded !== serverId) throw belongsToOther(path, recorded, serverId);
  return recorded !== null;
}

/**
 * Throws DataDirectoryIdentityError when the directory at `path` belongs to a server other than
 * `serverId`: by its identity file, or, without one, by `storedServerId` (the server of a node
 * stored there, null when it holds none). Without a file and without a conflict, writes the file.
 */
export function claimDataDirectory(
  path: string,
  serverId: string,
  storedServerId: () => string | null,
): void {
  const recorded = readDataIdentity(path);
  const owner = recorded ?? storedServerId();
  if (owner !== null && owner !== serverId) throw belongsToOther(path, owner, serverId);
  if (recorded === null) writeDataIdentity(path, serverId);
}

function belongsToOther(path: string, owner: string, serverId: string): DataDirectoryIdentityError {
  return new DataDirectoryIdentityError(
    `the data directory ${path} belongs to server ${owner}, and this server is ${serverId}: ` +
      `a server on another's data would answer for nodes that are not its own. Point \`data\` at ${serverId}'s ` +
      `own directory, or start ${owner} with this one`,
  );
}

/** Writes the identity file durably: a whole file or none, even across a crash. */
function writeDataIdentity(path: string, serverId: string): void {
  const file = join(path, identityFileName);
  const temporary = `${file}.tmp`;
  const fd = openSync(temporary, "w", 0o644);
  try {
    writeSync(fd, `${serverId}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, file);
  const directory = openSync(path, "r");
  try {
    fsyncSync(directory);
  } finally {
    closeSync(directory);
  }
}
