/**
 * A client on real sockets: `connect()` opens a TCP endpoint under the colony key and returns a
 * PhysaliaClient that finds cells from the colony's topology. `close()` on the returned client
 * also closes its connections.
 */
import { randomBytes } from "node:crypto";
import { isIP } from "node:net";
import { dirname, isAbsolute, join, resolve } from "node:path";
import {
  type ClientRequest,
  type ClientResponse,
  decodeClientMessage,
  encodeClientMessage,
  show,
  writeClientMessage,
} from "../cell/index.ts";
import { limits, Prng, type ServerId } from "../core/index.ts";
import { type ServerPlace, TopologyDiscovery } from "../discovery/index.ts";
import {
  AddressBook,
  colonyKeyBytesMin,
  colonyKeysMax,
  colonyKeysProblem,
  formatServerAddress,
  type KeyKind,
  linkKey,
  MappedTransport,
  onServerLost,
  TcpTransport,
} from "../transport/index.ts";
import { PhysaliaClient as ClientOverPorts, type ResumedSession, resumedSessionsProblem } from "./client.ts";
import { NodeScheduler, ProcessHold } from "./node-runtime.ts";
import { readBoundedText } from "./read-bounded.ts";

/** Bytes of a connection file read at most: a colony of 16,384 servers needs about 2 MiB. */
const connectionFileBytesMax = 16 * 1024 * 1024;
/** Bytes of a key file read at most: two keys of any reasonable length. */
const keyFileBytesMax = 4096;

export interface ColonyServer extends ServerPlace {
  readonly host: string;
  readonly port: number;
}

export interface ConnectOptions {
  /** A colony connection file (written by `physalia up`), or the servers and key given directly. */
  readonly colony?: string;
  readonly servers?: readonly ColonyServer[];
  /**
   * The colony key (at least 32 bytes): it tags every request. Read from the connection file's
   * key file when omitted, with the other key that file may list while the key is rotated.
   */
  readonly colonyKey?: Uint8Array;
  /**
   * The client key instead of the colony key (`physalia client-key` prints it): it lets this
   * client reach the colony as a client and nothing more, where the colony key would also let it
   * pose as a server. Give programs that should not hold the colony key this one.
   */
  readonly clientKey?: Uint8Array;
  /**
   * While the colony key is rotated, the other key (a client key with `clientKey`): answers
   * tagged with it are accepted too (at most one; docs/OPERATIONS.md, "Rotating the colony key").
   * Given with `colonyKey` or `clientKey` only.
   */
  readonly alsoAcceptedKeys?: readonly Uint8Array[];
  /** Nodes per cell (default 7, or the connection file's). */
  readonly cellSize?: number;
  /** The rack the client runs in: nodes in it are preferred. */
  readonly rack?: string;
  /**
   * The shortest time an attempt waits for its answer, and the wait before any answer was timed
   * (default 400 ms). Slow answers lengthen the wait, up to 4 s (or this, if larger).
   */
  readonly requestTimeoutMs?: number;
  /**
   * The IP address the client's connections leave from, on a host with several (default: the
   * kernel's choice).
   */
  readonly localAddress?: string;
  /**
   * Sessions an earlier client left idle (`client.idleSessions()`), to go on with instead of
   * opening new ones in their cells: a program that starts often and writes a little each time
   * then does not fill its cells' session tables (each cell remembers at most 128 sessions for
   * 60 s). Never give one session to two clients that may run at once.
   */
  readonly sessions?: readonly ResumedSession[];
}

/** Every option connect() takes. */
const connectOptionNames: readonly string[] = [
  "colony",
  "servers",
  "colonyKey",
  "clientKey",
  "alsoAcceptedKeys",
  "cellSize",
  "rack",
  "requestTimeoutMs",
  "localAddress",
  "sessions",
] satisfies readonly (keyof ConnectOptions)[];

/** Raised when a colony cannot be reached or its files are unusable. */
export class ConnectError extends Error {
  override name = "ConnectError";
}

