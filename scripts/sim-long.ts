/**
 * A long simulator soak: many seeds, the default colony size, every fault mix in turn.
 * Usage: npm run sim:long -- [--seeds N] [--from SEED] [--cells N] [--ops N] [--wire-damage PERCENT]
 * Exits 1 if any seed fails; prints the reproduce command of each failure.
 *
 * With `--wire-damage PERCENT`, that share of delivered messages is damaged (src/sim/corrupt-wire.ts):
 * a seed then fails only if a server, client or the simulator throws. Damaged messages that decode
 * are peers that lie, so the safety checks are not expected to hold and are not counted.
 */
import { type FaultMix, formatReport, runSimulation } from "../src/sim/run.ts";
import { wholeNumberOption } from "./argv.ts";

const option = (name: string, fallback: number) => wholeNumberOption(name, fallback, 0);

const seeds = option("seeds", 1000);
const from = option("from", 100_000);
const cells = option("cells", 100);
const ops = option("ops", 2000);
const damagePercent = option("wire-damage", 0);
if (damagePercent > 100) {
  console.error(`--wire-damage is a percentage from 0 to 100, got ${damagePercent}`);
  process.exit(2);
}
const mixes: FaultMix[] = ["net", "crash", "all", "none", "disk"];
let failed = 0;
let undecided = 0;
const damage = { damaged: 0, decoded: 0, issued: 0, completed: 0 };
const started = performance.now();
for (let i = 0; i < seeds; i++) {
  const seed = from + i;
  const faults = mixes[i % mixes.length] as FaultMix;
  if (damagePercent > 0) {
    try {
      const report = runSimulation({
        seed,
        cells,
        ops,
        faults,
        wireDamageRate: damagePercent / 100,
        inspect: (world) => {
          damage.damaged += world.wireDamage.damaged;
          damage.decoded += world.wireDamage.decoded;
        },
      });
      damage.issued += report.opsIssued;
      damage.completed += report.opsCompleted;
    } catch (error) {
      failed += 1;
      console.log(`seed ${seed} (faults ${faults}) threw: ${(error as Error).stack ?? String(error)}`);
    }
  } else {
    const report = runSimulation({ seed, cells, ops, faults });
    undecided += report.undecidedCells;
    if (report.violations.length > 0) {
      failed += 1;
      console.log(formatReport(report));
    }
  }
  if ((i + 1) % 50 === 0)
    console.log(
      `${i + 1}/${seeds} seeds, ${failed} failed, ${((performance.now() - started) / 1000).toFixed(0)} s`,
    );
}
if (damagePercent > 0)
  console.log(
    `${damage.damaged} messages damaged, ${damage.decoded} of them decoded and handled; ` +
      `${damage.completed} of ${damage.issued} operations completed`,
  );
console.log(
  `${seeds - failed} passed, ${failed} failed${undecided > 0 ? ` (${undecided} cell histories undecided)` : ""}`,
);
process.exit(failed === 0 ? 0 : 1);
