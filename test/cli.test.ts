/**
 * The command line as people use it: `physalia up` in one process, client commands in others,
 * finding the colony through its connection file; clear one-line errors and documented exit
 * codes for bad input, an unknown cell and an unreachable colony; Ctrl-C stops the colony.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CellMachine, commandCodec } from "../src/cell/index.ts";
import { clientExitCodes } from "../src/cli/client-commands.ts";
import { adminToken, adminUrl } from "../src/cli/colony.ts";
import { connect, type PhysaliaClient } from "../src/client/index.ts";
import { limits, type NodeId } from "../src/core/index.ts";
import { initialMembership } from "../src/paxos/index.ts";
import { LmdbStorage } from "../src/storage/index.ts";
import { localTopology } from "./support/colony.ts";

const root = join(import.meta.dirname, "..");
// tsx by path: the commands run in other directories, where `--import tsx` would not resolve.
const tsx = pathToFileURL(join(root, "node_modules", "tsx", "dist", "loader.mjs")).href;
const cli = ["--import", tsx, join(root, "src", "cli", "main.ts")];

function physalia(
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...cli, ...args],
      { cwd, encoding: "utf8", timeout: 60_000, env },
      (error, stdout, stderr) => {
        resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? -1), stdout, stderr });
      },
    );
  });
}

/** The messages of a server's standard error, which is its log: every line must be JSON. */
function logMessages(stderr: string): string[] {
  return stderr
    .trim()
    .split("\n")
    .map((line) => (JSON.parse(line) as { msg: string }).msg);
}

/**
 * Kills, by pid, the processes of `pids` still running a server of the colony in `dir` (a pid may
 * have been reused by then, so only one whose command line names the directory).
 */
function killServersLeft(pids: readonly number[], dir: string): void {
  for (const pid of pids) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir)) process.kill(pid, "SIGKILL");
    } catch {
      // gone, as it should be
    }
  }
}

