/**
 * Many simulator seeds across fault mixes: every checker must pass on every seed. Each failing
 * seed prints the command that reproduces it. `npm run sim:long` runs far more.
 */
import { describe, expect, it } from "vitest";
import { type FaultMix, formatReport, runSimulation } from "../src/sim/run.ts";

const mixes: readonly FaultMix[] = ["none", "net", "crash", "all", "disk"];
const seedsPerMix = 250;
/** Fewer of the slow disks', whose runs are longer: they check what reaches a disk before a message. */
const seedsOf = (faults: FaultMix): number => (faults === "disk" ? 150 : seedsPerMix);

describe("simulator seeds", () => {
  for (const faults of mixes) {
    it(`${seedsOf(faults)} seeds with faults "${faults}" pass every checker`, () => {
      const failures: string[] = [];
      let relayed = 0;
      for (let i = 0; i < seedsOf(faults); i++) {
        const seed = 1000 + i;
        const report = runSimulation({ seed, servers: 7, cells: 12, ops: 250, faults, clients: 6 });
        if (report.violations.length > 0 || report.undecidedCells > 0) failures.push(formatReport(report));
        relayed += report.requestsRelayed;
      }
      expect(failures).toEqual([]);
      // Network faults cut clients off from leaders: some of their requests went around them.
      if (faults === "net" || faults === "all") expect(relayed).toBeGreaterThan(0);
    });
  }
});
