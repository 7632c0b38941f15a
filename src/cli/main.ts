#!/usr/bin/env node
/**
 * The `physalia` command. This is the only place that reads argv and the environment and wires
 * real adapters. Exit codes (docs/OPERATIONS.md): 0 success, 1 a check failed (violations) or the
 * answer is no, 2 bad usage, 3 colony unreachable, 9 a server failed; client commands add theirs.
 */
import { resolve } from "node:path";
import { Command, InvalidArgumentError } from "commander";
import { cutUnits } from "../cell/index.ts";
import type { ColonyKeys } from "../client/index.ts";
import { missingServerNodeFlags } from "../server/index.ts";
import { explore, type FaultMix, faultMixes, formatReport, runSimulation, scenarios } from "../sim/index.ts";
import { argumentEncodingProblem, rawArguments } from "./arguments.ts";
import { clientExitCodes, createCell, pathArgument, registerClientCommands } from "./client-commands.ts";
import {
  ColonyFileError,
  colonyKeyEnv,
  defaultTopology,
  keyFileExposure,
  keysFromEnvironment,
  loadColonyKeys,
  readServerConfig,
  readTopology,
} from "./colony.ts";
import { jsonLogger, type Logger } from "./log.ts";
import { type RunningServer, startServer } from "./server-process.ts";
import { type RunningColony, up, upPidEnv } from "./up.ts";

/** Exit codes of the colony commands; client commands add theirs (clientExitCodes, docs/OPERATIONS.md). */
export const exitCodes = {
  ok: clientExitCodes.ok,
  checkFailed: 1,
  usage: clientExitCodes.usage,
  colonyUnreachable: clientExitCodes.colonyUnreachable,
  serverFailed: 9,
  internal: clientExitCodes.internal,
} as const;

/** Prints a problem for people (one line, no stack trace) and exits with `code`. */
function fail(message: string, code: number): never {
  console.error(`physalia: ${message}`);
  process.exit(code);
}

/**
 * A usage error as the command line reports it: commander's "error: ..." text as one line,
 * `physalia: ...` with a pointer to --help, or the JSON object of docs/OPERATIONS.md section 2
 * when the arguments (before any `--`) ask for --json.
 */
export function usageError(text: string, args: readonly string[]): string {
  const message = clipEchoedArgument(text.replace(/^error: /, ""))
    .trim()
    .replace(/\s*\n\s*/g, "; ");
  const end = args.indexOf("--");
  const json = (end < 0 ? args : args.slice(0, end)).includes("--json");
  if (json) return `${JSON.stringify({ error: { reason: "usage", exitCode: exitCodes.usage, message } })}\n`;
  return `physalia: ${message} (add --help for usage)\n`;
}

/** Characters of a rejected argument a usage message repeats; the rest is left out, with its length. */
const echoedArgumentMax = 48;

/**
 * Commander repeats a rejected argument whole before the reason ("command-argument value '...' is
 * invalid for argument 'key'. ..."): a 100 KB value would make a 100 KB message. The reason
 * already quotes it, shortened, so here it is cut to its first characters and its length.
 */
function clipEchoedArgument(message: string): string {
  return message.replace(
    /^(command-argument value|option '[^']*' argument) '([\s\S]*?)' is invalid/,
    (_whole, lead: string, value: string) => {
      if (value.length <= echoedArgumentMax) return `${lead} '${value}' is invalid`;
      return `${lead} '${cutUnits(value, echoedArgumentMax)}...' (${value.length} characters) is invalid`;
    },
  );
}

/**
 * Listens for SIGINT and SIGTERM (and SIGHUP, with `hangup`: the terminal of a local colony went
 * away) for the rest of the process's life. Once `started` is given what to close, the first
 * signal closes it and exits, a second exits at once. One that comes before (a start can take a
 * while: journal replays) is said at once and acted on when `started` is called; a second exits.
 * The same listeners serve throughout: a signal caught while the start held the event loop is
 * delivered later, and would be lost had its listener been replaced meanwhile.
 */
