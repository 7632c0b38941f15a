/**
 * `physalia up`: a local colony. Servers run in this process (the default) or one process each
 * (`--processes`), over lmdb directories under the data directory, with a colony key generated
 * on first use and a connection file that client commands in the same directory find.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, fstatSync, openSync, readSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { serverNodeFlags } from "../server/index.ts";
import { makeDirectory } from "../storage/index.ts";
import {
  adminUrl,
  type ConnectionFile,
  ensureKeyFile,
  loadColonyKeys,
  type ServerConfig,
  type Topology,
  writeConnectionFile,
} from "./colony.ts";
import { appendLineWriter, jsonLogger, type LineWriter, type Logger } from "./log.ts";
import { type RunningServer, startServer } from "./server-process.ts";

export interface UpOptions {
  readonly topology: Topology;
  /** Directory for the key, the connection file, each server's data and the logs. */
  readonly data: string;
  readonly processes: boolean;
  readonly env: NodeJS.ProcessEnv;
  /**
   * With `processes`: a server process that ended once the colony was up, other than by close():
   * how it ended ("exit code 9", "killed by SIGKILL"), its log file, and the servers still running.
   */
  readonly onServerExit?: (serverId: string, how: string, logFile: string, running: number) => void;
}

/**
 * Set by `physalia up --processes` for the servers it starts: its pid. A server watches for its
 * parent to change from it, and stops cleanly then.
 */
export const upPidEnv = "PHYSALIA_UP_PID";

export interface RunningColony {
  readonly connectionFile: string;
  readonly servers: readonly { id: string; address: string; admin: string; pid: number | null }[];
  close(): Promise<void>;
}

/** The program file of this command, to start server processes with. */
function physaliaBin(): string {
  // dist/cli/up.js or src/cli/up.ts -> bin/physalia.js
  return resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "physalia.js");
}

/** How long a server process may take to open its ports. */
const processStartMsMax = 20_000;

const lastLineBytesMax = 4096;

/** The last line of `file` written past byte `from` ("" if none), looking at 4 KiB at most. */
function lastLineSince(file: string, from: number): string {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch {
    return "";
  }
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(from, size - lastLineBytesMax);
    const buffer = Buffer.alloc(Math.max(0, size - start));
    const read = readSync(fd, buffer, 0, buffer.length, start);
    return buffer.subarray(0, read).toString("utf8").trim().split("\n").at(-1) ?? "";
  } finally {
    closeSync(fd);
  }
}

/** The message of a server's log line (JSON), or the line itself when it is not JSON. */
export function messageOf(line: string): string {
  try {
    const parsed = JSON.parse(line) as { msg?: unknown };
    if (typeof parsed?.msg === "string") return parsed.msg;
  } catch {
    // A line from something else than the server's logger (the runtime, say).
  }
  return line.replace(/^physalia: /, "");
}

/**
 * Waits until the server `child` answers its /healthz. Only an answer naming the child's pid
 * counts: another process on that port (a colony left running) is not this server.
 */
