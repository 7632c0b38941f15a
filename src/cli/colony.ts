/**
 * A colony's files: the topology (servers, their addresses, racks and power domains), the
 * colony key, and the connection file `physalia up` writes so that client commands find the
 * colony. Every file is validated at the edge; a problem is reported as a ColonyFileError that
 * names the file, the field and what to do.
 */
import { createHmac, randomBytes } from "node:crypto";
import { chmodSync, existsSync, statSync, writeFileSync } from "node:fs";
import { isIPv6 } from "node:net";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import {
  type ColonyKeys,
  ConnectError,
  clientKeyOf,
  parseColonyKeys,
  readBoundedText,
  readColonyKeyFile,
} from "../client/index.ts";
import { limits } from "../core/index.ts";
import { makeDirectory } from "../storage/index.ts";
import { formatServerAddress } from "../transport/index.ts";

export class ColonyFileError extends Error {
  override name = "ColonyFileError";
}

const serverIdPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

const serverSchema = z.strictObject({
  id: z.string().regex(serverIdPattern, "a server id is 1-64 letters, digits, '.', '_' or '-'"),
  host: z.string().min(1).max(253),
  port: z.number().int().min(1).max(65535),
  adminPort: z.number().int().min(1).max(65535),
  rack: z.string().min(1).max(64),
  power: z.string().min(1).max(64),
});

const topologySchema = z
  .strictObject({
    colony: z.string().min(1).max(64).default("local"),
    cellSize: z.number().int().min(1).max(limits.membersMax).default(limits.cellSizeDefault),
    servers: z.array(serverSchema).min(1).max(10_000),
  })
  .superRefine((topology, context) => {
    const ids = new Set<string>();
    /** Every name an endpoint may go by, with the endpoint as the topology first wrote it. */
    const endpoints = new Map<string, string>();
    for (const [index, server] of topology.servers.entries()) {
      if (ids.has(server.id))
        context.addIssue({
          code: "custom",
          path: ["servers", index, "id"],
          message: `server id ${server.id} appears twice`,
        });
      ids.add(server.id);
      for (const port of [server.port, server.adminPort]) {
        const endpoint = formatServerAddress(server.host, port);
        const names = endpointNames(server.host, port);
        const earlier = names.map((name) => endpoints.get(name)).find((seen) => seen !== undefined);
        if (earlier !== undefined)
          context.addIssue({
            code: "custom",
            path: ["servers", index],
            message:
              earlier === endpoint
                ? `${endpoint} is used twice`
                : `${endpoint} is used twice: it is ${earlier} too (localhost is 127.0.0.1 or ::1)`,
          });
        for (const name of names) if (!endpoints.has(name)) endpoints.set(name, endpoint);
      }
    }
    if (topology.servers.length < topology.cellSize)
      context.addIssue({
        code: "custom",
        path: ["cellSize"],
        message: `cells of ${topology.cellSize} nodes need at least ${topology.cellSize} servers; the topology lists ${topology.servers.length}`,
      });
  });

/**
 * The names an endpoint may go by, for telling two entries that are one endpoint: host names
 * compare without case or a final dot, IPv6 addresses in their shortest form, and localhost is
 * also its loopback addresses (which one it resolves to depends on the host).
 */
export function endpointNames(host: string, port: number): string[] {
  let name = host.toLowerCase().replace(/\.$/, "");
  if (name.startsWith("[") && name.endsWith("]")) name = name.slice(1, -1);
  if (isIPv6(name)) name = new URL(`http://[${name}]/`).hostname.slice(1, -1);
  const hosts = name === "localhost" ? ["localhost", "127.0.0.1", "::1"] : [name];
  return hosts.map((h) => formatServerAddress(h, port));
}

export type Topology = z.infer<typeof topologySchema>;
export type ServerEntry = Topology["servers"][number];

/** A server process's configuration (`physalia server --config FILE`). */
const serverConfigSchema = z.strictObject({
  server: z.string().regex(serverIdPattern),
  /** Directory of this server's lmdb environment. */
  data: z.string().min(1),
  /** File holding the colony key in hex (PHYSALIA_COLONY_KEY overrides it). */
  keyFile: z.string().min(1).optional(),
  /** Evict a node from memory once its cell has been quiet this long (default 60). */
  residentIdleSeconds: z.number().int().min(1).max(86_400).optional(),
  topology: topologySchema,
});