interface ConnectionFileContents {
  readonly cellSize: number;
  /** The key file: of the colony key, or with `keyKind` "client" of the client key. */
  readonly keyFile: string;
  readonly keyKind: KeyKind;
  readonly servers: readonly ColonyServer[];
}

function isServer(value: unknown): value is ColonyServer {
  const s = value as Partial<ColonyServer> | null;
  return (
    typeof s === "object" &&
    s !== null &&
    typeof s.id === "string" &&
    typeof s.host === "string" &&
    Number.isInteger(s.port) &&
    typeof s.rack === "string" &&
    typeof s.power === "string"
  );
}

/** Reads a connection file; its key file path is relative to the file itself. */
export function readColonyConnection(file: string): ConnectionFileContents {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readBoundedText(file, connectionFileBytesMax));
  } catch (error) {
    throw new ConnectError(`cannot read the colony connection file ${file}: ${(error as Error).message}`);
  }
  const c = parsed as (Partial<ConnectionFileContents> & { clientKeyFile?: unknown }) | null;
  if (
    typeof c !== "object" ||
    c === null ||
    !Array.isArray(c.servers) ||
    !c.servers.every(isServer) ||
    (typeof c.keyFile !== "string") === (typeof c.clientKeyFile !== "string") ||
    !Number.isInteger(c.cellSize)
  ) {
    throw new ConnectError(
      `the colony connection file ${file} lacks servers or cellSize, or does not name exactly one of keyFile and clientKeyFile`,
    );
  }
  const named = (typeof c.keyFile === "string" ? c.keyFile : c.clientKeyFile) as string;
  const keyFile = isAbsolute(named) ? named : join(dirname(resolve(file)), named);
  const keyKind: KeyKind = typeof c.keyFile === "string" ? "colony" : "client";
  return { cellSize: c.cellSize as number, keyFile, keyKind, servers: c.servers };
}

/**
 * An endpoint's colony keys: the one that tags what it sends, and while the key is rotated the
 * other one, also accepted on what it receives.
 */
export interface ColonyKeys {
  readonly signing: Buffer;
  readonly alsoAccepted: readonly Buffer[];
}

/**
 * The colony keys written in hex (a key file's text, or PHYSALIA_COLONY_KEY): one key of at least
 * 32 bytes, or while the key is rotated two, separated by a line break, spaces or a comma; the
 * first tags what is sent.
 */
export function parseColonyKeys(text: string, origin: string): ColonyKeys {
  const words = text.split(/[\s,]+/).filter((word) => word !== "");
  if (words.length === 0)
    throw new ConnectError(
      `${origin} holds no colony key; it should hold ${colonyKeyBytesMin * 2} or more hex digits (generate a key with \`openssl rand -hex 32\`)`,
    );
  if (words.length > colonyKeysMax)
    throw new ConnectError(
      `${origin} holds ${words.length} colony keys; it may hold ${colonyKeysMax} at most: the key in use and, while the key is rotated, the other one`,
    );
  const keys = words.map((word, i) => {
    const which = words.length === 1 ? "the colony key" : `colony key ${i + 1} of ${words.length}`;
    if (!/^[0-9a-fA-F]*$/.test(word) || word.length % 2 !== 0)
      throw new ConnectError(
        `${which} in ${origin} is not hexadecimal; it should be ${colonyKeyBytesMin * 2} or more hex digits`,
      );
    const key = Buffer.from(word, "hex");
    if (key.length < colonyKeyBytesMin)
      throw new ConnectError(
        `${which} in ${origin} has ${key.length} bytes; it needs at least ${colonyKeyBytesMin} (generate one with \`openssl rand -hex 32\`)`,
      );
    return key;
  });
  const [signing, ...alsoAccepted] = keys as [Buffer, ...Buffer[]];
  if (alsoAccepted.some((key) => key.equals(signing)))
    throw new ConnectError(
      `${origin} lists the same colony key twice; during a rotation it holds the old key and the new one`,
    );
  return { signing, alsoAccepted };
}