async function waitForHealth(
  serverId: string,
  url: string,
  child: ChildProcess,
  deadlineMs: number,
  lastOutput: () => string,
): Promise<void> {
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const said = messageOf(lastOutput());
      throw new Error(
        `server ${serverId} exited (${child.exitCode ?? child.signalCode}) before it was healthy` +
          (said === "" ? "" : `: ${said}`),
      );
    }
    try {
      const response = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
      const body = (await response.json()) as { pid?: unknown };
      if (response.ok && body.pid === child.pid) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadlineMs)
      throw new Error(`the server at ${url} did not become healthy within ${processStartMsMax} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function up(options: UpOptions, logger: Logger): Promise<RunningColony> {
  const data = resolve(options.data);
  const keyFile = join(data, "colony.key");
  ensureKeyFile(keyFile);
  const colonyKeys = loadColonyKeys(keyFile, options.env);
  const configs: { config: ServerConfig; file: string }[] = options.topology.servers.map((s) => {
    const config: ServerConfig = {
      server: s.id,
      data: join(data, "servers", s.id),
      keyFile,
      topology: options.topology,
    };
    const file = join(data, "servers", `${s.id}.json`);
    makeDirectory(dirname(file));
    writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`);
    return { config, file };
  });

  const logFileOf = (serverId: string): string => join(data, "logs", `${serverId}.log`);
  const inProcess: RunningServer[] = [];
  const children: ChildProcess[] = [];
  /** Log files of servers run in this process, closed with the colony. */
  const logs: LineWriter[] = [];
  const lastOutputs: (() => string)[] = [];
  let closing = false;
  const close = async (): Promise<void> => {
    closing = true;
    await Promise.all(inProcess.map((s) => s.close()));
    for (const log of logs) log.close();
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((done) => {
            if (child.exitCode !== null || child.signalCode !== null) return done();
            child.once("exit", () => done());
            child.kill("SIGTERM");
            setTimeout(() => child.kill("SIGKILL"), 5000).unref();
          }),
      ),
    );
  };

  try {
    if (options.processes) {
      makeDirectory(join(data, "logs"));
      for (const { config, file } of configs) {
        // The server writes its log file itself, not through a pipe to this process: its log
        // goes on, and it can say why it stops, even once this process is gone.
        const logFile = logFileOf(config.server);
        const log = openSync(logFile, "a");
        const from = fstatSync(log).size;
        let child: ChildProcess;
        try {
          child = spawn(process.execPath, [...serverNodeFlags, physaliaBin(), "server", "--config", file], {
            stdio: ["ignore", log, log],
            // The server stops by itself once this process is gone, however it went.
            env: { ...options.env, [upPidEnv]: String(process.pid) },
          });
        } finally {
          closeSync(log);
        }
        // The last line a server wrote in this run: why it could not start, if it could not.
        lastOutputs.push(() => lastLineSince(logFile, from));
        children.push(child);
      }
      const deadline = Date.now() + processStartMsMax;
      await Promise.all(
        configs.map(({ config }, i) => {
          const s = options.topology.servers.find((server) => server.id === config.server);
          if (s === undefined) throw new Error(`server ${config.server} is not in the topology`);
          return waitForHealth(
            config.server,
            adminUrl(s),
            children[i] as ChildProcess,
            deadline,
            lastOutputs[i] as () => string,
          );
        }),
      );
      let running = children.length;
      children.forEach((child, i) => {
        child.once("exit", (code, signal) => {
          running -= 1;
          const serverId = configs[i]?.config.server ?? "?";
          if (!closing)
            options.onServerExit?.(
              serverId,
              signal !== null ? `killed by ${signal}` : `exit code ${code}`,
              logFileOf(serverId),
              running,
            );
        });
      });
    } else {
      makeDirectory(join(data, "logs"));
      for (const { config } of configs) {
        const log = appendLineWriter(logFileOf(config.server));
        logs.push(log);
        inProcess.push(
          await startServer({
            config,
            colonyKeys,
            logger: jsonLogger({ server: config.server }, { write: (line) => log.write(line) }),
            onFatal: (reason) => logger.log("error", `server ${config.server} stopped itself`, { reason }),
          }),
        );
      }
    }
  } catch (error) {
    await close();
    throw error;
  }

  const connection: ConnectionFile = {
    colony: options.topology.colony,
    cellSize: options.topology.cellSize,
    keyFile: "colony.key",
    servers: options.topology.servers,
  };
  const connectionFile = join(data, "colony.json");
  writeConnectionFile(connectionFile, connection);
  return {
    connectionFile,
    servers: options.topology.servers.map((s, i) => ({
      id: s.id,
      address: `${s.host}:${s.port}`,
      admin: adminUrl(s),
      pid: options.processes ? (children[i]?.pid ?? null) : process.pid,
    })),
    close,
  };
}