export type ServerConfig = z.infer<typeof serverConfigSchema>;

/**
 * What client commands need to reach a colony. Exactly one key file: the colony key's (`keyFile`),
 * or for clients that should not hold it the client key's (`clientKeyFile`).
 */
const connectionSchema = z
  .strictObject({
    colony: z.string(),
    cellSize: z.number().int().min(1).max(limits.membersMax),
    keyFile: z.string().min(1).optional(),
    clientKeyFile: z.string().min(1).optional(),
    servers: z.array(serverSchema).min(1),
  })
  .refine((c) => (c.keyFile === undefined) !== (c.clientKeyFile === undefined), {
    message:
      "name exactly one key file: keyFile (the colony key) or clientKeyFile (a client key, from `physalia client-key`)",
  });

export type ConnectionFile = z.infer<typeof connectionSchema>;

function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((issue) => `${issue.path.length > 0 ? issue.path.join(".") : "(top)"}: ${issue.message}`)
    .join("; ");
}

/** Bytes of a server configuration or topology read at most: 16,384 servers take about 2 MiB. */
const structuredFileBytesMax = 16 * 1024 * 1024;

function readStructured(file: string, what: string): unknown {
  let text: string;
  try {
    text = readBoundedText(file, structuredFileBytesMax);
  } catch (error) {
    throw new ColonyFileError(`cannot read the ${what} ${file}: ${(error as Error).message}`);
  }
  try {
    return file.endsWith(".json") ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    throw new ColonyFileError(
      `the ${what} ${file} is not valid ${file.endsWith(".json") ? "JSON" : "YAML"}: ${(error as Error).message.split("\n")[0]}`,
    );
  }
}

function validated<T>(schema: z.ZodType<T>, value: unknown, file: string, what: string): T {
  const result = schema.safeParse(value);
  if (!result.success)
    throw new ColonyFileError(`the ${what} ${file} is invalid: ${describeIssues(result.error)}`);
  return result.data;
}

export function readTopology(file: string): Topology {
  return validated(topologySchema, readStructured(file, "topology file"), file, "topology file");
}

export function parseTopology(value: unknown, origin: string): Topology {
  return validated(topologySchema, value, origin, "topology");
}

export function readServerConfig(file: string): ServerConfig {
  const config = validated(
    serverConfigSchema,
    readStructured(file, "server configuration"),
    file,
    "server configuration",
  );
  if (!config.topology.servers.some((s) => s.id === config.server))
    throw new ColonyFileError(
      `the server configuration ${file} names server ${config.server}, which its topology does not list`,
    );
  const base = dirname(resolve(file));
  const relativeTo = (path: string) => (isAbsolute(path) ? path : join(base, path));
  return {
    ...config,
    data: relativeTo(config.data),
    ...(config.keyFile === undefined ? {} : { keyFile: relativeTo(config.keyFile) }),
  };
}

export function readConnectionFile(file: string): ConnectionFile {
  if (!existsSync(file))
    throw new ColonyFileError(
      `no colony connection file at ${file}: start a colony with \`physalia up\` in this directory, or name one with --colony FILE or PHYSALIA_COLONY`,
    );
  const connection = validated(
    connectionSchema,
    readStructured(file, "colony connection file"),
    file,
    "colony connection file",
  );
  const located = (named: string | undefined) =>
    named === undefined || isAbsolute(named) ? named : join(dirname(resolve(file)), named);
  const keyFile = located(connection.keyFile);
  const clientKeyFile = located(connection.clientKeyFile);
  return {
    ...connection,
    ...(keyFile === undefined ? {} : { keyFile }),
    ...(clientKeyFile === undefined ? {} : { clientKeyFile }),
  };
}

export function writeConnectionFile(file: string, connection: ConnectionFile): void {
  makeDirectory(dirname(file));
  writeFileSync(file, `${JSON.stringify(connection, null, 2)}\n`);
}

/**
 * The built-in topology of a local colony: `servers` servers on 127.0.0.1 over three racks and
 * three power domains (rack = index mod 3, power domain = index div 3 mod 3), so that one rack
 * and one power domain never share all their servers.
 */
