import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { ServersRunOptions, ServersRunResult } from "../scripts/bench/servers-run.ts";
import { serverNodeFlags } from "../src/server/index.ts";

// The `servers` benchmark divides CPU by the commits its writers saw. These tests hold it to
// counting real commits: each went through 7 servers' consensus, so each cost at least the
// request, 3 accepts, 3 votes and the answer on its bus.

const root = join(import.meta.dirname, "..");

function run(options: ServersRunOptions): ServersRunResult {
  const output = execFileSync(
    process.execPath,
    [...serverNodeFlags, "--import", "tsx", "scripts/bench/servers-run.ts", JSON.stringify(options)],
    { cwd: root, encoding: "utf8", timeout: 60_000 },
  );
  return JSON.parse(output.trim().split("\n").pop() as string) as ServersRunResult;
}

describe("the servers benchmark (npm run bench -- servers)", () => {
  for (const [wire, disk] of [
    [false, false],
    [true, false],
    [true, true],
  ] as const) {
    const how = `${wire ? "encoded" : "objects"}, ${disk ? "on lmdb storage" : "storage keeping nothing"}`;
    it(`counts commits that went through consensus (${how})`, () => {
      const r = run({ cells: 20, writers: 5, wire, disk, warmupSeconds: 0.5, seconds: 1 });
      expect(r.commits).toBeGreaterThan(50);
      expect(r.messages / r.commits).toBeGreaterThanOrEqual(8);
      expect(r.cpuUs).toBeGreaterThan(0);
      expect(r.windowMs).toBeGreaterThanOrEqual(1000);
    });
  }
});
