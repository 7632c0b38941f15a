#!/usr/bin/env node
/**
 * The `physalia` command. This is the only place that reads argv and the environment and wires
 * real adapters. Exit codes: 0 success, 1 a check failed (violations), 2 bad usage.
 */
import { Command, InvalidArgumentError } from "commander";
import { explore, type FaultMix, formatReport, runSimulation, scenarios } from "../sim/index.ts";

export const exitCodes = { ok: 0, checkFailed: 1, usage: 2 } as const;

function integer(name: string, min: number, max: number) {
  return (raw: string): number => {
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
    }
    return value;
  };
}

function faultMix(raw: string): FaultMix {
  if (raw === "none" || raw === "net" || raw === "crash" || raw === "all") return raw;
  throw new InvalidArgumentError(`faults must be one of none, net, crash, all; got "${raw}"`);
}

const program = new Command();
program
  .name("physalia")
  .description("Physalia: millions of tiny databases, each a Multi-Paxos cell")
  .showHelpAfterError()
  .exitOverride((error) => {
    process.exit(error.exitCode === 0 ? exitCodes.ok : exitCodes.usage);
  });

program
  .command("sim")
  .description(
    "run the deterministic simulator: a colony, a random workload, random faults, then every checker",
  )
  .option("--seed <n>", "seed for everything in the run", integer("seed", 0, 2 ** 32 - 1), 1)
  .option(
    "--seeds <n>",
    "run this many consecutive seeds starting at --seed",
    integer("seeds", 1, 100_000),
    1,
  )
  .option("--servers <n>", "servers in the colony", integer("servers", 1, 64), 9)
  .option("--cells <n>", "cells", integer("cells", 1, 100_000), 100)
  .option("--ops <n>", "client operations", integer("ops", 1, 10_000_000), 2000)
  .option("--faults <mix>", "none | net | crash | all", faultMix, "all" as FaultMix)
  .option("--json", "print one JSON object per run")
  .action(
    (options: {
      seed: number;
      seeds: number;
      servers: number;
      cells: number;
      ops: number;
      faults: FaultMix;
      json?: boolean;
    }) => {
      let failed = 0;
      for (let seed = options.seed; seed < options.seed + options.seeds; seed++) {
        const report = runSimulation({
          seed,
          servers: options.servers,
          cells: options.cells,
          ops: options.ops,
          faults: options.faults,
        });
        const passed = report.violations.length === 0;
        if (!passed) failed += 1;
        if (options.json === true) {
          console.log(JSON.stringify({ ...report, opsCompleted: report.opsCompleted, passed }));
        } else {
          console.log(formatReport(report));
        }
      }
      process.exitCode = failed === 0 ? exitCodes.ok : exitCodes.checkFailed;
    },
  );

program
  .command("explore")
  .description("explore every delivery order of small cells to a fixed depth and check each state")
  .option("--scenario <name>", `one of: ${scenarios.map((s) => s.name).join(", ")} (default: all)`)
  .option("--depth <n>", "override the scenario's depth", integer("depth", 1, 40))
  .option("--json", "print one JSON object")
  .action((options: { scenario?: string; depth?: number; json?: boolean }) => {
    const chosen =
      options.scenario === undefined ? scenarios : scenarios.filter((s) => s.name === options.scenario);
    if (chosen.length === 0) {
      console.error(
        `unknown scenario "${options.scenario}"; choose one of: ${scenarios.map((s) => s.name).join(", ")}`,
      );
      process.exitCode = exitCodes.usage;
      return;
    }
    const reports = chosen.map((scenario) =>
      explore(options.depth === undefined ? scenario : { ...scenario, depth: options.depth }),
    );
    const schedules = reports.reduce((sum, r) => sum + r.schedules, 0);
    const violations = reports.reduce((sum, r) => sum + r.violations, 0);
    const complete = reports.every((r) => r.complete);
    if (options.json === true) {
      console.log(JSON.stringify({ schedules, violations, complete, scenarios: reports }));
    } else {
      for (const r of reports) {
        console.log(
          `${r.scenario}: depth ${r.depth}, ${r.schedules} schedules, ${r.states} states, ${r.transitions} transitions, ` +
            `${r.violations} violations${r.complete ? "" : " (stopped at the transition budget)"}`,
        );
        if (r.firstViolation !== null)
          console.log(`  ${r.firstViolation.message}\n  schedule: ${r.firstViolation.schedule}`);
      }
      console.log(`total: ${schedules} schedules, ${violations} violations`);
    }
    process.exitCode = violations === 0 && complete ? exitCodes.ok : exitCodes.checkFailed;
  });

program.parse(process.argv);
