import { describe, expect, it } from "vitest";
import { checkArchitecture, listSources } from "../scripts/architecture.ts";

describe("architecture", () => {
  it("the source tree follows the layer table, the index rule and the determinism rule", () => {
    expect(checkArchitecture(listSources("src"))).toEqual([]);
  });

  it("the check catches a forbidden direction, a deep import, a cycle and wall time", () => {
    const problems = checkArchitecture([
      { path: "paxos/a.ts", text: 'import { x } from "../cell/index.ts";' },
      { path: "cell/b.ts", text: 'import { y } from "../paxos/replica.ts";' },
      { path: "server/c.ts", text: "const t = Date.now();" },
      { path: "sim/d.ts", text: 'import { readFileSync } from "node:fs";' },
    ]);
    expect(problems.some((p) => p.includes("paxos may not import cell"))).toBe(true);
    expect(problems.some((p) => p.includes("imports paxos/replica.ts directly"))).toBe(true);
    expect(problems.some((p) => p.includes("import cycle"))).toBe(true);
    expect(problems.some((p) => p.includes("server reads wall time"))).toBe(true);
    expect(problems.some((p) => p.includes("sim imports node:*"))).toBe(true);
  });
});
