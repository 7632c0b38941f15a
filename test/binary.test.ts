import { spawn, spawnSync } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { serverNodeFlags } from "../src/server/index.ts";

const bin = join(import.meta.dirname, "..", "bin", "physalia.js");

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The process has become node running the binary (before that it is `env`). */
function isNode(commandLine: string[]): boolean {
  const program = commandLine[0] ?? "";
  return !program.endsWith("env") && commandLine.some((word) => word.endsWith("physalia.js"));
}

describe("the physalia binary", () => {
  it("names exactly the server's Node flags on its first line", () => {
    const firstLine = readFileSync(bin, "utf8").split("\n")[0] ?? "";
    expect(firstLine.startsWith("#!/usr/bin/env -S node ")).toBe(true);
    const flags = firstLine.split(" ").filter((word) => word.startsWith("--"));
    expect(flags.sort()).toEqual([...serverNodeFlags].sort());
  });

  it("started directly, runs Node with those flags", async () => {
    // A simulation large enough to be still running when its command line is read.
    const child = spawn(bin, ["sim", "--seed", "1", "--cells", "2000", "--ops", "200000"], {
      stdio: "ignore",
    });
    const pid = child.pid;
    expect(pid).toBeTypeOf("number");
    let commandLine: string[] = [];
    try {
      // `env -S` replaces itself with node in the same process; wait for that, within 5 s.
      for (let attempt = 0; attempt < 100; attempt++) {
        try {
          commandLine = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
        } catch {
          commandLine = [];
        }
        if (isNode(commandLine)) break;
        await sleep(50);
      }
    } finally {
      child.kill("SIGKILL");
    }
    expect(isNode(commandLine)).toBe(true);
    for (const flag of serverNodeFlags) expect(commandLine).toContain(flag);
  });

  it("warns, and still runs, when src/ changed after dist/ was built", () => {
    // A copy of the binary beside a stand-in build and one source file, in a directory of its own.
    const root = mkdtempSync(join(tmpdir(), "physalia-bin-"));
    try {
      for (const dir of ["bin", "dist/cli", "src/core"]) mkdirSync(join(root, dir), { recursive: true });
      copyFileSync(bin, join(root, "bin", "physalia.js"));
      writeFileSync(join(root, "package.json"), '{"type":"module"}');
      const main = join(root, "dist", "cli", "main.js");
      writeFileSync(main, 'console.log("ran");');
      const source = join(root, "src", "core", "x.ts");
      writeFileSync(source, "export {};");
      const run = () =>
        spawnSync(process.execPath, [join(root, "bin", "physalia.js")], {
          encoding: "utf8",
          timeout: 10_000,
        });
      const now = Date.now() / 1000;
      utimesSync(source, now - 60, now - 60); // built after the last change
      utimesSync(main, now, now);
      const fresh = run();
      expect(fresh.stdout.trim()).toBe("ran");
      expect(fresh.stderr).toBe("");
      // A test beside the sources is not built: changing one leaves the build current.
      const test = join(root, "src", "core", "x.test.ts");
      writeFileSync(test, "export {};");
      utimesSync(test, now + 60, now + 60);
      expect(run().stderr).toBe("");
      utimesSync(source, now + 60, now + 60); // changed after the build
      const stale = run();
      expect(stale.stdout.trim()).toBe("ran");
      expect(stale.stderr).toMatch(/src\/ changed after dist\/ was built.*run `npm run build`/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
