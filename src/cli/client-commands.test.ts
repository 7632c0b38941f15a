import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { afterAll, describe, expect, it } from "vitest";
import { cellKeyProblem, compareUtf8, limits } from "../core/index.ts";
import {
  type ClientCommandContext,
  clientExitCodes,
  colonyFilePath,
  hostsProblem,
  justBefore,
  registerClientCommands,
  shellWord,
} from "./client-commands.ts";
import { ensureKeyFile } from "./colony.ts";

/** Runs one client command without a colony; returns its exit code and what it printed. */
function physalia(cwd: string, ...args: string[]) {
  return physaliaWith({}, cwd, ...args);
}

async function physaliaWith(context: Partial<ClientCommandContext>, cwd: string, ...args: string[]) {
  let stdout = "";
  let stderr = "";
  let code: number | null = null;
  const program = new Command().name("physalia").exitOverride();
  program.configureOutput({ writeErr: (text) => (stderr += text), writeOut: (text) => (stdout += text) });
  registerClientCommands(program, {
    exit: (c) => (code = c),
    cwd,
    env: {},
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    ...context,
  });
  try {
    await program.parseAsync(args, { from: "user" });
  } catch {
    code = clientExitCodes.usage; // what the program's exit override does in main.ts
  }
  return { code, stdout, stderr };
}