export function readColonyKeyFile(file: string): ColonyKeys {
  let text: string;
  try {
    text = readBoundedText(file, keyFileBytesMax);
  } catch (error) {
    throw new ConnectError(`cannot read the colony key file ${file}: ${(error as Error).message}`);
  }
  return parseColonyKeys(text, file);
}

/**
 * The client key of a colony key: what `connect({ clientKey })` takes, and `physalia client-key`
 * prints. With it a program reaches cells as a client, and cannot pose as a server.
 */
export function clientKeyOf(colonyKey: Uint8Array): Buffer {
  return linkKey(colonyKey, "clients");
}

/** The client of the package: the client over the ports, plus `connect()` on real sockets. */
export class PhysaliaClient extends ClientOverPorts {
  /**
   * A client on real sockets for the colony named by a connection file (`physalia up` writes
   * one) or by its servers and key. `close()` also closes its connections.
   */
  static connect(options: ConnectOptions): Promise<PhysaliaClient> {
    return connect(options);
  }
}

/**
 * What is wrong with options given directly (a JavaScript caller has no types to stop it), or
 * null. The connection file's own contents are checked by readColonyConnection.
 */
export function connectOptionsProblem(options: ConnectOptions): string | null {
  if (typeof options !== "object" || options === null) return "connect() takes an options object";
  // A misspelt option would otherwise be ignored, and the client run without what it meant.
  for (const name of Object.keys(options)) {
    if (!connectOptionNames.includes(name))
      return `unknown option ${JSON.stringify(name)}; the options are ${connectOptionNames.join(", ")}`;
  }
  if (options.colony !== undefined && typeof options.colony !== "string")
    return "colony must be the path of a connection file";
  if (options.servers !== undefined) {
    if (!Array.isArray(options.servers)) return "servers must be an array of { id, host, port, rack, power }";
    const ids = new Set<string>();
    for (const [i, server] of options.servers.entries()) {
      if (!isServer(server))
        return `servers[${i}] must be { id, host, port, rack, power } (strings, and a whole-number port), not ${show(server)}`;
      if (server.port < 1 || server.port > 65535)
        return `servers[${i}].port ${server.port} is not a TCP port (1-65535)`;
      if (ids.has(server.id)) return `servers[${i}].id ${JSON.stringify(server.id)} appears twice`;
      ids.add(server.id);
    }
  }
  if (options.colonyKey !== undefined && options.clientKey !== undefined)
    return "give colonyKey or clientKey, not both";
  const keyName = options.clientKey !== undefined ? "clientKey" : "colonyKey";
  const key = options[keyName];
  if (key !== undefined) {
    if (!(key instanceof Uint8Array))
      return `${keyName} must be a Uint8Array (or Buffer) of the key's bytes, not its hex text`;
    const problem = colonyKeysProblem([key]);
    if (problem !== null) return `${keyName}: ${problem}`;
  }
  const others = options.alsoAcceptedKeys;
  if (others !== undefined) {
    if (!Array.isArray(others) || others.some((other) => !(other instanceof Uint8Array)))
      return "alsoAcceptedKeys must be an array of Uint8Array (or Buffer) keys";
    if (key === undefined)
      return "alsoAcceptedKeys needs colonyKey or clientKey: the key that tags requests (a connection file's key file lists both)";
    const problem = colonyKeysProblem([key, ...others]);
    if (problem !== null) return `${keyName} and alsoAcceptedKeys: ${problem}`;
  }
  const cellSize = options.cellSize;
  if (cellSize !== undefined && (!Number.isInteger(cellSize) || cellSize < 1 || cellSize > limits.membersMax))
    return `cellSize must be a whole number from 1 to ${limits.membersMax}, not ${show(cellSize)}`;
  const timeout = options.requestTimeoutMs;
  if (timeout !== undefined && (typeof timeout !== "number" || !Number.isFinite(timeout) || timeout <= 0))
    return `requestTimeoutMs must be a positive number of milliseconds, not ${show(timeout)}`;
  for (const name of ["rack", "localAddress"] as const) {
    if (options[name] !== undefined && typeof options[name] !== "string") return `${name} must be a string`;
  }
  if (options.localAddress !== undefined && isIP(options.localAddress) === 0)
    return `localAddress must be an IP address of this host, not ${show(options.localAddress)}`;
  if (options.sessions !== undefined) return resumedSessionsProblem(options.sessions);
  return null;
}

