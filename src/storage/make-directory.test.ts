import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { makeDirectory } from "./make-directory.ts";

const dir = mkdtempSync(join(tmpdir(), "physalia-mkdir-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * makeDirectory(path) in a process of its own, killed after 10 s: a call that never returns (as
 * Node's recursive mkdir under /proc) fails the test rather than hang the test run.
 */
function makeInChild(path: string): { status: number | null; stderr: string } {
  const run = spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      "--input-type=module",
      "-e",
      `import { makeDirectory } from ${JSON.stringify(join(import.meta.dirname, "make-directory.ts"))};
       try { makeDirectory(process.argv[1]); } catch (error) { console.error(error.message); process.exit(3); }`,
      path,
    ],
    { encoding: "utf8", timeout: 10_000 },
  );
  return { status: run.status, stderr: run.stderr };
}

describe("makeDirectory", () => {
  it("creates a directory and its missing parents, and leaves an existing one alone", () => {
    const path = join(dir, "a", "b", "c");
    makeDirectory(path);
    expect(statSync(path).isDirectory()).toBe(true);
    makeDirectory(path);
    makeDirectory(join(dir, "a"));
    expect(statSync(path).isDirectory()).toBe(true);
  });

  it("refuses a path through a file, naming it", () => {
    writeFileSync(join(dir, "file"), "x");
    expect(() => makeDirectory(join(dir, "file", "sub"))).toThrow(/file is not a directory/);
    expect(() => makeDirectory(join(dir, "file"))).toThrow(/file is not a directory/);
  });

  it("fails through a symbolic link to nowhere", () => {
    symlinkSync(join(dir, "gone", "target"), join(dir, "dangling"));
    expect(() => makeDirectory(join(dir, "dangling", "data"))).toThrow(/ENOENT/);
    expect(existsSync(join(dir, "gone"))).toBe(false);
  });

  it.runIf(process.platform === "linux")(
    "fails at once where the parent exists but the directory cannot be (under /proc), rather than spin",
    () => {
      const result = makeInChild("/proc/self/physalia-data/s1");
      expect(result.status, "makeDirectory did not return within 10 s").toBe(3);
      expect(result.stderr).toMatch(/ENOENT.*\/proc\/self\/physalia-data/);
    },
  );
});