function stopOnSignal(
  what: string,
  hangup = false,
  say: Say = sayPlainly,
): { readonly asked: boolean; started(close: () => Promise<void>): (reason: string) => void } {
  let asked: string | null = null;
  let stop: ((reason: string) => void) | null = null;
  const onSignal = (signal: string): void => {
    if (stop !== null) {
      stop(signal);
      return;
    }
    if (asked !== null) process.exit(130);
    asked = signal;
    say("info", `${signal}: stopping once ${what} has started`);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  if (hangup) process.on("SIGHUP", onSignal);
  return {
    get asked() {
      return asked !== null;
    },
    started(close) {
      const shutDown = shutdownOf(close, say);
      stop = shutDown;
      if (asked !== null) shutDown(asked);
      return shutDown;
    },
  };
}

/** How a command tells what it does to whoever reads its standard error. */
type Say = (level: "info" | "error", message: string) => void;

/** For people at a terminal: one line, `physalia: ...`. */
const sayPlainly: Say = (_level, message) => console.error(`physalia: ${message}`);

/**
 * For a server: plainly at a terminal, else as its log is written (its standard error is its log
 * file under `up`, or a pipe to one): one JSON object per line, as every other line.
 */
function serverSays(logger: Logger): Say {
  return process.stderr.isTTY === true ? sayPlainly : (level, message) => logger.log(level, message);
}

/** Runs `close` on its first call, then exits; a second call exits at once. */
function shutdownOf(close: () => Promise<void>, say: Say = sayPlainly): (reason: string) => void {
  let closing = false;
  return (reason: string): void => {
    if (closing) process.exit(130);
    closing = true;
    say("info", `${reason}: shutting down`);
    close().then(
      () => process.exit(exitCodes.ok),
      (error: unknown) => {
        say("error", `shutdown failed: ${(error as Error).message}`);
        process.exit(exitCodes.serverFailed);
      },
    );
  };
}

/** How often a server started by `physalia up --processes` checks that `up` is still there. */
const parentCheckMs = 500;

/**
 * A server `physalia up --processes` started stops cleanly once that `up` is gone however it
 * went (kill -9 included), rather than run on without it, holding its ports and data directory.
 */
function stopWithUp(shutDown: (reason: string) => void, logger: Logger): void {
  const raw = process.env[upPidEnv];
  const upPid = raw === undefined ? Number.NaN : Number(raw);
  if (!Number.isInteger(upPid) || upPid <= 0) return;
  const timer = setInterval(() => {
    if (process.ppid === upPid) return;
    clearInterval(timer);
    logger.log("warn", `the physalia up process (pid ${upPid}) that started this server is gone; stopping`, {
      upPid,
    });
    shutDown(`physalia up (pid ${upPid}) is gone`);
  }, parentCheckMs);
  timer.unref();
}

/** A warning in the server's log when the key file it reads is open to other users. */
function warnOfExposedKeyFile(keyFile: string | undefined, logger: Logger): void {
  if (keyFile === undefined || keysFromEnvironment(process.env)) return;
  const exposure = keyFileExposure(keyFile);
  if (exposure !== null) logger.log("warn", exposure, { keyFile });
}

/**
 * SIGHUP makes a server read its colony keys again (a rotation without a restart,
 * docs/OPERATIONS.md section 1.4). Keys it cannot use are reported in its log and the server
 * keeps the ones it has.
 */
function reloadKeysOnHangup(keyFile: string | undefined, running: RunningServer, logger: Logger): void {
  process.on("SIGHUP", () => {
    if (keysFromEnvironment(process.env)) {
      logger.log(
        "warn",
        `SIGHUP: the colony keys come from ${colonyKeyEnv}, which a running process cannot change; restart the server with the new value, or give it a key file instead`,
        {},
      );
      return;
    }
    try {
      running.reloadKeys(loadColonyKeys(keyFile, process.env));
      warnOfExposedKeyFile(keyFile, logger);
    } catch (error) {
      // Whatever went wrong, the server goes on with the keys it has: a signal never stops it.
      logger.log(
        "error",
        `SIGHUP: the colony keys were not reloaded, and the server keeps its keys: ${(error as Error).message}`,
        {},
      );
    }
  });
}

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
  const mix = faultMixes.find((m) => m === raw);
  if (mix !== undefined) return mix;
  throw new InvalidArgumentError(`faults must be one of ${faultMixes.join(", ")}; got "${raw}"`);
}

