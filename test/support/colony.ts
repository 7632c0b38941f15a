/** Helpers for tests that run real colonies on 127.0.0.1. */
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import {
  adminToken,
  ensureKeyFile,
  parseTopology,
  type ServerConfig,
  type Topology,
  writeConnectionFile,
} from "../../src/cli/colony.ts";
import type { NodeId } from "../../src/core/index.ts";
import { placeCell } from "../../src/discovery/index.ts";
import { serverNodeFlags } from "../../src/server/index.ts";

/** Ports free right now (the kernel picks them; they are released before use). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer();
          server.once("error", reject);
          server.listen(0, "127.0.0.1", () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

/**
 * A topology of `servers` servers on free ports over three racks and three power domains, all on
 * 127.0.0.1 unless `hostOf` gives each server its own address.
 */
export async function localTopology(
  servers: number,
  cellSize = 7,
  colony = "test",
  hostOf: (i: number) => string = () => "127.0.0.1",
): Promise<Topology> {
  const ports = await freePorts(servers * 2);
  return parseTopology(
    {
      colony,
      cellSize,
      servers: Array.from({ length: servers }, (_, i) => ({
        id: `s${i + 1}`,
        host: hostOf(i),
        port: ports[2 * i],
        adminPort: ports[2 * i + 1],
        rack: `r${(i % 3) + 1}`,
        power: `p${(Math.floor(i / 3) % 3) + 1}`,
      })),
    },
    `${colony} topology`,
  );
}

/** Creates cells on their founding members through the admin ports, in batches. */
export async function createCells(
  topology: Topology,
  colonyKey: Uint8Array,
  cellKeys: readonly string[],
): Promise<void> {
  const token = adminToken(colonyKey);
  const perServer = new Map<string, { cellKey: string; members: NodeId[] }[]>();
  for (const cellKey of cellKeys) {
    const ids = placeCell(cellKey, topology.servers, topology.cellSize);
    const members = ids.map((serverId, i) => ({ serverId, incarnation: i + 1 }));
    for (const id of ids) {
      const list = perServer.get(id) ?? [];
      list.push({ cellKey, members });
      perServer.set(id, list);
    }
  }
  await Promise.all(
    [...perServer].map(async ([id, cells]) => {
      const server = topology.servers.find((s) => s.id === id);
      for (let i = 0; i < cells.length; i += 1000) {
        const response = await fetch(`http://${server?.host}:${server?.adminPort}/cells`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ cells: cells.slice(i, i + 1000) }),
        });
        if (!response.ok)
          throw new Error(`creating cells on ${id}: ${response.status} ${await response.text()}`);
      }
    }),
  );
}

/**
 * Arguments for `process.execPath` that run one server from the sources (cwd: the repository),
 * with the server's Node flags and any extra ones before them.
 */
export function serverProcessArgs(configFile: string, extraNodeFlags: readonly string[] = []): string[] {
  return [
    ...serverNodeFlags,
    ...extraNodeFlags,
    "--import",
    "tsx",
    "src/cli/main.ts",
    "server",
    "--config",
    configFile,
  ];
}

/**
 * Writes what a colony's processes and clients read, into `dir`: a colony key (`colony.key`), one
 * server config per server (`<id>.json`, data in `<id>/`, with any overrides) and the connection
 * file (`colony.json`).
 */
export function writeColonyFiles(
  dir: string,
  topology: Topology,
  overrides: Readonly<Record<string, Partial<ServerConfig>>> = {},
): { keyFile: string; configFiles: Map<string, string>; connectionFile: string } {
  const keyFile = join(dir, "colony.key");
  ensureKeyFile(keyFile);
  const configFiles = new Map<string, string>();
  for (const s of topology.servers) {
    const config: ServerConfig = {
      server: s.id,
      data: join(dir, s.id),
      keyFile,
      topology,
      ...overrides[s.id],
    };
    const file = join(dir, `${s.id}.json`);
    writeFileSync(file, JSON.stringify(config));
    configFiles.set(s.id, file);
  }
  const connectionFile = join(dir, "colony.json");
  writeConnectionFile(connectionFile, {
    colony: topology.colony,
    cellSize: topology.cellSize,
    keyFile: "colony.key",
    servers: topology.servers,
  });
  return { keyFile, configFiles, connectionFile };
}