describe("client commands without a colony", () => {
  const cwd = mkdtempSync(join(tmpdir(), "physalia-cli-"));
  afterAll(() => rmSync(cwd, { recursive: true, force: true }));

  it("find the connection file from --colony, then PHYSALIA_COLONY, then ./.physalia", () => {
    expect(colonyFilePath("c.json", { PHYSALIA_COLONY: "/x.json" }, "/home/me")).toBe("/home/me/c.json");
    expect(colonyFilePath(undefined, { PHYSALIA_COLONY: "/x.json" }, "/home/me")).toBe("/x.json");
    expect(colonyFilePath(undefined, { PHYSALIA_COLONY: "" }, "/home/me")).toBe(
      "/home/me/.physalia/colony.json",
    );
  });

  it("say in one line that there is no colony, with exit code 3", async () => {
    const result = await physalia(cwd, "get", "vol-1", "color");
    expect(result.code).toBe(clientExitCodes.colonyUnreachable);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(/^physalia: no colony connection file at .*colony\.json: start a colony/);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("print errors as JSON on stderr with --json", async () => {
    const result = await physalia(cwd, "status", "--json", "--colony", "missing.json");
    expect(result.code).toBe(clientExitCodes.colonyUnreachable);
    expect(JSON.parse(result.stderr)).toEqual({
      error: {
        reason: "colony_unreachable",
        exitCode: 3,
        message: expect.stringContaining(join(cwd, "missing.json")),
      },
    });
  });

  it("refuse a bad transaction file before looking for the colony, with exit code 2", async () => {
    const file = join(cwd, "t.json");
    writeFileSync(file, '{"writes": [{"item": "a", "op": "put"}]}');
    const result = await physalia(cwd, "txn", "vol-1", "--file", file);
    expect(result.code).toBe(clientExitCodes.usage);
    expect(result.stderr).toBe(`physalia: ${file}: writes[0]: a "put" needs a "value"\n`);
  });

  it("take a lease's duration in milliseconds or with a unit (parsed before the colony is looked for)", async () => {
    const acquire = (duration: string) =>
      physalia(cwd, ...["lease", "acquire", "vol-1", "l", "--holder", "me", "--duration", duration]);
    for (const duration of ["30000", "30000ms", "30s", "2m", "10", "10m"]) {
      // Past the options: the colony is what is missing.
      expect((await acquire(duration)).code, duration).toBe(clientExitCodes.colonyUnreachable);
    }
    const result = await acquire("9ms");
    expect(result.code).toBe(clientExitCodes.usage);
    expect(result.stderr).toMatch(/--duration must be a duration from 10 to 600000 ms.*got "9ms"/);
  });

  it("refuse bad values, conditions and cell keys as usage errors", async () => {
    for (const args of [
      ["put", "vol-1", "a", "hex:0"],
      ["put", "vol-1", "a", "1", "--if", "a >= 1"],
      ["add", "vol-1", "a", "1.5"],
      ["get", "", "a"],
      ["lease", "acquire", "vol-1", "l", "--holder", "me", "--duration", "5"],
      ["lease", "acquire", "vol-1", "l", "--holder", "me", "--duration", "11m"],
      ["lease", "acquire", "vol-1", "l", "--holder", "me", "--duration", "1.5s"],
      ["lease", "renew", "vol-1", "l", "--holder", "me", "--duration", "30 s"],
      ["lease", "acquire", "vol-1", "", "--holder", "me"],
      ["lease", "release", "vol-1", "l", "--holder", ""],
      ["lease", "renew", "vol-1", "n".repeat(300), "--holder", "me"],
    ]) {
      const result = await physalia(cwd, ...args);
      expect(result.code, args.join(" ")).toBe(clientExitCodes.usage);
      expect(result.stderr, args.join(" ")).toMatch(/^error: /);
    }
  });
});

/** A fake colony of admin ports answering GET /status and GET /cells, written to colony.json in cwd. */
async function fakeColony(
  cwd: string,
  answers: readonly ((url: URL) => unknown)[],
): Promise<{ close(): Promise<void> }> {
  const servers = answers.map((answer) =>
    createServer((request, response) => {
      response.setHeader("content-type", "application/json");
      response.end(JSON.stringify(answer(new URL(request.url ?? "/", "http://admin"))));
    }),
  );
  for (const server of servers) await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  writeFileSync(
    join(cwd, "colony.json"),
    JSON.stringify({
      colony: "test",
      cellSize: 1,
      keyFile: "colony.key",
      servers: servers.map((server, i) => ({
        id: `s${i + 1}`,
        host: "127.0.0.1",
        port: 1,
        adminPort: (server.address() as AddressInfo).port,
        rack: "r1",
        power: "p1",
      })),
    }),
  );
  return {
    close: async () => {
      for (const server of servers) await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe("a colony file's hosts", () => {
  const notFound = (host: string) =>
    Promise.reject(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" }));

  it("are refused at once when none resolves, naming at most three with what the name service said", async () => {
    const asked: string[] = [];
    const lookupHost = (host: string) => {
      asked.push(host);
      return notFound(host);
    };
    const hosts = ["a.example", "b.example", "a.example", "c.example", "d.example"];
    expect(await hostsProblem(hosts, lookupHost)).toBe(
      "a.example (getaddrinfo ENOTFOUND a.example), b.example (getaddrinfo ENOTFOUND b.example), " +
        "c.example (getaddrinfo ENOTFOUND c.example) and 1 more",
    );
    expect(asked.sort()).toEqual(["a.example", "b.example", "c.example", "d.example"]);
  });

  it("that none resolves make a command fail at once with exit code 3, before it dials", async () => {
    const cwd = mkdtempSync(join(tmpdir(), "physalia-hosts-"));
    try {
      ensureKeyFile(join(cwd, "colony.key"));
      const servers = [1, 2, 3].map((i) => ({
        id: `s${i}`,
        host: `db${i}.example`,
        port: 7100 + i,
        adminPort: 7200 + i,
        rack: `r${i}`,
        power: "p1",
      }));
      writeFileSync(
        join(cwd, "colony.json"),
        JSON.stringify({ colony: "test", cellSize: 3, keyFile: "colony.key", servers }),
      );
      const started = Date.now();
      const result = await physaliaWith(
        { lookupHost: notFound },
        cwd,
        "get",
        "vol-1",
        "a",
        "--colony",
        "colony.json",
      );
      expect(Date.now() - started).toBeLessThan(5000);
      expect(result.code).toBe(clientExitCodes.colonyUnreachable);
      expect(result.stderr).toBe(
        `physalia: no server address in the colony file ${join(cwd, "colony.json")} resolves: ` +
          "db1.example (getaddrinfo ENOTFOUND db1.example), db2.example (getaddrinfo ENOTFOUND db2.example), " +
          "db3.example (getaddrinfo ENOTFOUND db3.example); fix the hosts in the file or this machine's name service\n",
      );
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  it("pass when one resolves, when one is an IP address, or when the name service is slow", async () => {
    const some = (host: string) =>
      host === "b.example" ? Promise.resolve({ address: "127.0.0.1" }) : notFound(host);
    expect(await hostsProblem(["a.example", "b.example"], some)).toBeNull();
    const never = () => {
      throw new Error("an IP address is not looked up");
    };
    expect(await hostsProblem(["a.example", "127.0.0.1"], never)).toBeNull();
    expect(await hostsProblem(["::1"], never)).toBeNull();
    const slow = () => new Promise<never>(() => {});
    expect(await hostsProblem(["a.example"], slow, 20)).toBeNull();
    expect(await hostsProblem(["a.example"], notFound, 20)).toMatch(/^a\.example \(getaddrinfo ENOTFOUND/);
  });
});

describe("cell list", () => {
  it("merges the servers' listings in their order (UTF-8 bytes), each cell once", async () => {
    const cwd = mkdtempSync(join(tmpdir(), "physalia-list-"));
    // In UTF-8 byte order; in UTF-16 code units "😀" would sort before "｡".
    const hosted = [["a", "z", "｡", "😀"], ["b", "z", "｡", "𝄞x", "😀"], ["｡"]];
    const colony = await fakeColony(
      cwd,
      hosted.map((cells) => (url: URL) => {
        const after = url.searchParams.get("after") ?? "";
        return { cells: cells.filter((c) => compareUtf8(c, after) > 0), more: false };
      }),
    );
    try {
      const list = await physalia(cwd, "cell", "list", "--colony", "colony.json");
      expect(list.code).toBe(clientExitCodes.ok);
      expect(list.stdout.trim().split("\n")).toEqual(["a", "b", "z", "｡", "𝄞x", "😀"]);
      const after = await physalia(cwd, "cell", "list", "--json", "--after", "z", "--colony", "colony.json");
      expect(JSON.parse(after.stdout).cells).toEqual(["｡", "𝄞x", "😀"]);
      const bad = await physalia(cwd, "cell", "list", "--after", "x".repeat(200), "--colony", "colony.json");
      expect(bad.code).toBe(clientExitCodes.usage);
      expect(bad.stderr).toMatch(/exceeds the limit/);
    } finally {
      await colony.close();
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  it("starts a lookup just below a key, with a valid key, however long the key", () => {
    const keys = [
      "vol-1",
      "a",
      "\u0000",
      "x".repeat(limits.cellKeyBytesMax),
      "é".repeat(limits.cellKeyBytesMax / 2),
      `${"x".repeat(limits.cellKeyBytesMax - 4)}😀`,
      "\ue000",
      "𐀀",
      "vol-\u0001",
    ];
    for (const key of keys) {
      const below = justBefore(key);
      expect(below === "" || cellKeyProblem(below) === null, JSON.stringify(key)).toBe(true);
      expect(compareUtf8(below, key), JSON.stringify(key)).toBeLessThan(0);
    }
    // Keys between the start and the key are only those that begin with the lowered key.
    expect(justBefore("vol-9")).toBe("vol-8\u{10ffff}");
    expect(justBefore("x".repeat(limits.cellKeyBytesMax))).toBe(`${"x".repeat(limits.cellKeyBytesMax - 1)}w`);
  });
});

describe("physalia status", () => {
  it("names at most 10 stalled or faulty cells a server reports, and counts them all", async () => {
    const cwd = mkdtempSync(join(tmpdir(), "physalia-status-"));
    const faulty = Array.from({ length: 1000 }, (_, i) => `vol-${i}`);
    const colony = await fakeColony(cwd, [
      (url) => {
        expect(url.pathname).toBe("/status");
        return {
          server: "s1",
          healthy: true,
          hostedNodes: 2500,
          residentNodes: 10,
          leaders: 1,
          pendingRequests: 0,
          stalledCells: ["vol-old"],
          stalledCount: 1,
          faultyCells: faulty,
          faultyCount: 2500,
          suspectedPeers: [],
          uptimeSeconds: 5,
          rssBytes: 1,
          dataFreeBytes: 1000,
          diskWarning: "the disk is nearly full: 1000 bytes free on the file system holding /data/s1; ...",
        };
      },
    ]);
    try {
      const text = await physalia(cwd, "status", "--colony", "colony.json");
      expect(text.code).toBe(clientExitCodes.ok);
      expect(text.stdout).toContain("s1: stalled cells: vol-old (upgrade the servers)\n");
      expect(text.stdout).toContain(
        "s1: the disk is nearly full: 1000 bytes free on the file system holding /data/s1",
      );
      const line = text.stdout.split("\n").find((l) => l.startsWith("s1: faulty cells: "));
      expect(line).toBe(
        `s1: faulty cells: ${faulty.slice(0, 10).join(", ")}, ... (2,500 in all) ` +
          "(a damaged record: replace the node with a new incarnation)",
      );
      const json = JSON.parse((await physalia(cwd, "status", "--json", "--colony", "colony.json")).stdout);
      expect(json.servers[0]).toMatchObject({
        up: true,
        faultyCount: 2500,
        stalledCount: 1,
        dataFreeBytes: 1000,
      });
      expect(json.servers[0].faultyCells).toHaveLength(1000);
    } finally {
      await colony.close();
      rmSync(cwd, { recursive: true, force: true });
    }
  });
});

describe("physalia status of servers that stopped themselves", () => {
  it("counts them apart from those up, shows them leading nothing, and fails when none is up", async () => {
    const cwd = mkdtempSync(join(tmpdir(), "physalia-status-stopped-"));
    const stoppedServer = (server: string) => () => ({
      server,
      healthy: false,
      hostedNodes: 7,
      residentNodes: 7,
      leaders: 1,
      pendingRequests: 1,
      stalledCells: [],
      stalledCount: 0,
      faultyCells: [],
      faultyCount: 0,
      suspectedPeers: [],
      uptimeSeconds: 5,
    });
    const colony = await fakeColony(cwd, [stoppedServer("s1"), stoppedServer("s2")]);
    try {
      const text = await physalia(cwd, "status", "--colony", "colony.json");
      expect(text.stdout).toMatch(/: 2 servers, 0 up, 2 stopped, 0 down\n/);
      const row = text.stdout.split("\n").find((l) => l.startsWith("s1 "));
      expect(row?.split(/\s+/).slice(2)).toEqual(["stopped", "7", "7", "-", "-", "5s"]);
      expect(text.code).toBe(clientExitCodes.colonyUnreachable);
      expect(text.stderr).toMatch(
        /no server of the colony .* serves: 2 stopped themselves \(see their logs\)/,
      );
      const json = JSON.parse((await physalia(cwd, "status", "--json", "--colony", "colony.json")).stdout);
      expect(json).toMatchObject({ up: 0, stopped: 2, down: 0 });
    } finally {
      await colony.close();
      rmSync(cwd, { recursive: true, force: true });
    }
  });
});

describe("commands suggested in messages", () => {
  it("quote a key the shell would split or expand, so they work as printed", () => {
    expect(shellWord("vol-1")).toBe("vol-1");
    expect(shellWord("a b")).toBe("'a b'");
    expect(shellWord("it's $HOME")).toBe("'it'\\''s $HOME'");
    expect(shellWord("")).toBe("''");
  });
});
