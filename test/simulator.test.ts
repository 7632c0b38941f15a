import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { formatReport, runSimulation } from "../src/sim/run.ts";

describe("simulator", () => {
  it("the same seed gives the same trace hash; another seed gives another", () => {
    const a = runSimulation({ seed: 42, servers: 7, cells: 10, ops: 200, faults: "all" });
    const b = runSimulation({ seed: 42, servers: 7, cells: 10, ops: 200, faults: "all" });
    const c = runSimulation({ seed: 43, servers: 7, cells: 10, ops: 200, faults: "all" });
    expect(a.traceHash).toBe(b.traceHash);
    expect(a.events).toBe(b.events);
    expect(c.traceHash).not.toBe(a.traceHash);
  });

  it("the default colony (9 servers, 100 cells, 2000 operations, all faults) passes", () => {
    const report = runSimulation({ seed: 7, faults: "all" });
    expect(report.violations).toEqual([]);
    expect(report.opsCompleted).toBeGreaterThan(1900);
    // Every operation in the history is accounted for once: the workload's and the liveness writes.
    expect(report.opsIssued).toBe(2000 + report.livenessOps);
    expect(report.opsCompleted + report.opsFailed + report.opsOpen).toBe(report.opsIssued);
    expect(Object.values(report.faultsInjected).reduce((a, b) => a + b, 0)).toBeGreaterThan(10);
    // Quiet nodes were evicted from memory and loaded again from disk, with every checker passing.
    expect(report.nodesEvicted).toBeGreaterThan(100);
  });

  it("a failing run names its violations and the command that reproduces it", () => {
    let failing = null;
    // The planted bug shows only under some schedules: 2 of the first 80 seeds (33 and 49) catch it.
    for (let seed = 1; seed <= 60 && failing === null; seed++) {
      const report = runSimulation({
        seed,
        servers: 5,
        cells: 10,
        ops: 400,
        faults: "net",
        bugs: { readWithoutReadIndex: true },
      });
      if (report.violations.length > 0) failing = report;
    }
    expect(failing).not.toBeNull();
    const text = formatReport(failing!);
    expect(text).toMatch(/not linearizable/);
    expect(text).toMatch(
      /reproduce with: npx physalia sim --seed \d+ --servers 5 --cells 10 --ops 400 --faults net/,
    );
  });

  it("an acceptor that accepts lower ballots is caught by the simulator's one-value-per-slot checker", () => {
    let caught = false;
    for (let seed = 1; seed <= 150 && !caught; seed++) {
      const report = runSimulation({
        seed,
        servers: 5,
        cells: 10,
        ops: 400,
        faults: "net",
        bugs: { acceptLowerBallot: true },
      });
      caught = report.violations.some(
        (v) => v.includes("two values chosen") || v.includes("not linearizable"),
      );
    }
    expect(caught).toBe(true);
  });

  it("`physalia sim --json` prints the contracted fields and exits 0 when every checker passes", () => {
    const out = execFileSync(
      process.execPath,
      [
        "--import",
        "tsx",
        "src/cli/main.ts",
        "sim",
        "--seed",
        "3",
        "--servers",
        "5",
        "--cells",
        "5",
        "--ops",
        "60",
        "--faults",
        "net",
        "--json",
      ],
      { encoding: "utf8" },
    );
    const report = JSON.parse(out.trim());
    for (const field of [
      "seed",
      "servers",
      "cells",
      "opsCompleted",
      "violations",
      "linearizable",
      "traceHash",
    ]) {
      expect(report).toHaveProperty(field);
    }
    expect(report.violations).toEqual([]);
    expect(report.linearizable).toBe(true);
  });

  it("bad arguments exit with code 2 and a clear message", () => {
    let status = 0;
    let stderr = "";
    try {
      execFileSync(process.execPath, ["--import", "tsx", "src/cli/main.ts", "sim", "--faults", "lots"], {
        encoding: "utf8",
        stdio: "pipe",
      });
    } catch (error) {
      const e = error as { status: number; stderr: string };
      status = e.status;
      stderr = e.stderr;
    }
    expect(status).toBe(2);
    expect(stderr).toMatch(/faults must be one of none, net, crash, all, disk; got "lots"/);
  });
});