const program = new Command();
program
  .name("physalia")
  .description("Physalia: millions of tiny databases, each a Multi-Paxos cell")
  // Usage errors (bad arguments, unknown options) as every other error: one line, or one JSON
  // object on stderr with --json (set by every subcommand, which inherits this).
  .configureOutput({ outputError: (text, write) => write(usageError(text, process.argv.slice(2))) })
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
  .option("--faults <mix>", faultMixes.join(" | "), faultMix, "all" as FaultMix)
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
        `physalia: unknown scenario "${options.scenario}"; choose one of: ${scenarios.map((s) => s.name).join(", ")}`,
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

program
  .command("server")
  .description("run one server of a colony (configuration: docs/OPERATIONS.md)")
  .requiredOption("--config <file>", "the server's configuration file (YAML or JSON)", pathArgument)
  .action(async (options: { config: string }) => {
    let config: ReturnType<typeof readServerConfig>;
    let colonyKeys: ColonyKeys;
    // Its standard error is its log (`up` writes it to logs/ID.log): every line is JSON.
    try {
      config = readServerConfig(options.config);
      colonyKeys = loadColonyKeys(config.keyFile, process.env);
    } catch (error) {
      if (error instanceof ColonyFileError) {
        serverSays(jsonLogger({ config: options.config }))("error", error.message);
        process.exit(exitCodes.usage);
      }
      throw error;
    }
    const logger = jsonLogger({ server: config.server });
    // Asked to stop while it starts (replaying its journal), it finishes starting, then stops.
    const say = serverSays(logger);
    const stopping = stopOnSignal("the server", false, say);
    try {
      const running = await startServer({
        config,
        colonyKeys,
        logger,
        onFatal: () => process.exit(exitCodes.serverFailed),
      });
      // Said once the server is up: a server that could not start says only why.
      const missingFlags = missingServerNodeFlags(process.execArgv, process.env.NODE_OPTIONS);
      if (missingFlags.length > 0) {
        logger.log(
          "warn",
          `this process was started without the server's Node.js flags ${missingFlags.join(" ")}, so the collector runs with V8's defaults and costs the server throughput and latency; start the server as \`physalia server\` (bin/physalia.js), or pass node these flags`,
          { missingFlags: missingFlags.join(" ") },
        );
      }
      warnOfExposedKeyFile(config.keyFile, logger);
      stopWithUp(
        stopping.started(() => running.close()),
        logger,
      );
      reloadKeysOnHangup(config.keyFile, running, logger);
    } catch (error) {
      say("error", `server ${config.server} could not start: ${(error as Error).message}`);
      process.exit(exitCodes.serverFailed);
    }
  });