describe("the physalia command line against a local colony", () => {
  let dir: string;
  let colony: ChildProcess;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "physalia-cli-"));
    const topology = await localTopology(9);
    writeFileSync(join(dir, "topology.json"), JSON.stringify(topology));
    colony = spawn(process.execPath, [...cli, "up", "--topology", "topology.json"], {
      cwd: dir,
      stdio: "ignore",
    });
    const connection = join(dir, ".physalia", "colony.json");
    for (let i = 0; i < 300 && !existsSync(connection); i++) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(connection)).toBe(true);
  }, 60_000);

  afterAll(async () => {
    if (colony.exitCode === null) {
      const exited = new Promise((resolve) => colony.once("exit", resolve));
      process.kill(colony.pid as number, "SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("creates a cell, writes and reads typed values, describes the cell", async () => {
    expect((await physalia(["cell", "create", "vol-7"], dir)).code).toBe(0);
    expect((await physalia(["put", "vol-7", "replicas", "3"], dir)).code).toBe(0);
    const added = await physalia(["add", "vol-7", "replicas", "2", "--json"], dir);
    expect(added.code).toBe(0);
    expect(JSON.stringify(JSON.parse(added.stdout))).toContain('"5"');
    const got = await physalia(["get", "vol-7", "replicas"], dir);
    expect(got.stdout.trim()).toBe("5");
    const conditional = await physalia(["put", "vol-7", "replicas", "9", "--if", "replicas=4"], dir);
    expect(conditional.code).toBe(clientExitCodes.conditionFailed);
    const described = await physalia(["cell", "describe", "vol-7", "--json"], dir);
    expect(described.code).toBe(0);
    expect(JSON.parse(described.stdout).members).toHaveLength(7);
    const listed = await physalia(["cell", "list", "--json"], dir);
    expect(JSON.stringify(JSON.parse(listed.stdout))).toContain("vol-7");
  }, 60_000);

  it("goes on with the sessions of earlier commands, so one-shot writes do not fill the cell's 128", async () => {
    expect((await physalia(["cell", "create", "vol-s"], dir)).code).toBe(0);
    const state = mkdtempSync(join(tmpdir(), "physalia-cli-state-"));
    const env = { ...process.env, PHYSALIA_STATE_DIR: state };
    const clients: PhysaliaClient[] = [];
    try {
      expect((await physalia(["add", "vol-s", "n", "1"], dir, env)).code).toBe(0);
      // The cell's other 127 sessions, each used just now: 16 writes at once open 16 sessions.
      const others = limits.sessionsPerCellMax - 1;
      for (let opened = 0; opened < others; opened += limits.clientSessionsPerCellMax) {
        const client = await connect({ colony: join(dir, ".physalia", "colony.json") });
        clients.push(client);
        const count = Math.min(limits.clientSessionsPerCellMax, others - opened);
        await Promise.all(
          Array.from({ length: count }, (_, i) => client.cell("vol-s").put(`o${opened + i}`, 1n)),
        );
      }
      // The table is full: a command that keeps no sessions is refused ...
      const refused = await physalia(["add", "vol-s", "n", "1"], dir, {
        ...process.env,
        PHYSALIA_STATE_DIR: "",
      });
      expect(refused.code).toBe(clientExitCodes.unavailable);
      expect(refused.stderr).toMatch(/already remembers 128 client sessions/);
      // ... and commands that go on with the first one's session are not.
      for (let i = 0; i < 3; i++) expect((await physalia(["add", "vol-s", "n", "1"], dir, env)).code).toBe(0);
      expect((await physalia(["get", "vol-s", "n"], dir, env)).stdout.trim()).toBe("4");
    } finally {
      await Promise.all(clients.map((client) => client.close()));
      rmSync(state, { recursive: true, force: true });
    }
  }, 90_000);

  it("answers bad input, an unknown cell and a missing colony with one line and its exit code", async () => {
    const bad = await physalia(["add", "vol-7", "replicas", "two"], dir);
    expect(bad.code).toBe(clientExitCodes.usage);
    // One line naming the problem (and a pointer to --help), no stack trace.
    expect(bad.stderr.trim().split("\n")[0]).toMatch(/'two' is invalid .* must be an integer/);
    expect(bad.stderr.trim().split("\n").length).toBeLessThanOrEqual(2);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
    expect(bad.stderr).toMatch(/^physalia: /);
    // With --json, a usage error is the same JSON object as every other error.
    const badJson = await physalia(["add", "vol-7", "replicas", "two", "--json"], dir);
    expect(badJson.code).toBe(clientExitCodes.usage);
    expect(JSON.parse(badJson.stderr)).toEqual({
      error: {
        reason: "usage",
        exitCode: clientExitCodes.usage,
        message: expect.stringMatching(/'two' is invalid/),
      },
    });
    // A rejected argument of any length is repeated only in part: the message stays one short line.
    const longKey = await physalia(["cell", "create", "k".repeat(5000)], dir);
    expect(longKey.code).toBe(clientExitCodes.usage);
    expect(longKey.stderr.trim().split("\n")).toHaveLength(1);
    expect(longKey.stderr).toMatch(/'k{48}\.\.\.' \(5000 characters\) is invalid .*exceeds the limit of 128/);
    expect(longKey.stderr.length).toBeLessThan(400);
    const longOption = await physalia(["cell", "create", "vol-8", "--size", "9".repeat(3000)], dir);
    expect(longOption.code).toBe(clientExitCodes.usage);
    expect(longOption.stderr).toMatch(/argument '9{48}\.\.\.' \(3000 characters\) is invalid/);
    expect(longOption.stderr.length).toBeLessThan(400);
    // An empty item key is a mistake in the command, refused before anything is sent.
    const emptyItem = await physalia(["get", "vol-7", ""], dir);
    expect(emptyItem.code).toBe(clientExitCodes.usage);
    expect(emptyItem.stderr).toMatch(/an item key is 1 to 256 bytes of text, not empty/);
    // Bytes the shell passed that are not UTF-8 would reach Node.js as U+FFFD, one key for many.
    const notUtf8 = await new Promise<{ code: number; stderr: string }>((resolve) => {
      const command = `exec "$0" "$@" put vol-7 $'k\\xff' A`;
      execFile(
        "bash",
        ["-c", command, process.execPath, ...cli],
        { cwd: dir, encoding: "utf8" },
        (error, _out, stderr) =>
          resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? -1), stderr }),
      );
    });
    expect(notUtf8.code).toBe(clientExitCodes.usage);
    expect(notUtf8.stderr).toMatch(/argument 3 is not UTF-8 text \(its byte 1 is 0xff\)/);
    // A client with another key than the colony's: every server drops its connection.
    const wrongKey = await physalia(["get", "vol-7", "x"], dir, {
      ...process.env,
      PHYSALIA_COLONY_KEY: "ab".repeat(32),
    });
    expect(wrongKey.code).toBe(clientExitCodes.unavailable);
    expect(wrongKey.stderr).toMatch(/check that its colony key is the colony's/);
    const unknown = await physalia(["get", "no-such-cell", "x"], dir);
    expect(unknown.code).toBe(clientExitCodes.unknownCell);
    expect(unknown.stderr).toMatch(/does not exist/);
    const elsewhere = mkdtempSync(join(tmpdir(), "physalia-nocolony-"));
    try {
      const missing = await physalia(["get", "vol-7", "x"], elsewhere);
      expect(missing.code).toBe(clientExitCodes.colonyUnreachable);
      expect(missing.stderr).toMatch(/physalia up/);
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
  }, 60_000);

  it("reaches cells with a client key alone, which cannot create cells or pose as a server", async () => {
    expect((await physalia(["cell", "create", "vol-k"], dir)).code).toBe(0);
    const printed = await physalia(["client-key", "--json"], dir);
    expect(printed.code).toBe(0);
    const [clientKey] = JSON.parse(printed.stdout).clientKeys as string[];
    const colonyKey = readFileSync(join(dir, ".physalia", "colony.key"), "utf8").trim();
    expect(clientKey).toMatch(/^[0-9a-f]{64}$/);
    expect(clientKey).not.toBe(colonyKey);
    expect((await physalia(["client-key"], dir)).stdout.trim()).toBe(clientKey);
    // A connection file for clients: the colony's, naming the client key's file instead.
    const connection = JSON.parse(readFileSync(join(dir, ".physalia", "colony.json"), "utf8"));
    delete connection.keyFile;
    writeFileSync(join(dir, "client.key"), `${clientKey}\n`, { mode: 0o600 });
    writeFileSync(join(dir, "client.json"), JSON.stringify({ ...connection, clientKeyFile: "client.key" }));
    const asClient = ["--colony", "client.json"];
    expect((await physalia(["put", "vol-k", "replicas", "3", ...asClient], dir)).code).toBe(0);
    expect((await physalia(["get", "vol-k", "replicas", ...asClient], dir)).stdout.trim()).toBe("3");
    // Creating a cell goes through the servers' admin ports, which take the colony key only.
    const create = await physalia(["cell", "create", "vol-c", ...asClient], dir);
    expect(create.code).toBe(clientExitCodes.colonyUnreachable);
    expect(create.stderr).toMatch(/needs the colony key, and .*client\.json names only a client key/);
    // Given as the colony key, the client key is no key of this colony's servers.
    const posing = await physalia(["get", "vol-k", "owner"], dir, {
      ...process.env,
      PHYSALIA_COLONY_KEY: clientKey,
    });
    expect(posing.code).toBe(clientExitCodes.unavailable);
    // The SDK takes it too; a connection file naming both key files is refused.
    const client = await connect({
      servers: connection.servers,
      clientKey: Buffer.from(clientKey as string, "hex"),
    });
    try {
      expect(await client.cell("vol-k").get("replicas")).toBe(3n);
    } finally {
      await client.close();
    }
    writeFileSync(
      join(dir, "both.json"),
      JSON.stringify({ ...connection, keyFile: "x", clientKeyFile: "y" }),
    );
    const both = await physalia(["get", "vol-k", "owner", "--colony", "both.json"], dir);
    expect(both.code).toBe(clientExitCodes.colonyUnreachable);
    expect(both.stderr).toMatch(/name exactly one key file/);
  }, 60_000);

  it("refuses a second server on a data directory in use, and the first goes on", async () => {
    // s1's configuration with other ports: a copied configuration whose data was not changed.
    const config = JSON.parse(readFileSync(join(dir, ".physalia", "servers", "s1.json"), "utf8"));
    const [spare] = (await localTopology(1, 1)).servers;
    config.topology.servers[0] = {
      ...config.topology.servers[0],
      port: spare?.port,
      adminPort: spare?.adminPort,
    };
    writeFileSync(join(dir, "copy-of-s1.json"), JSON.stringify(config));
    const second = await physalia(["server", "--config", "copy-of-s1.json"], dir);
    expect(second.code).toBe(9);
    const lines = logMessages(second.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^server s1 could not start: the data directory .*s1 is in use by another server process \\(pid ${colony.pid}\\)`,
      ),
    );
    expect(lines[0]).toContain("Stop that process first, or give this server its own data directory");
    expect((await physalia(["get", "vol-7", "replicas"], dir)).stdout.trim()).toBe("5");
  }, 60_000);

  it("stops cleanly on Ctrl-C", async () => {
    const exited = new Promise<number | null>((resolve) => colony.once("exit", (code) => resolve(code)));
    process.kill(colony.pid as number, "SIGINT");
    expect(await exited).toBe(0);
  }, 30_000);
});

describe("physalia up --demo", () => {
  it("prints commands that work as printed, with the data directory elsewhere too", async () => {
    const dir = mkdtempSync(join(tmpdir(), "physalia-demo-"));
    const topology = await localTopology(9);
    writeFileSync(join(dir, "topology.json"), JSON.stringify(topology));
    const colony = spawn(
      process.execPath,
      [...cli, "up", "--demo", "--topology", "topology.json", "--data", join(dir, "elsewhere")],
      { cwd: dir, stdio: ["ignore", "pipe", "pipe"] },
    );
    try {
      let out = "";
      let err = "";
      colony.stdout?.on("data", (chunk: Buffer) => {
        out += chunk.toString("utf8");
      });
      colony.stderr?.on("data", (chunk: Buffer) => {
        err += chunk.toString("utf8");
      });
      for (let i = 0; i < 600 && !out.includes("press Ctrl-C to stop") && colony.exitCode === null; i++)
        await new Promise((r) => setTimeout(r, 100));
      expect(out, `up exited ${colony.exitCode}; its stderr: ${err}`).toContain("demo cells: demo-volume-1");
      // Run from the directory up ran in, as a second terminal would, with only what was printed.
      const exported = /^ {2}export PHYSALIA_COLONY=(\S+)$/m.exec(out);
      expect(exported?.[1]).toBe(join(dir, "elsewhere", "colony.json"));
      const get = /^ {2}npx physalia (get .*)$/m.exec(out)?.[1]?.split(" ") ?? [];
      expect(get).toEqual(["get", "demo-volume-1", "greeting"]);
      const { PHYSALIA_COLONY: _ignored, ...env } = process.env;
      const answer = await physalia(get, dir, { ...env, PHYSALIA_COLONY: exported?.[1] as string });
      expect(answer).toMatchObject({ code: 0, stdout: "hello from demo-volume-1\n" });
      const exited = new Promise<number | null>((resolve) => colony.once("exit", (code) => resolve(code)));
      colony.kill("SIGINT");
      expect(await exited).toBe(0);
    } finally {
      if (colony.exitCode === null && colony.signalCode === null) colony.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});

describe("physalia up --processes", () => {
  it("runs one process per server, serves clients, and stops every process when its terminal hangs up", async () => {
    const dir = mkdtempSync(join(tmpdir(), "physalia-procs-"));
    const topology = await localTopology(7);
    writeFileSync(join(dir, "topology.json"), JSON.stringify(topology));
    const colony = spawn(
      process.execPath,
      [...cli, "up", "--processes", "--json", "--topology", "topology.json"],
      {
        cwd: dir,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    // The server processes, once known: stopped at the end whatever happened (a failed check
    // would otherwise leave them running without the `up` that started them).
    let pids: number[] = [];
    try {
      let out = "";
      let err = "";
      colony.stdout?.on("data", (chunk: Buffer) => {
        out += chunk.toString("utf8");
      });
      colony.stderr?.on("data", (chunk: Buffer) => {
        if (err.length < 4096) err += chunk.toString("utf8");
      });
      for (let i = 0; i < 600 && !out.includes("\n"); i++) await new Promise((r) => setTimeout(r, 100));
      expect(out.includes("\n"), `physalia up printed no line within 60 s; its stderr: ${err}`).toBe(true);
      const started = JSON.parse(out.split("\n")[0] as string) as { servers: { id: string; pid: number }[] };
      pids = started.servers.map((s) => s.pid);
      expect(new Set(pids).size).toBe(7);
      expect(pids).not.toContain(colony.pid);
      expect((await physalia(["cell", "create", "vol-p"], dir)).code).toBe(0);
      expect((await physalia(["put", "vol-p", "owner", "str:team-a"], dir)).code).toBe(0);
      expect((await physalia(["get", "vol-p", "owner"], dir)).stdout.trim()).toBe("team-a");
      const status = JSON.parse((await physalia(["status", "--json"], dir)).stdout);
      expect(JSON.stringify(status)).toContain('"s7"');
      expect(status.servers[0].dataFreeBytes).toBeGreaterThan(0);
      // A second colony in the same directory: its servers find their data directories held,
      // and it says so, rather than take the first colony's answers on its ports for its own.
      const second = await physalia(["up", "--processes", "--topology", "topology.json"], dir);
      expect(second.code).toBe(9);
      expect(second.stderr.trim().split("\n")).toHaveLength(1);
      expect(second.stderr).toMatch(
        new RegExp(
          "^physalia: the colony could not start: server s\\d exited \\(9\\) before it was healthy: " +
            `server s\\d could not start: the data directory .* is in use by another server process \\(pid (${pids.join("|")})\\)`,
        ),
      );
      // A server process that dies is reported by up at once.
      process.kill(pids[6] as number, "SIGKILL");
      for (let i = 0; i < 100 && !err.includes("server s7 stopped"); i++)
        await new Promise((r) => setTimeout(r, 100));
      expect(err).toMatch(/physalia: server s7 stopped \(killed by SIGKILL\); its log: .*s7\.log/);
      // The terminal goes away: SIGHUP reaches up and its servers. A server reads its keys again
      // on SIGHUP and goes on; up stops every server and exits.
      const exited = new Promise<number | null>((resolve) => colony.once("exit", (code) => resolve(code)));
      for (const pid of pids.slice(0, 6)) process.kill(pid, "SIGHUP");
      process.kill(colony.pid as number, "SIGHUP");
      expect(await exited).toBe(0);
      // Every server process is gone.
      const alive = pids.filter((pid) => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      });
      expect(alive).toEqual([]);
    } finally {
      if (colony.exitCode === null && colony.signalCode === null)
        process.kill(colony.pid as number, "SIGKILL");
      killServersLeft(pids, dir);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe("physalia up --processes killed with kill -9", () => {
  it("leaves no server behind: each notices within a second and stops cleanly, so the next up starts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "physalia-orphans-"));
    const topology = await localTopology(3, 3);
    writeFileSync(join(dir, "topology.json"), JSON.stringify(topology));
    const alive = (pid: number) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("server");
      } catch {
        return false;
      }
    };
    const startUp = async () => {
      const child = spawn(
        process.execPath,
        [...cli, "up", "--processes", "--json", "--topology", "topology.json"],
        {
          cwd: dir,
          stdio: ["ignore", "pipe", "ignore"],
        },
      );
      let out = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        out += chunk.toString("utf8");
      });
      for (let i = 0; i < 600 && !out.includes("\n") && child.exitCode === null; i++)
        await new Promise((r) => setTimeout(r, 100));
      const started = JSON.parse(out.split("\n")[0] as string) as { servers: { pid: number }[] };
      return { child, pids: started.servers.map((s) => s.pid) };
    };
    const everyPid: number[] = [];
    const running: ChildProcess[] = [];
    try {
      const first = await startUp();
      running.push(first.child);
      everyPid.push(...first.pids);
      expect(first.pids).toHaveLength(3);
      expect((await physalia(["cell", "create", "vol-o"], dir)).code).toBe(0);
      expect((await physalia(["put", "vol-o", "n", "7"], dir)).code).toBe(0);
      const exited = new Promise((resolve) => first.child.once("exit", resolve));
      process.kill(first.child.pid as number, "SIGKILL");
      await exited;
      for (let i = 0; i < 100 && first.pids.some(alive); i++) await new Promise((r) => setTimeout(r, 100));
      expect(first.pids.filter(alive)).toEqual([]);
      for (const id of ["s1", "s2", "s3"]) {
        const log = readFileSync(join(dir, ".physalia", "logs", `${id}.log`), "utf8");
        expect(log).toMatch(
          new RegExp(
            `the physalia up process \\(pid ${first.child.pid}\\) that started this server is gone; stopping`,
          ),
        );
        expect(log).toContain(`"msg":"physalia up (pid ${first.child.pid}) is gone: shutting down"`);
      }
      // Their data directories are free again, and hold what was written.
      const second = await startUp();
      running.push(second.child);
      everyPid.push(...second.pids);
      expect((await physalia(["get", "vol-o", "n"], dir)).stdout.trim()).toBe("7");
      const stopped = new Promise<number | null>((resolve) =>
        second.child.once("exit", (code) => resolve(code)),
      );
      process.kill(second.child.pid as number, "SIGTERM");
      expect(await stopped).toBe(0);
    } finally {
      for (const child of running)
        if (child.exitCode === null && child.signalCode === null)
          process.kill(child.pid as number, "SIGKILL");
      killServersLeft(everyPid, dir);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe("physalia server with a bad configuration", () => {
  it("names the file, the field and the problem in one line, and exits 2", async () => {
    const dir = mkdtempSync(join(tmpdir(), "physalia-badconfig-"));
    try {
      writeFileSync(
        join(dir, "s1.yaml"),
        "server: s1\ndata: ./s1\ntopology:\n  servers:\n    - {id: s1, host: 127.0.0.1, port: 99999, adminPort: 7201, rack: r1, power: p1}\n",
      );
      const bad = await physalia(["server", "--config", "s1.yaml"], dir);
      expect(bad.code).toBe(2);
      const lines = logMessages(bad.stderr);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/s1\.yaml is invalid: .*port/);
      const missing = await physalia(["server", "--config", "nowhere.yaml"], dir);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toMatch(/cannot read the server configuration .*nowhere\.yaml/);
      writeFileSync(
        join(dir, "s2.yaml"),
        "server: s1\ndata: ./s1\nresidentIdleSeconds: 0\ntopology:\n  servers:\n    - {id: s1, host: 127.0.0.1, port: 7101, adminPort: 7201, rack: r1, power: p1}\n",
      );
      const eviction = await physalia(["server", "--config", "s2.yaml"], dir);
      expect(eviction.code).toBe(2);
      expect(eviction.stderr).toMatch(/s2\.yaml is invalid: .*residentIdleSeconds/);
      // An empty path would mean the current directory: refused before anything is read or written.
      for (const args of [
        ["server", "--config", ""],
        ["up", "--data", " "],
        ["up", "--topology", ""],
        ["get", "vol-1", "a", "--colony", ""],
        ["txn", "vol-1", "--file", ""],
      ]) {
        const empty = await physalia(args, dir);
        expect(empty.code, args.join(" ")).toBe(2);
        expect(empty.stderr, args.join(" ")).toMatch(
          /argument '\s*' is invalid\. a file or directory name is needed/,
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

describe("physalia server asked to stop while it opens its storage", () => {
  it("finishes opening, then stops cleanly (exit code 0), its journal replayed into lmdb", async () => {
    const dir = mkdtempSync(join(tmpdir(), "physalia-early-stop-"));
    try {
      // A crash left many cells in the journal only: the next start replays them into lmdb first.
      const cells = 60_000;
      const data = join(dir, "s1");
      const crashed = LmdbStorage.open({
        path: data,
        codec: commandCodec,
        checkpoint: { journalBytes: 64 * 1024 * 1024, cells: 10_000_000, intervalMs: 600_000 },
      });
      const members = [{ serverId: "s1", incarnation: 1 }];
      const state = new CellMachine().snapshot();
      const writes = Array.from({ length: cells }, (_, i) => ({
        cellKey: `vol-${i}`,
        node: members[0] as NodeId,
        promised: null,
        entries: [],
        snapshot: { index: 0, membership: initialMembership(members), state },
        truncateThrough: 0,
      }));
      await new Promise<void>((resolve, reject) =>
        crashed.write({ writes, removed: [], pointers: [] }, (error) =>
          error === null ? resolve() : reject(error),
        ),
      );
      await crashed.abandonForTest();

      const topology = await localTopology(1, 1);
      writeFileSync(join(dir, "colony.key"), `${"cd".repeat(32)}\n`, { mode: 0o600 });
      writeFileSync(
        join(dir, "s1.json"),
        JSON.stringify({ server: "s1", data: "./s1", keyFile: "colony.key", topology }),
      );
      const child = spawn(process.execPath, [...cli, "server", "--config", "s1.json"], {
        cwd: dir,
        stdio: ["ignore", "ignore", "pipe"],
        env: { ...process.env, PHYSALIA_COLONY_KEY: "" },
      });
      let stderr = "";
      child.stderr?.on("data", (chunk: Buffer) => {
        stderr += chunk.toString("utf8");
      });
      const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
        child.once("exit", (code, signal) => resolve({ code, signal })),
      );
      // server.pid appears once the directory is locked, before the journal is replayed.
      const pidFile = join(data, "server.pid");
      for (let i = 0; i < 3000 && !existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 5));
      expect(existsSync(pidFile)).toBe(true);
      child.kill("SIGTERM");
      expect(await exited).toEqual({ code: 0, signal: null });
      // (The replay holds the event loop, so the signal is often handled only once the start is
      // done; when it is handled during the start, the server says it will stop once started.)
      expect(stderr).toContain('"msg":"SIGTERM: shutting down"');
      // The server's standard error is its log: one JSON object per line, these lines included.
      expect(logMessages(stderr)).toContain("SIGTERM: shutting down");
      expect(stderr).toContain('"msg":"server stopped"');
      // Stopped cleanly: every replayed cell is in lmdb, and the directory is free.
      expect(existsSync(pidFile)).toBe(false);
      const reopened = LmdbStorage.open({ path: data, codec: commandCodec });
      try {
        expect(reopened.stats().replayedBatches).toBe(0);
        expect(reopened.hostedCount()).toBe(cells);
      } finally {
        await reopened.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe("physalia server on another server's data directory", () => {
  it("is refused with exit code 9, by the directory's server-id file or, without one, by its stored nodes", async () => {
    const dir = mkdtempSync(join(tmpdir(), "physalia-identity-"));
    let s1: ChildProcess | null = null;
    try {
      const topology = await localTopology(2, 1);
      writeFileSync(join(dir, "colony.key"), `${"cd".repeat(32)}\n`, { mode: 0o600 });
      const config = (server: string, data: string) =>
        JSON.stringify({ server, data, keyFile: "colony.key", topology });
      writeFileSync(join(dir, "s1.json"), config("s1", "./s1"));
      // s2's configuration with s1's directory: a copy whose `data` was not changed.
      writeFileSync(join(dir, "wrong.json"), config("s2", "./s1"));
      const s1Entry = topology.servers[0] as (typeof topology.servers)[number];
      const admin = adminUrl(s1Entry);
      const startS1 = async () => {
        const child = spawn(process.execPath, [...cli, "server", "--config", "s1.json"], {
          cwd: dir,
          stdio: "ignore",
          env: { ...process.env, PHYSALIA_COLONY_KEY: "" },
        });
        for (let i = 0; i < 200; i++) {
          const up = await fetch(`${admin}/healthz`).then(
            (r) => r.ok,
            () => false,
          );
          if (up) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        return child;
      };
      const stopS1 = async () => {
        const child = s1 as ChildProcess;
        const exited = new Promise((resolve) => child.once("exit", resolve));
        process.kill(child.pid as number, "SIGTERM");
        await exited;
        s1 = null;
      };
      s1 = await startS1();
      const token = adminToken(Buffer.from("cd".repeat(32), "hex"));
      const created = await fetch(`${admin}/cells`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ cellKey: "vol-1", members: [{ serverId: "s1", incarnation: 1 }] }),
      });
      expect(created.status).toBe(200);
      await stopS1();
      const identity = join(dir, "s1", "server-id");
      expect(readFileSync(identity, "utf8")).toBe("s1\n");

      const refusal = new RegExp(
        "^server s2 could not start: the data directory .*s1 belongs to server s1, and this server is s2: " +
          ".*Point `data` at s2's own directory, or start s1 with this one$",
      );
      const wrong = await physalia(["server", "--config", "wrong.json"], dir, {
        ...process.env,
        PHYSALIA_COLONY_KEY: "",
      });
      expect(wrong.code).toBe(9);
      expect(logMessages(wrong.stderr)).toEqual([expect.stringMatching(refusal)]);
      // A directory without the file (an earlier build's): its stored node says whose it is.
      rmSync(identity);
      const legacy = await physalia(["server", "--config", "wrong.json"], dir, {
        ...process.env,
        PHYSALIA_COLONY_KEY: "",
      });
      expect(legacy.code).toBe(9);
      expect(logMessages(legacy.stderr)).toEqual([expect.stringMatching(refusal)]);
      expect(existsSync(identity)).toBe(false);
      // Its own server adopts it, and writes the file again.
      s1 = await startS1();
      expect(readFileSync(identity, "utf8")).toBe("s1\n");
      await stopS1();
    } finally {
      if (s1 !== null) process.kill((s1 as ChildProcess).pid as number, "SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("admin URLs", () => {
  it("put an IPv6 host in brackets, so a colony on ::1 can be reached", () => {
    expect(adminUrl({ host: "::1", adminPort: 9101 })).toBe("http://[::1]:9101");
    expect(adminUrl({ host: "127.0.0.1", adminPort: 9101 })).toBe("http://127.0.0.1:9101");
    expect(() => new URL(adminUrl({ host: "::1", adminPort: 9101 }))).not.toThrow();
  });
});
