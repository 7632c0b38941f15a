import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { DataDirectoryInUseError, lockDataDirectory, pidFileName } from "./data-lock.ts";

const root = mkdtempSync(join(tmpdir(), "physalia-data-lock-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const freshDir = () => join(root, `d${dirs++}`);

const tsx = pathToFileURL(
  join(import.meta.dirname, "..", "..", "node_modules", "tsx", "dist", "loader.mjs"),
).href;
const lockModule = pathToFileURL(join(import.meta.dirname, "data-lock.ts")).href;

/** A process that takes the lock of `dir`, says "held" and waits; `prefix` runs it under `unshare --net`. */
async function holder(dir: string, { prefix = [] as string[] } = {}): Promise<ChildProcess> {
  const script = `const { lockDataDirectory } = await import(${JSON.stringify(lockModule)});
    await lockDataDirectory(${JSON.stringify(dir)});
    process.stdout.write("held\\n");
    setInterval(() => {}, 1000);`;
  const [command, ...args] = [
    ...prefix,
    process.execPath,
    "--import",
    tsx,
    "--input-type=module",
    "-e",
    script,
  ];
  const child = spawn(command as string, args, { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    err += chunk.toString("utf8");
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on("data", (chunk: Buffer) => {
      if (chunk.toString("utf8").includes("held")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`the holder exited (${code}) without the lock: ${err}`)));
  });
  return child;
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGKILL");
  await exited;
}

describe("the lock of a data directory", () => {
  it("refuses a second lock in the same process, and is taken again once released", async () => {
    const dir = freshDir();
    const lock = await lockDataDirectory(dir);
    expect(readFileSync(join(dir, pidFileName), "utf8").trim()).toBe(String(process.pid));
    if (process.platform === "linux") {
      await expect(lockDataDirectory(dir)).rejects.toThrow(DataDirectoryInUseError);
    }
    await lock.release();
    expect(existsSync(join(dir, pidFileName))).toBe(false);
    const again = await lockDataDirectory(dir);
    await again.release();
  });

  it("refuses a lock held by another process, naming it, and is free once that process is killed", async () => {
    const dir = freshDir();
    const child = await holder(dir);
    try {
      const refused = await lockDataDirectory(dir).then(
        () => null,
        (error: unknown) => error,
      );
      expect(refused).toBeInstanceOf(DataDirectoryInUseError);
      expect((refused as DataDirectoryInUseError).holderPid).toBe(child.pid);
      expect((refused as Error).message).toMatch(
        /the data directory .* is in use by another server process \(pid \d+\): .*Stop that process first/,
      );
    } finally {
      await kill(child);
    }
    // kill -9 leaves server.pid behind; the kernel released the rest, and the pid is gone.
    expect(existsSync(join(dir, pidFileName))).toBe(true);
    const lock = await lockDataDirectory(dir);
    expect(readFileSync(join(dir, pidFileName), "utf8").trim()).toBe(String(process.pid));
    await lock.release();
  }, 30_000);

  it("finds a holder in another network namespace through server.pid", async (context) => {
    const probe = spawnSync("unshare", ["--net", "--", "true"]);
    if (process.platform !== "linux" || probe.status !== 0) {
      context.skip();
      return;
    }
    const dir = freshDir();
    const child = await holder(dir, { prefix: ["unshare", "--net", "--"] });
    try {
      // The holder's abstract socket lives in its own namespace: only server.pid can tell.
      await expect(lockDataDirectory(dir)).rejects.toThrow(/in use by another server process \(pid \d+\)/);
    } finally {
      await kill(child);
    }
  }, 30_000);

  it("says which directory it cannot create, and what to do", async () => {
    const file = join(root, "a-file");
    writeFileSync(file, "");
    // A file on the way, or at the path itself: making a directory is not the fix.
    await expect(lockDataDirectory(join(file, "s1"))).rejects.toThrow(
      /^cannot create the data directory .*a-file\/s1 \(ENOTDIR\): .*a-file is not a directory: the data directory must be a directory; name another path/,
    );
    await expect(lockDataDirectory(file)).rejects.toThrow(
      /^cannot create the data directory .*a-file \(ENOTDIR\): .*a-file is not a directory: the data directory must be/,
    );
    // A directory that cannot be made: the advice is to make it.
    await expect(lockDataDirectory("/proc/physalia-no/s1")).rejects.toThrow(
      /^cannot create the data directory \/proc\/physalia-no\/s1 \(E[A-Z]+\): create it, writable by this user/,
    );
  });

  it("says when it cannot write server.pid, and leaves the directory free", async () => {
    const dir = freshDir();
    // A directory where the pid file should be: opening it for writing fails (EISDIR), as an
    // unwritable file would, for root as well.
    mkdirSync(join(dir, pidFileName), { recursive: true });
    await expect(lockDataDirectory(dir)).rejects.toThrow(
      /^cannot write .*server\.pid \(EISDIR\): the data directory must be writable by this user/,
    );
    rmSync(join(dir, pidFileName), { recursive: true });
    await (await lockDataDirectory(dir)).release();
  });

  it("replaces a stale server.pid: its process gone, or its pid now another process's", async () => {
    const dir = freshDir();
    const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
      encoding: "utf8",
    });
    await (await lockDataDirectory(dir)).release();
    writeFileSync(join(dir, pidFileName), `${gone.stdout}\n`);
    const lock = await lockDataDirectory(dir);
    await lock.release();
    // The parent of this process is alive but holds nothing in the directory.
    writeFileSync(join(dir, pidFileName), `${process.ppid}\n`);
    const again = await lockDataDirectory(dir);
    expect(readFileSync(join(dir, pidFileName), "utf8").trim()).toBe(String(process.pid));
    await again.release();
    writeFileSync(join(dir, pidFileName), "not a pid\n");
    await (await lockDataDirectory(dir)).release();
  });
});
