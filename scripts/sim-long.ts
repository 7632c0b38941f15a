/**
 * A long simulator soak: many seeds, the default colony size, every fault mix in turn.
 * Usage: npm run sim:long -- [--seeds N] [--from SEED] [--cells N] [--ops N]
 * Exits 1 if any seed fails; prints the reproduce command of each failure.
 */
import { type FaultMix, formatReport, runSimulation } from "../src/sim/run.ts";
import { wholeNumberOption } from "./argv.ts";

const option = (name: string, fallback: number) => wholeNumberOption(name, fallback, 0);

const seeds = option("seeds", 1000);
const from = option("from", 100_000);
const cells = option("cells", 100);
const ops = option("ops", 2000);
const mixes: FaultMix[] = ["net", "crash", "all", "none"];
let failed = 0;
let undecided = 0;
const started = performance.now();
for (let i = 0; i < seeds; i++) {
  const seed = from + i;
  const report = runSimulation({ seed, cells, ops, faults: mixes[i % mixes.length] as FaultMix });
  undecided += report.undecidedCells;
  if (report.violations.length > 0) {
    failed += 1;
    console.log(formatReport(report));
  }
  if ((i + 1) % 50 === 0)
    console.log(
      `${i + 1}/${seeds} seeds, ${failed} failed, ${((performance.now() - started) / 1000).toFixed(0)} s`,
    );
}
console.log(
  `${seeds - failed} passed, ${failed} failed${undecided > 0 ? ` (${undecided} cell histories undecided)` : ""}`,
);
process.exit(failed === 0 ? 0 : 1);
