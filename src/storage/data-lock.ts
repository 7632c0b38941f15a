/**
 * One server process per data directory. Two servers on one directory would both append to its
 * journal, each over the other's acknowledged records, and both vote as the same nodes: a cell
 * could then choose two values for one slot. A copied configuration whose `data` was not
 * changed, or a server started again before the old process has exited, must be refused before
 * anything in the directory is read or written.
 *
 * Two checks, both released by the kernel when the holder dies however it dies (kill -9
 * included), so a crash never leaves a lock that needs removing by hand:
 * - On Linux, an abstract Unix socket named after the directory's device and inode, bound while
 *   the server runs: binding is atomic, so of two servers starting at once one wins. Abstract
 *   sockets belong to a network namespace.
 * - `server.pid` in the directory names the holder, which keeps it open. A server finding it
 *   names another live process that has a file of the directory open refuses too, which covers holders in another
 *   network namespace (and platforms without abstract sockets) when both share a pid namespace.
 *   A stale file (its process gone, or not holding the directory: its pid reused) is replaced.
 *   This check is not atomic: two servers started at the same moment in different network
 *   namespaces can both pass it. The socket is the lock; the file is the second line.
 */
import {
  closeSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { makeDirectory } from "./make-directory.ts";

export const pidFileName = "server.pid";

/** The held lock of one data directory; release() when the server has closed its storage. */
export interface DataDirectoryLock {
  release(): Promise<void>;
}

export class DataDirectoryInUseError extends Error {
  constructor(
    readonly path: string,
    readonly holderPid: number | null,
  ) {
    super(
      `the data directory ${path} is in use by another server process` +
        (holderPid === null ? "" : ` (pid ${holderPid})`) +
        ": two servers on one directory would overwrite each other's journal and vote twice as the same nodes. " +
        "Stop that process first, or give this server its own data directory",
    );
    this.name = "DataDirectoryInUseError";
  }
}

/** Takes the lock of the data directory `path` (created if missing), or throws DataDirectoryInUseError. */
export async function lockDataDirectory(path: string): Promise<DataDirectoryLock> {
  try {
    makeDirectory(path);
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    // The path, or a directory on the way to it, is a file: creating it is not the fix.
    const advice =
      code === "ENOTDIR" || code === "EEXIST"
        ? `${message.replace(/^E[A-Z]+: /, "").replace(/, mkdir '.*'$/, "")}: the data directory must be a directory; name another path in the configuration's data`
        : "create it, writable by this user, or name another one in the configuration's data";
    throw new Error(`cannot create the data directory ${path} (${code ?? message}): ${advice}`, {
      cause: error,
    });
  }
  const directory = realpathSync(path);
  const pidFile = join(directory, pidFileName);
  const socket = process.platform === "linux" ? await bindLockSocket(directory, pidFile, path) : null;
  const holder = livePidFileHolder(directory, pidFile);
  if (holder !== null) {
    await closeSocket(socket);
    throw new DataDirectoryInUseError(path, holder);
  }
  // Kept open while the lock is held: a file of the directory that /proc shows this process holds.
  let fd = -1;
  try {
    fd = openSync(pidFile, "w");
    writeSync(fd, `${process.pid}\n`);
  } catch (error) {
    if (fd >= 0) closeSync(fd);
    await closeSocket(socket);
    const { code, message } = error as NodeJS.ErrnoException;
    throw new Error(
      `cannot write ${pidFile} (${code ?? message}): the data directory must be writable by this user`,
      { cause: error },
    );
  }
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      if (readPid(pidFile) === process.pid) rmSync(pidFile, { force: true });
      closeSync(fd);
      await closeSocket(socket);
    },
  };
}

/** Binds the directory's abstract socket; EADDRINUSE means another process holds it. */
async function bindLockSocket(directory: string, pidFile: string, path: string): Promise<Server> {
  const { dev, ino } = statSync(directory, { bigint: true });
  const name = `\0physalia-data-directory:${dev}:${ino}`;
  const server = createServer();
  // The socket only marks the directory as held: a connection to it is closed at once.
  server.on("connection", (connection) => connection.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ path: name }, () => {
      server.off("error", reject);
      resolve();
    });
  }).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "EADDRINUSE") throw new DataDirectoryInUseError(path, readPid(pidFile));
    throw new Error(`cannot lock the data directory ${path}: ${error.message}`, { cause: error });
  });
  // The socket must not keep a stopping process alive.
  server.unref();
  return server;
}

function closeSocket(socket: Server | null): Promise<void> {
  if (socket === null) return Promise.resolve();
  return new Promise((resolve) => socket.close(() => resolve()));
}

function readPid(pidFile: string): number | null {
  try {
    const pid = Number.parseInt(readFileSync(pidFile, "utf8").trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/**
 * The pid in `pidFile` if it is another process that is alive and has a file under `directory`
 * open; null otherwise. Where /proc cannot tell (another platform), a live process counts.
 */
function livePidFileHolder(directory: string, pidFile: string): number | null {
  const pid = readPid(pidFile);
  if (pid === null || pid === process.pid) return null;
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: alive, but another user's; ESRCH: gone.
    if ((error as NodeJS.ErrnoException).code !== "EPERM") return null;
  }
  if (process.platform !== "linux") return pid;
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch (error) {
    // Gone by now; or not ours to look at, and then it may well hold the directory.
    return (error as NodeJS.ErrnoException).code === "ENOENT" ? null : pid;
  }
  const inside = `${directory}/`;
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(inside)) return pid;
    } catch {
      // closed while we looked
    }
  }
  return null;
}