program
  .command("up")
  .description("run a local colony (default: 9 servers over 3 racks and 3 power domains on 127.0.0.1)")
  .option("--topology <file>", "a topology file (YAML or JSON) instead of the built-in one", pathArgument)
  .option("--data <dir>", "where keys, data, logs and the connection file go", pathArgument, ".physalia")
  .option("--processes", "run each server in its own process")
  .option("--demo", "create a few demo cells and show how to talk to them")
  .option("--json", "print one JSON object describing the colony")
  .action(
    async (options: {
      topology?: string;
      data: string;
      processes?: boolean;
      demo?: boolean;
      json?: boolean;
    }) => {
      // Its servers, in its process group, read their keys again on SIGHUP (`physalia server`)
      // rather than stop: the colony stops them.
      const stopping = stopOnSignal("the colony", true);
      let colony: RunningColony;
      try {
        const topology = options.topology === undefined ? defaultTopology() : readTopology(options.topology);
        colony = await up(
          {
            topology,
            data: options.data,
            processes: options.processes === true,
            env: process.env,
            // A server process that ends without being asked to is said at once; with none left, up ends too.
            onServerExit: (serverId, how, logFile, running) => {
              console.error(`physalia: server ${serverId} stopped (${how}); its log: ${logFile}`);
              if (running === 0) fail("every server process has exited", exitCodes.serverFailed);
            },
          },
          jsonLogger({ component: "up" }),
        );
      } catch (error) {
        if (error instanceof ColonyFileError) fail(error.message, exitCodes.usage);
        fail(`the colony could not start: ${(error as Error).message}`, exitCodes.serverFailed);
      }
      stopping.started(() => colony.close());
      // Asked to stop while it started: it is stopping now, with nothing more to show.
      if (stopping.asked) return;
      let demoCells: string[] = [];
      if (options.demo === true) {
        try {
          demoCells = await createDemoCells(colony);
        } catch (error) {
          // The colony is up and serves; only the demo is missing.
          console.error(
            `physalia: warning: the demo cells could not be created (${(error as Error).message}); the colony runs without them`,
          );
        }
      }
      if (options.json === true) {
        console.log(
          JSON.stringify({ connectionFile: colony.connectionFile, servers: colony.servers, demoCells }),
        );
      } else {
        console.log(`colony up: ${colony.servers.length} servers; connection file ${colony.connectionFile}`);
        for (const s of colony.servers)
          console.log(`  ${s.id}  ${s.address}  admin ${s.admin}  pid ${s.pid}`);
        if (demoCells.length > 0) {
          console.log(`demo cells: ${demoCells.join(", ")}`);
          // Client commands find the connection file by themselves only where up writes it by default.
          if (resolve(colony.connectionFile) === resolve(".physalia", "colony.json")) {
            console.log("in another terminal, from this directory:");
          } else {
            console.log("in another terminal:");
            console.log(`  export PHYSALIA_COLONY=${shellQuoted(resolve(colony.connectionFile))}`);
          }
          console.log(`  npx physalia get ${demoCells[0]} greeting`);
          console.log(
            `  npx physalia put ${demoCells[0]} counter 41 && npx physalia add ${demoCells[0]} counter 1`,
          );
          console.log(`  npx physalia cell describe ${demoCells[0]}`);
          console.log("  npx physalia status");
        }
        console.log("press Ctrl-C to stop");
      }
    },
  );

/** `text` as one word of a POSIX shell: as it is when it holds nothing the shell reads, else quoted. */
function shellQuoted(text: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

/** Creates the demo cells through the same path as `physalia cell create`; returns their keys. */
async function createDemoCells(colony: RunningColony): Promise<string[]> {
  const { PhysaliaClient } = await import("../client/index.ts");
  const keys = ["demo-volume-1", "demo-volume-2", "demo-volume-3"];
  const client = await PhysaliaClient.connect({ colony: colony.connectionFile });
  try {
    for (const key of keys) {
      await createCell(colony.connectionFile, key);
      await client.cell(key).put("greeting", new TextEncoder().encode(`hello from ${key}`));
    }
  } finally {
    await client.close();
  }
  return keys;
}

registerClientCommands(program, { exit: (code) => process.exit(code) });

const encodingProblem = argumentEncodingProblem(process.argv.slice(2), rawArguments());
if (encodingProblem !== null) {
  process.stderr.write(usageError(encodingProblem, process.argv.slice(2)));
  process.exit(exitCodes.usage);
}

// Usage errors never get here (the exit override ends the process); what does is unexpected.
program.parseAsync(process.argv).catch((error: unknown) => {
  fail(error instanceof Error ? error.message : String(error), exitCodes.internal);
});