export async function connect(options: ConnectOptions): Promise<PhysaliaClient> {
  let problem: string | null;
  try {
    problem = connectOptionsProblem(options);
  } catch (error) {
    // A getter or a proxy among the options that throws: still a problem of the options.
    problem = `the options could not be read (${error instanceof Error ? error.message : String(error)})`;
  }
  if (problem !== null) throw new ConnectError(`connect(): ${problem}`);
  const file = options.colony === undefined ? null : readColonyConnection(options.colony);
  const servers = options.servers ?? file?.servers;
  if (servers === undefined || servers.length === 0)
    throw new ConnectError("connect() needs a colony connection file (colony) or a list of servers");
  const given = options.colonyKey ?? options.clientKey;
  const keyKind: KeyKind | undefined =
    given !== undefined ? (options.clientKey !== undefined ? "client" : "colony") : file?.keyKind;
  const keys: ColonyKeys | undefined =
    given !== undefined
      ? {
          signing: Buffer.from(given),
          alsoAccepted: (options.alsoAcceptedKeys ?? []).map((k) => Buffer.from(k)),
        }
      : file === null
        ? undefined
        : readColonyKeyFile(file.keyFile);
  if (keys === undefined || keyKind === undefined)
    throw new ConnectError(
      "connect() needs the colony key (colonyKey) or a client key (clientKey) with a list of servers",
    );
  const cellSize = options.cellSize ?? file?.cellSize ?? limits.cellSizeDefault;
  if (servers.length < cellSize)
    throw new ConnectError(
      `cells of ${cellSize} nodes need at least ${cellSize} servers; ${servers.length} ${servers.length === 1 ? "is" : "are"} given`,
    );
  const tcp = new TcpTransport<ClientRequest | ClientResponse>({
    colonyKey: keys.signing,
    alsoAcceptedKeys: keys.alsoAccepted,
    keyKind,
    codec: { encode: encodeClientMessage, decode: decodeClientMessage, write: writeClientMessage },
    ...(options.localAddress !== undefined ? { localAddress: options.localAddress } : {}),
    // An idle client does not keep its program running; one with operations outstanding does (hold).
    holdsProcess: false,
  });
  await tcp.start();
  const book = new AddressBook(servers.map((s) => [s.id, formatServerAddress(s.host, s.port)] as const));
  const racks = new Map<ServerId, string>(servers.map((s) => [s.id, s.rack]));
  const rack = options.rack;
  const hold = new ProcessHold();
  const client = new PhysaliaClient({
    onBusy: (busy) => hold.hold(busy),
    address: tcp.address,
    transport: new MappedTransport(tcp, book),
    scheduler: new NodeScheduler(false),
    random: Prng.fromBytes(randomBytes(16)),
    resolver: new TopologyDiscovery(servers, cellSize),
    ...(rack === undefined ? {} : { distance: (id: ServerId) => (racks.get(id) === rack ? 0 : 1) }),
    ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs }),
    ...(options.sessions === undefined ? {} : { sessions: options.sessions }),
  });
  // A server's connection lost or refused: requests waiting on it go elsewhere now, not at
  // their timeout.
  onServerLost(tcp, book, (serverId) => client.serverLost(serverId));
  client.onClose(() => {
    hold.hold(false);
    return tcp.close();
  });
  return client;
}