export function defaultTopology(options: { servers?: number; basePort?: number } = {}): Topology {
  const count = options.servers ?? 9;
  const basePort = options.basePort ?? 7100;
  return parseTopology(
    {
      colony: "local",
      cellSize: Math.min(limits.cellSizeDefault, count),
      servers: Array.from({ length: count }, (_, i) => ({
        id: `s${i + 1}`,
        host: "127.0.0.1",
        port: basePort + 1 + i,
        adminPort: basePort + 101 + i,
        rack: `r${(i % 3) + 1}`,
        power: `p${(Math.floor(i / 3) % 3) + 1}`,
      })),
    },
    "the built-in topology",
  );
}

// ---------------------------------------------------------------- the colony key

export const colonyKeyEnv = "PHYSALIA_COLONY_KEY";

/** Whether the colony keys come from PHYSALIA_COLONY_KEY (set and not empty) rather than a key file. */
export function keysFromEnvironment(env: NodeJS.ProcessEnv): boolean {
  return (env[colonyKeyEnv] ?? "") !== "";
}

/**
 * The colony keys: PHYSALIA_COLONY_KEY if set, otherwise the key file. Either holds one key, or
 * two while the key is rotated (the first tags what is sent).
 */
export function loadColonyKeys(keyFile: string | undefined, env: NodeJS.ProcessEnv): ColonyKeys {
  const fromEnv = keysFromEnvironment(env);
  if (keyFile === undefined && !fromEnv)
    throw new ColonyFileError(`no colony key: set ${colonyKeyEnv} or name a key file in the configuration`);
  try {
    return fromEnv
      ? parseColonyKeys(env[colonyKeyEnv] as string, colonyKeyEnv)
      : readColonyKeyFile(keyFile as string);
  } catch (error) {
    if (error instanceof ConnectError) throw new ColonyFileError(error.message);
    throw error;
  }
}

/**
 * The client keys of colony keys (each one's clients' link key), in the same order: what a client
 * that should not hold the colony key is given instead (`physalia client-key`).
 */
export function clientKeysOf(keys: ColonyKeys): ColonyKeys {
  return {
    signing: clientKeyOf(keys.signing),
    alsoAccepted: keys.alsoAccepted.map((key) => clientKeyOf(key)),
  };
}

/** The key that tags what is sent: the colony key, or while it is rotated the first of the two. */
export function loadColonyKey(keyFile: string | undefined, env: NodeJS.ProcessEnv): Buffer {
  return loadColonyKeys(keyFile, env).signing;
}

/**
 * Why a key file is exposed to other users of the machine (its mode lets its group or others in),
 * or null. Whoever reads the key can talk to the colony as any server; a server warns of it.
 */
export function keyFileExposure(keyFile: string): string | null {
  let mode: number;
  try {
    mode = statSync(keyFile).mode & 0o777;
  } catch {
    return null;
  }
  if ((mode & 0o077) === 0) return null;
  return `the colony key file ${keyFile} can be read or changed by users other than its owner (mode ${mode.toString(8).padStart(3, "0")}): whoever reads it can talk to the colony as any server; make it readable by its owner only (chmod 600 ${keyFile})`;
}

/** Creates a key file with a fresh random key unless one exists; readable by its owner only. */
export function ensureKeyFile(keyFile: string): void {
  if (existsSync(keyFile)) return;
  makeDirectory(dirname(keyFile));
  writeFileSync(keyFile, `${randomBytes(32).toString("hex")}\n`, { mode: 0o600 });
  chmodSync(keyFile, 0o600);
}

/** The token colony tools present to a server's admin port to change anything. */
export function adminToken(colonyKey: Uint8Array): string {
  return createHmac("sha256", colonyKey).update("physalia admin v1").digest("hex");
}

/**
 * A short name of a colony key that tells keys apart without revealing them (a tag under the key
 * of a fixed text, which nothing else uses): shown by /status and `physalia status`, so that an
 * operator rotating the key can see which keys each server holds.
 */
export function keyFingerprint(colonyKey: Uint8Array): string {
  return createHmac("sha256", colonyKey).update("physalia key fingerprint v1").digest("hex").slice(0, 12);
}

/** The base URL of a server's admin port; an IPv6 host goes in brackets. */
export function adminUrl(server: { readonly host: string; readonly adminPort: number }): string {
  return `http://${formatServerAddress(server.host, server.adminPort)}`;
}
