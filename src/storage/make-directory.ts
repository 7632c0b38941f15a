/**
 * `mkdir -p` that always ends. Node's recursive mkdir retries forever when a directory's parent
 * exists but creating the directory answers ENOENT, as under /proc or on a mount whose directory
 * was deleted: the process spins at 100% CPU inside one call, deaf to SIGTERM, and says nothing.
 * This makes each missing directory once, from the top down, and throws at the first that cannot
 * be made.
 */
import { mkdirSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";

/** Creates `path` and any missing parents; throws the error of the first that cannot be made. */
export function makeDirectory(path: string): void {
  const missing: string[] = [];
  // Up from `path` to the nearest directory that exists: one step per path component.
  for (let at = resolve(path); ; at = dirname(at)) {
    let stats: ReturnType<typeof statSync>;
    try {
      stats = statSync(at, { throwIfNoEntry: false });
    } catch (error) {
      // A file on the way up: reported once the walk reaches it.
      if ((error as NodeJS.ErrnoException).code !== "ENOTDIR") throw error;
    }
    if (stats !== undefined) {
      if (!stats.isDirectory())
        throw Object.assign(new Error(`ENOTDIR: ${at} is not a directory, mkdir '${path}'`), {
          code: "ENOTDIR",
        });
      break;
    }
    missing.push(at);
    if (dirname(at) === at) break;
  }
  for (const directory of missing.reverse()) {
    try {
      mkdirSync(directory);
    } catch (error) {
      // Made meanwhile by another process, or a symbolic link whose target is missing: the
      // next level, or the caller's use of the directory, says which.
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  }
}
