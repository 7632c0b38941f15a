/**
 * The client commands of `physalia`: cells (create, describe, list), items (put, get, add,
 * delete, txn), leases, and the colony's status. They find the colony through its connection
 * file (`--colony FILE`, else PHYSALIA_COLONY, else ./.physalia/colony.json, the file
 * `physalia up` writes), talk to cells through the client SDK and to servers' admin ports over
 * HTTP. docs/OPERATIONS.md describes every command, its output and its exit codes.
 *
 * Every problem ends as one line on stderr that names it and says what to do, and a documented
 * exit code (clientExitCodes); expected answers (a condition that did not hold, a lease held by
 * someone else, a missing item) are results with exit code 1, not errors.
 */
import { lookup } from "node:dns/promises";
import { request as httpRequest } from "node:http";
import { isIP } from "node:net";
import { join, resolve } from "node:path";
import { type Command, InvalidArgumentError } from "commander";
import {
  type Condition,
  type ItemRead,
  type LeaseResult,
  type Transaction,
  type TxnResult,
  type Value,
  validateLease,
  type Write,
} from "../cell/index.ts";
import {
  type CellHandle,
  CellStalledError,
  type ColonyKeys,
  ConnectError,
  connect,
  InvalidRequestError,
  OutcomeUnknownError,
  type PhysaliaClient,
  type ResumedSession,
  readColonyKeyFile,
  UnavailableError,
  UnknownCellError,
} from "../client/index.ts";
import { cellKeyProblem, compareUtf8, formatNodeId, limits, type NodeId } from "../core/index.ts";
import { placeCell } from "../discovery/index.ts";
import { formatServerAddress } from "../transport/index.ts";
import {
  adminToken,
  adminUrl,
  ColonyFileError,
  type ConnectionFile,
  clientKeysOf,
  keyFingerprint,
  keysFromEnvironment,
  loadColonyKeys,
  readConnectionFile,
  type ServerEntry,
} from "./colony.ts";
import { claimSessions } from "./session-file.ts";
import { readTransactionFile } from "./txn-file.ts";
import {
  conditionSyntax,
  formatCondition,
  formatValue,
  InputError,
  type JsonValue,
  parseCondition,
  parseInteger,
  parseValue,
  quoted,
  valueToJson,
} from "./values.ts";

/** Exit codes of the client commands (docs/OPERATIONS.md, "Exit codes"). */
export const clientExitCodes = {
  ok: 0,
  /** The answer is no: a condition did not hold, a lease is held (or not by this holder), `get` found no item. */
  conditionFailed: 1,
  /** Bad arguments: an option, a value, a condition or a transaction file. */
  usage: 2,
  /** No usable connection file or key, or no server of the colony answers. */
  colonyUnreachable: 3,
  /** The cell does not exist: none of its servers hosts it. */
  unknownCell: 4,
  /** The cell refused the request: a limit, a type mismatch, a full cell, a cell that exists otherwise. */
  invalidRequest: 5,
  /** A write was sent but not confirmed: it may or may not have applied. */
  outcomeUnknown: 6,
  /** The cell stopped at a log entry its servers cannot apply; upgrade them. */
  stalled: 7,
  /** The cell exists but did not answer: too few of its servers are up. Nothing was applied. */
  unavailable: 8,
  // 9 is `physalia server` and `physalia up` failing (src/cli/main.ts).
  /** A bug in physalia. */
  internal: 10,
} as const;

export type ClientExitCode = (typeof clientExitCodes)[keyof typeof clientExitCodes];

/** A command that could not do its job: the exit code, a short reason for scripts, a message for people. */
export class CommandFailure extends Error {
  override name = "CommandFailure";
  constructor(
    readonly exitCode: ClientExitCode,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export interface ClientCommandContext {
  /** Called once when a command is done, with its exit code. */
  readonly exit: (code: number) => void;
  /** Default: process.env (PHYSALIA_COLONY, PHYSALIA_COLONY_KEY). */
  readonly env?: NodeJS.ProcessEnv;
  /** Default: process.cwd(). */
  readonly cwd?: string;
  /** Where results and messages go. Default: process.stdout and process.stderr. */
  readonly stdout?: (text: string) => void;
  readonly stderr?: (text: string) => void;
  /** Resolves a host name of the colony file. Default: the system's name service. */
  readonly lookupHost?: (host: string) => Promise<unknown>;
}

export const colonyFileEnv = "PHYSALIA_COLONY";

/** The connection file a command uses: --colony, else PHYSALIA_COLONY, else ./.physalia/colony.json. */
export function colonyFilePath(flag: string | undefined, env: NodeJS.ProcessEnv, cwd: string): string {
  if (flag !== undefined) return resolve(cwd, flag);
  const fromEnv = env[colonyFileEnv];
  if (fromEnv !== undefined && fromEnv !== "") return resolve(cwd, fromEnv);
  return join(cwd, ".physalia", "colony.json");
}

// ---------------------------------------------------------------- limits

/** How long one admin HTTP request may take. */
const adminTimeoutMs = 2_000;
/**
 * How long a request creating a cell may take: a server answers it once the cell is durable, after
 * waiting up to 30 s for its checkpoint during a burst of creations (server-process.ts).
 */
const adminCreateTimeoutMs = 35_000;
/** Largest admin answer read (a /cells page of 10,000 keys of 128 bytes fits easily). */
const adminAnswerBytesMax = 16 * 1024 * 1024;
/** Admin requests in flight at once across servers. */
const adminConcurrencyMax = 32;
/** Pages of /cells one server is asked for while looking for a single key. */
const lookupPagesMax = 100;
/** Pages of /cells one server is asked for by `cell list` (10,000 keys each). */
const listPagesPerServerMax = 100_000;
/** How long `cell create` waits for the new cell to answer describe. */
export const createWaitMsDefault = 5_000;
/** Lease duration when --duration is not given. */
const leaseDurationMsDefault = 10_000;
/** Bytes of output gathered before a write to stdout, for long listings. */
const outputChunkBytes = 64 * 1024;

// ---------------------------------------------------------------- argument parsers

/** A file or directory named on the command line: an empty name would mean the current directory. */
export function pathArgument(text: string): string {
  if (text.trim() === "")
    throw new InvalidArgumentError("a file or directory name is needed here, not an empty one");
  return text;
}

function cellKeyArgument(text: string): string {
  const problem = cellKeyProblem(text);
  if (problem !== null) throw new InvalidArgumentError(`${problem} (got ${quoted(text)})`);
  return text;
}

/** `text` as one word of a shell command, quoted when it must be. */
export function shellWord(text: string): string {
  return /^[A-Za-z0-9._\-/:=@%+,]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`;
}

/**
 * A lease's name or holder from the command line, held to the cell's rules here, so a mistake is
 * a usage error and nothing is sent.
 */
function leaseTextArgument(what: "name" | "holder"): (text: string) => string {
  return (text) => {
    const problem = validateLease({
      op: "release",
      name: what === "name" ? text : "n",
      holder: what === "holder" ? text : "h",
    });
    if (problem !== null) throw new InvalidArgumentError(problem.message);
    return text;
  };
}

/** An item key from the command line: an empty one is a usage error (its length, the cell's limit). */
function itemArgument(text: string): string {
  if (text === "") throw new InvalidArgumentError("an item key is 1 to 256 bytes of text, not empty");
  return text;
}

function valueArgument(text: string): Value {
  try {
    return parseValue(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function integerArgument(what: string) {
  return (text: string): bigint => {
    try {
      return parseInteger(text, what);
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message);
    }
  };
}

function wholeNumber(what: string, min: number, max: number) {
  return (text: string): number => {
    const value = Number(text);
    if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max)
      throw new InvalidArgumentError(
        `${what} must be a whole number from ${min} to ${max}, got ${quoted(text)}`,
      );
    return value;
  };
}

/** Milliseconds in each unit a duration may be written in ("30000", "30000ms", "30s", "2m"). */
const durationUnitsMs: Readonly<Record<string, number>> = { "": 1, ms: 1, s: 1000, m: 60_000 };

function durationMs(what: string, min: number, max: number) {
  return (text: string): number => {
    const match = /^([0-9]+)(ms|s|m)?$/.exec(text);
    const value =
      match === null ? Number.NaN : Number(match[1]) * (durationUnitsMs[match[2] ?? ""] as number);
    if (!Number.isSafeInteger(value) || value < min || value > max)
      throw new InvalidArgumentError(
        `${what} must be a duration from ${min} to ${max} ms: a whole number of milliseconds, or of ms, s or m (500ms, 30s, 2m), got ${quoted(text)}`,
      );
    return value;
  };
}

function collectCondition(text: string, previous: readonly Condition[]): Condition[] {
  try {
    return [...previous, parseCondition(text)];
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

// ---------------------------------------------------------------- running a command

interface CommonOptions {
  readonly json?: boolean;
  readonly colony?: string;
}

interface Io {
  readonly json: boolean;
  readonly env: NodeJS.ProcessEnv;
  readonly colonyFile: string;
  /** One line of result on stdout. */
  out(line: string): void;
  /** Raw text on stdout. */
  write(text: string): void;
  /** One line of message on stderr, prefixed "physalia: ". */
  say(message: string): void;
  readonly lookupHost: (host: string) => Promise<unknown>;
}

function makeIo(context: ClientCommandContext, options: CommonOptions): Io {
  const env = context.env ?? process.env;
  const stdout = context.stdout ?? ((text: string) => process.stdout.write(text));
  const stderr = context.stderr ?? ((text: string) => process.stderr.write(text));
  return {
    json: options.json === true,
    env,
    colonyFile: colonyFilePath(options.colony, env, context.cwd ?? process.cwd()),
    out: (line) => stdout(`${line}\n`),
    write: stdout,
    say: (message) => stderr(`physalia: ${oneLine(message)}\n`),
    lookupHost: context.lookupHost ?? lookup,
  };
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, "; ");
}

/** A problem as a CommandFailure: everything a command can throw ends here. */
export function asFailure(error: unknown): CommandFailure {
  if (error instanceof CommandFailure) return error;
  if (error instanceof InputError) return new CommandFailure(clientExitCodes.usage, "usage", error.message);
  if (error instanceof ColonyFileError || error instanceof ConnectError)
    return new CommandFailure(clientExitCodes.colonyUnreachable, "colony_unreachable", error.message);
  if (error instanceof InvalidRequestError)
    return new CommandFailure(
      clientExitCodes.invalidRequest,
      "invalid_request",
      `the request was refused: ${error.message}`,
    );
  if (error instanceof CellStalledError)
    return new CommandFailure(clientExitCodes.stalled, "stalled", error.message);
  if (error instanceof UnknownCellError)
    return new CommandFailure(
      clientExitCodes.unknownCell,
      "unknown_cell",
      `cell ${quoted(error.cellKey)} does not exist: a majority of its servers do not host it; create it with \`physalia cell create ${shellWord(error.cellKey)}\``,
    );
  if (error instanceof OutcomeUnknownError)
    return new CommandFailure(
      clientExitCodes.outcomeUnknown,
      "outcome_unknown",
      `${error.message}; read the cell to see whether it applied before you retry`,
    );
  if (error instanceof UnavailableError)
    return new CommandFailure(
      clientExitCodes.unavailable,
      "unavailable",
      `${error.message}; check the servers with \`physalia status\``,
    );
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return new CommandFailure(
    clientExitCodes.internal,
    "internal",
    `internal error (a bug in physalia; please report it with the command you ran): ${message}`,
  );
}

/**
 * Runs one command: its body returns the exit code, anything it throws is reported. A ref'd
 * timer keeps the process alive meanwhile: the client's own timers do not (a client must not
 * hold a program open), and with every server down nothing else would.
 */
async function run(
  context: ClientCommandContext,
  options: CommonOptions,
  body: (io: Io) => Promise<number>,
): Promise<void> {
  const io = makeIo(context, options);
  const keepAlive = setInterval(() => {}, 60_000);
  let code: number;
  try {
    code = await body(io);
  } catch (error) {
    const failure = asFailure(error);
    if (io.json) {
      const stderr = context.stderr ?? ((text: string) => process.stderr.write(text));
      stderr(
        `${JSON.stringify({ error: { reason: failure.reason, exitCode: failure.exitCode, message: oneLine(failure.message) } })}\n`,
      );
    } else {
      io.say(failure.message);
    }
    code = failure.exitCode;
  } finally {
    clearInterval(keepAlive);
  }
  context.exit(code);
}

// ---------------------------------------------------------------- the colony

interface Colony {
  readonly file: string;
  readonly connection: ConnectionFile;
  readonly servers: readonly ServerEntry[];
  readonly env: NodeJS.ProcessEnv;
  readonly lookupHost: (host: string) => Promise<unknown>;
}

function openColony(
  file: string,
  env: NodeJS.ProcessEnv,
  lookupHost: (host: string) => Promise<unknown> = lookup,
): Colony {
  const connection = readConnectionFile(file);
  if (connection.servers.length < connection.cellSize)
    throw new ColonyFileError(
      `the colony connection file ${file} lists ${connection.servers.length} servers, but its cells have ${connection.cellSize} nodes; fix its servers or cellSize`,
    );
  return { file, connection, servers: connection.servers, env, lookupHost };
}

/** The colony keys, for what needs them beyond a client's requests (the admin token, `client-key`). */
function colonyKeys(colony: Colony): ColonyKeys {
  if (colony.connection.keyFile === undefined && !keysFromEnvironment(colony.env))
    throw new ColonyFileError(
      `this command needs the colony key, and ${colony.file} names only a client key (clientKeyFile), which reaches cells but not the servers' admin ports: run it with the colony's own connection file, or with PHYSALIA_COLONY_KEY set`,
    );
  return loadColonyKeys(colony.connection.keyFile, colony.env);
}

/**
 * The keys a client's requests are tagged with: the colony key (PHYSALIA_COLONY_KEY, or the
 * connection file's keyFile), else the client key its clientKeyFile names.
 */
function requestKeys(colony: Colony): { readonly keys: ColonyKeys; readonly client: boolean } {
  const clientKeyFile = colony.connection.clientKeyFile;
  if (clientKeyFile === undefined || keysFromEnvironment(colony.env))
    return { keys: colonyKeys(colony), client: false };
  try {
    return { keys: readColonyKeyFile(clientKeyFile), client: true };
  } catch (error) {
    if (error instanceof ConnectError)
      throw new ColonyFileError(error.message.replaceAll("colony key", "client key"));
    throw error;
  }
}

async function connectClient(
  colony: Colony,
  cellSize = colony.connection.cellSize,
  sessions: readonly ResumedSession[] = [],
): Promise<PhysaliaClient> {
  const { keys, client } = requestKeys(colony);
  await refuseUnresolvableColony(colony);
  try {
    return await connect({
      servers: colony.servers,
      ...(client ? { clientKey: keys.signing } : { colonyKey: keys.signing }),
      alsoAcceptedKeys: keys.alsoAccepted,
      cellSize,
      sessions,
    });
  } catch (error) {
    if (error instanceof ConnectError) throw error;
    throw new ConnectError(`cannot open a client connection: ${(error as Error).message}`);
  }
}

/** How long a command waits for the name service about one host before it goes ahead anyway. */
const hostLookupMsMax = 3000;

async function refuseUnresolvableColony(colony: Colony): Promise<void> {
  const problem = await hostsProblem(
    colony.servers.map((s) => s.host),
    colony.lookupHost,
  );
  if (problem !== null)
    throw new CommandFailure(
      clientExitCodes.colonyUnreachable,
      "colony_unreachable",
      `no server address in the colony file ${colony.file} resolves: ${problem}; fix the hosts in the file or this machine's name service`,
    );
}

/**
 * Null when some of `hosts` resolves, is an IP address, or the name service is too slow to say;
 * else the hosts with what the name service said. A command checks this before it connects, so a
 * colony file whose addresses all fail to resolve is refused at once, naming them: a client would
 * otherwise dial them until its request times out and then only say that nothing answers. A
 * colony some of whose addresses resolve goes ahead, since those servers may be enough.
 */
export async function hostsProblem(
  hosts: readonly string[],
  lookupHost: (host: string) => Promise<unknown> = lookup,
  waitMs = hostLookupMsMax,
): Promise<string | null> {
  const distinct = [...new Set(hosts)];
  if (distinct.length === 0 || distinct.some((host) => isIP(host) !== 0)) return null;
  const lookups = await mapBounded(distinct, adminConcurrencyMax, (host) =>
    settle(withDeadline(lookupHost(host), waitMs)),
  );
  if (lookups.some((l) => l.ok)) return null;
  const shown = distinct.slice(0, 3).map((host, i) => {
    const l = lookups[i];
    return `${host} (${l?.ok === false ? l.problem : "no answer"})`;
  });
  const more = distinct.length > shown.length ? ` and ${distinct.length - shown.length} more` : "";
  return `${shown.join(", ")}${more}`;
}

function serverNamed(colony: Colony, serverId: string): ServerEntry {
  const server = colony.servers.find((s) => s.id === serverId);
  if (server === undefined) throw new Error(`placement chose server ${serverId}, which the colony lacks`);
  return server;
}

/** The servers a cell of the colony's size is placed on, as clients find it. */
function placedServers(colony: Colony, cellKey: string, size = colony.connection.cellSize): ServerEntry[] {
  return placeCell(cellKey, colony.servers, size).map((id) => serverNamed(colony, id));
}

function names(servers: readonly { id: string }[]): string {
  return servers.map((s) => s.id).join(", ");
}

function majorityOf(count: number): number {
  return Math.floor(count / 2) + 1;
}

// ---------------------------------------------------------------- admin HTTP

interface AdminAnswer {
  readonly status: number;
  readonly body: unknown;
}

/** One JSON request to a server's admin port; rejects when it does not answer in time. */
function adminCall(
  server: ServerEntry,
  method: "GET" | "POST",
  path: string,
  options: { readonly token?: string; readonly body?: unknown; readonly timeoutMs?: number } = {},
): Promise<AdminAnswer> {
  const timeoutMs = options.timeoutMs ?? adminTimeoutMs;
  return new Promise((resolvePromise, reject) => {
    const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    const headers: Record<string, string | number> = { accept: "application/json" };
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    if (payload !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = payload.length;
    }
    const request = httpRequest(
      { host: server.host, port: server.adminPort, method, path, headers, agent: false },
      (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > adminAnswerBytesMax) {
            request.destroy(new Error(`its answer is over ${adminAnswerBytesMax} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        response.on("error", reject);
        response.on("end", () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString("utf8");
          try {
            resolvePromise({ status: response.statusCode ?? 0, body: JSON.parse(text) });
          } catch {
            reject(
              new Error(`${method} ${path} answered ${response.statusCode} with something other than JSON`),
            );
          }
        });
      },
    );
    const timer = setTimeout(() => request.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    request.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    request.end(payload);
  });
}

type Settled<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly problem: string };

function settle<T>(promise: Promise<T>): Promise<Settled<T>> {
  return promise.then(
    (value) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, problem: error instanceof Error ? error.message : String(error) }),
  );
}

/** `fn` over every item, at most `concurrency` at once, results in order. `fn` must not reject. */
async function mapBounded<T, R>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return results;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

interface CellsPage {
  readonly cells: readonly string[];
  readonly more: boolean;
}

async function cellsPage(server: ServerEntry, after: string, timeoutMs = adminTimeoutMs): Promise<CellsPage> {
  const answer = await adminCall(server, "GET", `/cells?after=${encodeURIComponent(after)}`, { timeoutMs });
  const body = answer.body;
  if (
    answer.status !== 200 ||
    !isRecord(body) ||
    !Array.isArray(body.cells) ||
    !body.cells.every((c) => typeof c === "string") ||
    typeof body.more !== "boolean"
  )
    throw new Error(`GET /cells answered ${answer.status} with an unexpected body`);
  return { cells: body.cells as string[], more: body.more };
}

/**
 * A valid cell key (or "", the start) below `key` in the servers' order (UTF-8 bytes), with few
 * keys between them, to start a /cells page just before `key`: the key with its last character
 * lowered by one, then U+10FFFF (the last code point) appended if the key stays within the
 * length limit. Only keys that begin with the lowered key fall between, and paging skips over
 * them. Without a lower character, the key without its last character.
 */
export function justBefore(key: string): string {
  const chars = Array.from(key);
  const last = (chars.pop() as string).codePointAt(0) as number;
  const prefix = chars.join("");
  // Code points below the last, skipping the surrogates (no character of their own).
  const lowered = last === 0xe000 ? 0xd7ff : last - 1;
  if (lowered < 0) return prefix;
  const below = prefix + String.fromCodePoint(lowered);
  if (cellKeyProblem(below) !== null) return prefix;
  const skipping = `${below}\u{10ffff}`;
  return cellKeyProblem(skipping) === null ? skipping : below;
}

/** Whether the server hosts a node of the cell, from its /cells listing. */
async function hostsCell(server: ServerEntry, cellKey: string, timeoutMs = adminTimeoutMs): Promise<boolean> {
  let after = justBefore(cellKey);
  for (let page = 0; page < lookupPagesMax; page++) {
    const { cells, more } = await cellsPage(server, after, timeoutMs);
    if (cells.includes(cellKey)) return true;
    const last = cells.at(-1);
    if (!more || last === undefined || compareUtf8(last, cellKey) >= 0) return false;
    after = last;
  }
  throw new Error(`cell ${cellKey} not found within ${lookupPagesMax} pages of /cells`);
}

/** Null when some server answers its admin port; else what the first one's probe met. */
async function noServerAnswers(servers: readonly ServerEntry[]): Promise<string | null> {
  const answers = await mapBounded(servers, adminConcurrencyMax, (s) =>
    settle(adminCall(s, "GET", "/healthz")),
  );
  if (answers.some((a) => a.ok)) return null;
  const first = answers.find((a) => !a.ok);
  return first?.ok === false ? `${servers[answers.indexOf(first)]?.id}: ${first.problem}` : "no servers";
}

// ---------------------------------------------------------------- cell operations and their failures

/**
 * Explains a cell that did not answer, by asking its servers' admin ports whether they host it:
 * a cell none of them hosts does not exist (and so nothing was applied); a colony where no
 * server answers is unreachable; otherwise the cell is unavailable or, for a write, its outcome
 * is unknown.
 */
async function explainCellFailure(error: unknown, colony: Colony, cellKey: string): Promise<unknown> {
  if (!(error instanceof UnavailableError || error instanceof OutcomeUnknownError)) return error;
  const servers = placedServers(colony, cellKey);
  const probes = await Promise.all(servers.map((s) => settle(hostsCell(s, cellKey))));
  const answered = servers.filter((_, i) => probes[i]?.ok === true);
  const silent = servers.filter((_, i) => probes[i]?.ok !== true);
  const hosting = servers.filter((_, i) => {
    const probe = probes[i];
    return probe?.ok === true && probe.value;
  });
  const write = error instanceof OutcomeUnknownError;
  if (hosting.length === 0 && answered.length >= majorityOf(servers.length))
    return new CommandFailure(
      clientExitCodes.unknownCell,
      "unknown_cell",
      `cell ${quoted(cellKey)} does not exist: none of its servers (${names(answered)}) hosts it` +
        `${write ? ", so nothing was written" : ""}; create it with \`physalia cell create ${shellWord(cellKey)}\``,
    );
  const unreachable = answered.length === 0 ? await noServerAnswers(colony.servers) : null;
  if (unreachable !== null)
    return new CommandFailure(
      clientExitCodes.colonyUnreachable,
      "colony_unreachable",
      `no server of the colony in ${colony.file} answers (${unreachable}); start it (\`physalia up\`) or check the file` +
        (write
          ? "; the write was sent but not confirmed: if the colony went down during it, it may have applied"
          : ""),
    );
  const down = silent.length > 0 ? ` (its servers ${names(silent)} do not answer)` : "";
  if (write)
    return new CommandFailure(
      clientExitCodes.outcomeUnknown,
      "outcome_unknown",
      `${error.message}${down}; read the cell to see whether the write applied before you retry`,
    );
  const need =
    answered.length < majorityOf(servers.length)
      ? `; the cell needs ${majorityOf(servers.length)} of its ${servers.length} servers to answer: check them with \`physalia status\` (a server may be down, or up but too busy to answer in time), then retry`
      : `; check \`physalia status\` and \`physalia cell describe ${shellWord(cellKey)}\``;
  return new CommandFailure(clientExitCodes.unavailable, "unavailable", `${error.message}${down}${need}`);
}

/**
 * Runs `body` on the cell with a fresh client, which goes on with the sessions an earlier command
 * left (session-file.ts); failures come back explained.
 */
async function withCell<T>(io: Io, cellKey: string, body: (cell: CellHandle) => Promise<T>): Promise<T> {
  const colony = openColony(io.colonyFile, io.env, io.lookupHost);
  const claim = claimSessions(colony.file, io.env);
  let client: PhysaliaClient;
  try {
    client = await connectClient(colony, colony.connection.cellSize, claim?.sessionsOf(cellKey) ?? []);
  } catch (error) {
    claim?.release(cellKey, claim.sessionsOf(cellKey));
    throw error;
  }
  try {
    return await body(client.cell(cellKey));
  } catch (error) {
    throw await explainCellFailure(error, colony, cellKey);
  } finally {
    await client.close();
    claim?.release(cellKey, client.idleSessions([cellKey]));
  }
}

interface JsonRead {
  readonly item: string;
  readonly value: JsonValue | null;
}

function readsToJson(reads: readonly ItemRead[] | null): JsonRead[] {
  return (reads ?? []).map((r) => ({ item: r.item, value: r.value === null ? null : valueToJson(r.value) }));
}

function formatRead(read: ItemRead): string {
  return read.value === null ? `${read.item} is missing` : `${read.item} = ${formatValue(read.value)}`;
}

/** The distinct items the conditions name, read alongside so a failure can say what they hold. */
function conditionItems(conditions: readonly Condition[]): string[] {
  return [...new Set(conditions.map((c) => c.item))];
}

function rejection(cellKey: string, result: Extract<TxnResult, { status: "rejected" }>): CommandFailure {
  const item = result.item === null ? "" : ` (item ${quoted(result.item)})`;
  return new CommandFailure(
    clientExitCodes.invalidRequest,
    result.reason,
    `cell ${quoted(cellKey)} refused the transaction${item}: ${result.reason.replace(/_/g, " ")}: ${result.detail}`,
  );
}

/**
 * Reports a transaction that did not commit: a failed condition is a result (exit 1), a
 * rejection an error. Returns the exit code, or null when it committed.
 */
/** One write under the `--if` conditions; prints "ok" (or its JSON) when it committed. */
async function conditionalWrite(
  io: Io,
  key: string,
  write: Write,
  conditions: readonly Condition[],
): Promise<number> {
  const txn: Transaction = { conditions, reads: conditionItems(conditions), writes: [write] };
  const result = await withCell(io, key, (c) => c.transact(txn));
  const failed = reportUncommitted(io, key, conditions, result, { item: write.item });
  if (failed !== null) return failed;
  io.out(io.json ? JSON.stringify({ cell: key, item: write.item, status: "committed" }) : "ok");
  return clientExitCodes.ok;
}

function reportUncommitted(
  io: Io,
  cellKey: string,
  conditions: readonly Condition[],
  result: TxnResult,
  extra: Record<string, unknown> = {},
): number | null {
  if (result.status === "committed") return null;
  if (result.status === "rejected") throw rejection(cellKey, result);
  const condition = conditions[result.condition];
  const text = condition === undefined ? `#${result.condition + 1}` : formatCondition(condition);
  if (io.json) {
    io.out(
      JSON.stringify({
        cell: cellKey,
        ...extra,
        status: "condition_failed",
        condition: { index: result.condition, text },
        reads: readsToJson(result.reads),
      }),
    );
  } else {
    const current = (result.reads ?? []).find((r) => r.item === condition?.item);
    const now = current === undefined ? "" : ` (${formatRead(current)})`;
    io.say(`not done: the condition ${text} did not hold${now}`);
  }
  return clientExitCodes.conditionFailed;
}

// ---------------------------------------------------------------- cell create

export interface CreatedCell {
  readonly cellKey: string;
  readonly members: readonly NodeId[];
  /** False when the cell existed already (with these members). */
  readonly created: boolean;
  /** Servers this call created a node on: every member that took a new cell, or those --add-missing filled. */
  readonly added: readonly string[];
  /** Members whose server does not host the cell: it runs without them while a majority does. */
  readonly missed: readonly { readonly serverId: string; readonly problem: string }[];
  /** The cell as one of its nodes described it; null if none answered within the wait. */
  readonly status: CellStatusView | null;
}

type CellStatusView = Awaited<ReturnType<CellHandle["describe"]>>;

const timedOut = Symbol("timed out");

/** The promise's outcome, or `timedOut` after `ms`; an answer after that is dropped. */
function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T | typeof timedOut> {
  promise.catch(() => {});
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<typeof timedOut>((done) => {
    timer = setTimeout(() => done(timedOut), Math.max(0, ms));
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function sameMembers(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  const key = (m: NodeId) => formatNodeId(m);
  const left = a.map(key).sort();
  const right = b.map(key).sort();
  return left.length === right.length && left.every((k, i) => k === right[i]);
}

/**
 * Creates a cell: places it on `size` servers (default: the colony's cell size) by the same
 * rule clients use to find it, asks each of them over its admin port to host a node
 * (incarnations 1..size), then waits up to `waitMs` until one of its nodes describes it.
 *
 * For a cell that exists already it creates nothing: a node created afresh on a server that
 * lost its data, under the incarnation it had, would forget its promises and votes, which can
 * let the cell choose two values for one slot. `addMissing` adds the cell to the members that
 * do not host it, for servers that were down when it was created and so never held it. A cell
 * that exists with other members is refused. Throws CommandFailure.
 */
export async function createCell(
  colonyFile: string,
  cellKey: string,
  options: {
    readonly size?: number;
    readonly addMissing?: boolean;
    readonly env?: NodeJS.ProcessEnv;
    readonly waitMs?: number;
  } = {},
): Promise<CreatedCell> {
  const keyProblem = cellKeyProblem(cellKey);
  if (keyProblem !== null) throw new InputError(`${keyProblem} (got ${quoted(cellKey)})`);
  const colony = openColony(colonyFile, options.env ?? process.env);
  const size = options.size ?? colony.connection.cellSize;
  const sizeMax = Math.min(limits.membersMax, colony.servers.length);
  if (!Number.isInteger(size) || size < 1 || size > sizeMax)
    throw new InputError(
      `a cell of ${size} nodes is not possible here: the size is from 1 to ${sizeMax} (the colony has ${colony.servers.length} servers)`,
    );
  const servers = placedServers(colony, cellKey, size);
  const members: NodeId[] = servers.map((s, i) => ({ serverId: s.id, incarnation: i + 1 }));
  const token = adminToken(colonyKeys(colony).signing);
  const waitMs = options.waitMs ?? createWaitMsDefault;
  const majority = majorityOf(servers.length);

  // A server lists its cells once its storage has caught up with its journal, which takes a
  // while on a busy disk just after a burst of creations: as long as a creation may take.
  const probes = await Promise.all(servers.map((s) => settle(hostsCell(s, cellKey, adminCreateTimeoutMs))));
  const silent = servers.filter((_, i) => probes[i]?.ok !== true);
  const hosting = servers.filter((_, i) => {
    const probe = probes[i];
    return probe?.ok === true && probe.value;
  });
  const hostingIds = new Set(hosting.map((s) => s.id));
  const firstProblem = probes.find((p) => !p.ok);
  if (silent.length === servers.length)
    throw new CommandFailure(
      clientExitCodes.colonyUnreachable,
      "colony_unreachable",
      `none of the servers chosen for cell ${quoted(cellKey)} (${names(servers)}) answers on its admin port ` +
        `(${firstProblem?.ok === false ? firstProblem.problem : "no answer"}); start the colony (\`physalia up\`) or check ${colony.file}`,
    );
  if (servers.length - silent.length < majority)
    throw new CommandFailure(
      clientExitCodes.unavailable,
      "unavailable",
      `only ${servers.length - silent.length} of the ${servers.length} servers chosen for cell ${quoted(cellKey)} answer ` +
        `(down: ${names(silent)}); a cell needs ${majority} of them: start them and retry`,
    );

  const client = await connectClient(colony, size);
  try {
    let existing: CellStatusView | null = null;
    if (hosting.length > 0) {
      const answer = await settle(withDeadline(client.cell(cellKey).describe(), waitMs));
      if (!answer.ok || answer.value === timedOut)
        throw new CommandFailure(
          clientExitCodes.unavailable,
          "unavailable",
          `cell ${quoted(cellKey)} already exists on ${names(hosting)}, but none of its nodes answered within ${waitMs} ms; check \`physalia status\``,
        );
      existing = answer.value;
      if (!sameMembers(existing.members, members))
        throw new CommandFailure(
          clientExitCodes.invalidRequest,
          "cell_exists",
          `cell ${quoted(cellKey)} already exists with the members ${existing.members.map(formatNodeId).join(" ")}; ` +
            `creating it would need ${members.map(formatNodeId).join(" ")} (was --size different?), and \`cell create\` never changes a cell's members`,
        );
      if (options.addMissing !== true) {
        const missed = servers
          .filter((s) => !hostingIds.has(s.id))
          .map((s) => ({
            serverId: s.id,
            problem: silent.includes(s) ? "does not answer" : "does not host the cell",
          }));
        return { cellKey, members, created: false, added: [], missed, status: existing };
      }
    }

    const targets = servers.filter((s) => !hostingIds.has(s.id));
    const posts = await Promise.all(
      targets.map((s) =>
        settle(
          adminCall(s, "POST", "/cells", {
            token,
            body: { cellKey, members },
            timeoutMs: adminCreateTimeoutMs,
          }),
        ),
      ),
    );
    const missed: { serverId: string; problem: string }[] = [];
    for (const [i, post] of posts.entries()) {
      const server = targets[i] as ServerEntry;
      if (!post.ok) {
        missed.push({ serverId: server.id, problem: post.problem });
        continue;
      }
      const { status, body } = post.value;
      const said = isRecord(body) && typeof body.error === "string" ? body.error : `answered ${status}`;
      if (status === 401)
        throw new CommandFailure(
          clientExitCodes.colonyUnreachable,
          "wrong_key",
          `server ${server.id} refused the admin token: the colony key (${colony.connection.keyFile} or PHYSALIA_COLONY_KEY) is not the one this colony runs with`,
        );
      if (status === 400)
        throw new CommandFailure(
          clientExitCodes.invalidRequest,
          "invalid_request",
          `server ${server.id} refused to create cell ${quoted(cellKey)}: ${said}`,
        );
      if (status !== 200) missed.push({ serverId: server.id, problem: said });
    }
    const took = servers.length - missed.length;
    if (took < majority) {
      const missing = missed.map((m) => `${m.serverId} (${m.problem})`).join(", ");
      throw new CommandFailure(
        clientExitCodes.unavailable,
        "unavailable",
        `cell ${quoted(cellKey)} is on only ${took} of its ${servers.length} servers and cannot work without ${majority}; ` +
          `these did not take it: ${missing}. Start them, then run \`physalia cell create ${shellWord(cellKey)} --add-missing\``,
      );
    }

    // A describe answers from any node; the cell elects a leader when a request needs one.
    const deadlineMs = Date.now() + waitMs;
    let status: CellStatusView | null = null;
    while (status === null && Date.now() < deadlineMs) {
      const answer = await settle(withDeadline(client.cell(cellKey).describe(), deadlineMs - Date.now()));
      if (answer.ok && answer.value !== timedOut) status = answer.value;
      else await new Promise((done) => setTimeout(done, 50));
    }
    const missedIds = new Set(missed.map((m) => m.serverId));
    const added = targets.filter((t) => !missedIds.has(t.id)).map((t) => t.id);
    return { cellKey, members, created: existing === null, added, missed, status };
  } finally {
    await client.close();
  }
}

// ---------------------------------------------------------------- output helpers

function nodeJson(node: NodeId): { serverId: string; incarnation: number } {
  return { serverId: node.serverId, incarnation: node.incarnation };
}

function statusJson(status: CellStatusView) {
  return {
    members: status.members.map(nodeJson),
    leader: status.leader === null ? null : nodeJson(status.leader),
    epoch: status.epoch,
    applied: status.applied,
    committed: status.committed,
    stalled: status.stalled,
    answeredBy: { node: nodeJson(status.node), role: status.role },
  };
}

function isoTime(ms: number): string | null {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

function formatDuration(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, "0")}s`;
  if (seconds < 86_400)
    return `${Math.floor(seconds / 3600)}h${String(Math.floor(seconds / 60) % 60).padStart(2, "0")}m`;
  return `${Math.floor(seconds / 86_400)}d${String(Math.floor(seconds / 3600) % 24).padStart(2, "0")}h`;
}

function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  }
  return rows.map((row) =>
    row
      .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd(),
  );
}

// ---------------------------------------------------------------- commands

function withCommonOptions(command: Command): Command {
  return command
    .option("--json", "print the result as one line of JSON (see docs/OPERATIONS.md)")
    .option(
      "--colony <file>",
      `the colony's connection file (default: $${colonyFileEnv}, else ./.physalia/colony.json)`,
      pathArgument,
    );
}

interface WriteOptions extends CommonOptions {
  readonly if: readonly Condition[];
}

const ifHelp = `only if the condition holds (repeat for several; all must hold): ${conditionSyntax}`;

/**
 * Adds the client commands to `program`: `cell create|describe|list`, `put`, `get`, `add`,
 * `delete`, `txn`, `lease acquire|renew|release` and `status`. Each command's action calls
 * `context.exit` once with its exit code (clientExitCodes). Actions are asynchronous: run the
 * program with `parseAsync`. Bad arguments are reported by commander through the program's
 * exit override, which should exit with clientExitCodes.usage.
 */
export function registerClientCommands(program: Command, context: ClientCommandContext): void {
  // ------------------------------------------------------------ cell
  const cell = program.command("cell").description("create, describe and list cells");

  withCommonOptions(
    cell
      .command("create")
      .description("create a cell on the servers its key is placed on, and wait until it answers")
      .argument("<key>", "the cell's key", cellKeyArgument)
      .option(
        "--size <n>",
        "nodes in the cell (default: the colony's cell size; clients find other sizes more slowly)",
        wholeNumber("--size", 1, limits.membersMax),
      )
      .option(
        "--add-missing",
        "for a cell that exists: add it to members that were down when it was created (never to a server that lost its data)",
      ),
  ).action((key: string, options: CommonOptions & { size?: number; addMissing?: boolean }) =>
    run(context, options, async (io) => {
      const created = await createCell(io.colonyFile, key, {
        env: io.env,
        ...(options.size === undefined ? {} : { size: options.size }),
        ...(options.addMissing === true ? { addMissing: true } : {}),
      });
      if (io.json) {
        io.out(
          JSON.stringify({
            cell: key,
            created: created.created,
            added: created.added,
            members: created.members.map(nodeJson),
            missed: created.missed,
            status: created.status === null ? null : statusJson(created.status),
          }),
        );
      } else {
        const existed =
          created.added.length > 0
            ? `it existed; added on ${created.added.join(", ")}`
            : "it existed already";
        io.out(`cell ${key}${created.created ? "" : ` (${existed})`}`);
        io.out(`  members  ${created.members.map(formatNodeId).join(" ")}`);
        if (created.status !== null)
          io.out(
            `  leader   ${created.status.leader === null ? "none yet (elected when a request needs one)" : formatNodeId(created.status.leader)}`,
          );
      }
      const missed = created.missed.map((m) => `${m.serverId} (${m.problem})`).join(", ");
      const hosting = created.members.length - created.missed.length;
      if (hosting < majorityOf(created.members.length))
        throw new CommandFailure(
          clientExitCodes.unavailable,
          "unavailable",
          `cell ${quoted(key)} is on only ${hosting} of its ${created.members.length} servers and cannot work; not on: ${missed}. ` +
            `If those servers were down when it was created, start them and run \`physalia cell create ${shellWord(key)} --add-missing\` (never for a server that lost its data)`,
        );
      if (missed !== "" && !io.json)
        io.say(
          `warning: the cell is not on ${missed}; it runs without them. ` +
            (created.created
              ? `Once they are up, run \`physalia cell create ${shellWord(key)} --add-missing\``
              : "If they were down when it was created, add it with --add-missing once they are up"),
        );
      if (created.status === null)
        throw new CommandFailure(
          clientExitCodes.unavailable,
          "unavailable",
          `cell ${quoted(key)} was created, but none of its nodes answered within ${createWaitMsDefault} ms; check \`physalia status\`, then \`physalia cell describe ${shellWord(key)}\``,
        );
      return clientExitCodes.ok;
    }),
  );

  withCommonOptions(
    cell
      .command("describe")
      .description("show a cell's members, leader, epoch and applied index, as one of its nodes sees them")
      .argument("<key>", "the cell's key", cellKeyArgument),
  ).action((key: string, options: CommonOptions) =>
    run(context, options, async (io) => {
      const status = await withCell(io, key, (c) => c.describe());
      if (io.json) {
        io.out(JSON.stringify({ cell: key, ...statusJson(status) }));
        return clientExitCodes.ok;
      }
      io.out(`cell ${key}`);
      io.out(`  members  ${status.members.map(formatNodeId).join(" ")}`);
      io.out(`  leader   ${status.leader === null ? "none known" : formatNodeId(status.leader)}`);
      io.out(`  epoch    ${status.epoch}`);
      io.out(`  applied  ${status.applied} (committed ${status.committed})`);
      io.out(`  answered by ${formatNodeId(status.node)} (${status.role})`);
      if (status.stalled !== null) io.out(`  STALLED  ${status.stalled}`);
      return clientExitCodes.ok;
    }),
  );

  withCommonOptions(
    cell
      .command("list")
      .description("list the cells hosted anywhere in the colony, sorted")
      .option("--after <key>", "start after this key (to continue a listing)", cellKeyArgument)
      .option(
        "--limit <n>",
        "list at most this many cells",
        wholeNumber("--limit", 1, Number.MAX_SAFE_INTEGER),
      ),
  ).action((options: CommonOptions & { after?: string; limit?: number }) =>
    run(context, options, (io) => listCells(io, options.after ?? "", options.limit ?? null)),
  );

  // ------------------------------------------------------------ items
  withCommonOptions(
    program
      .command("put")
      .description("write an item (value syntax: docs/OPERATIONS.md)")
      .argument("<key>", "the cell's key", cellKeyArgument)
      .argument("<item>", "the item's key", itemArgument)
      .argument(
        "<value>",
        "42, -7, true, false, hex:00ff, b64:AP8=, str:TEXT or any other text",
        valueArgument,
      )
      .option("--if <condition>", ifHelp, collectCondition, [] as Condition[]),
  ).action((key: string, item: string, value: Value, options: WriteOptions) =>
    run(context, options, (io) => conditionalWrite(io, key, { item, op: "put", value }, options.if)),
  );

  withCommonOptions(
    program
      .command("get")
      .description("read an item (exit code 1 when it is missing)")
      .argument("<key>", "the cell's key", cellKeyArgument)
      .argument("<item>", "the item's key", itemArgument)
      .option("--eventual", "read from the nearest node without asking the leader (faster, possibly stale)"),
  ).action((key: string, item: string, options: CommonOptions & { eventual?: boolean }) =>
    run(context, options, async (io) => {
      const result = await withCell(io, key, (c) =>
        c.read(
          { conditions: [], reads: [item], writes: [] },
          options.eventual === true ? "eventual" : "linearizable",
        ),
      );
      const failed = reportUncommitted(io, key, [], result, { item });
      if (failed !== null) return failed;
      const value = result.status === "committed" ? (result.reads?.[0]?.value ?? null) : null;
      if (io.json)
        io.out(JSON.stringify({ cell: key, item, value: value === null ? null : valueToJson(value) }));
      else if (value !== null) io.out(formatValue(value));
      else io.say(`item ${quoted(item)} is missing from cell ${quoted(key)}`);
      return value === null ? clientExitCodes.conditionFailed : clientExitCodes.ok;
    }),
  );

  withCommonOptions(
    program
      .command("add")
      .description("add to an integer item (a missing item counts as 0) and print the new value")
      .argument("<key>", "the cell's key", cellKeyArgument)
      .argument("<item>", "the item's key", itemArgument)
      .argument("<delta>", "an integer, like 1 or -5", integerArgument("the delta")),
  ).action((key: string, item: string, delta: bigint, options: CommonOptions) =>
    run(context, options, async (io) => {
      const result = await withCell(io, key, (c) =>
        c.transact({ conditions: [], reads: [], writes: [{ item, op: "add", delta }] }),
      );
      const failed = reportUncommitted(io, key, [], result, { item });
      if (failed !== null) return failed;
      const added = result.status === "committed" ? (result.added?.[0]?.value ?? null) : null;
      if (io.json)
        io.out(JSON.stringify({ cell: key, item, value: added === null ? null : valueToJson(added) }));
      else if (added !== null) io.out(formatValue(added));
      if (added === null)
        io.say(
          `the add applied once, but its new value was not kept for the retry that confirmed it; read it with \`physalia get ${shellWord(key)} ${shellWord(item)}\``,
        );
      return clientExitCodes.ok;
    }),
  );

  withCommonOptions(
    program
      .command("delete")
      .description("delete an item (deleting a missing item succeeds)")
      .argument("<key>", "the cell's key", cellKeyArgument)
      .argument("<item>", "the item's key", itemArgument)
      .option("--if <condition>", ifHelp, collectCondition, [] as Condition[]),
  ).action((key: string, item: string, options: WriteOptions) =>
    run(context, options, (io) => conditionalWrite(io, key, { item, op: "delete" }, options.if)),
  );

  withCommonOptions(
    program
      .command("txn")
      .description("run a transaction from a JSON file: conditions, reads and writes, all or nothing")
      .argument("<key>", "the cell's key", cellKeyArgument)
      .requiredOption(
        "--file <file>",
        "the transaction file (- for standard input; format: docs/OPERATIONS.md)",
        pathArgument,
      ),
  ).action((key: string, options: CommonOptions & { file: string }) =>
    run(context, options, async (io) => {
      const txn = readTransactionFile(options.file);
      const result = await withCell(io, key, (c) => c.transact(txn));
      if (result.status === "condition_failed" && !io.json)
        for (const read of result.reads ?? []) io.out(formatRead(read));
      const failed = reportUncommitted(io, key, txn.conditions, result);
      if (failed !== null) return failed;
      if (result.status !== "committed") return clientExitCodes.internal;
      if (io.json) {
        io.out(
          JSON.stringify({
            cell: key,
            status: "committed",
            reads: readsToJson(result.reads),
            added: (result.added ?? []).map((a) => ({ item: a.item, value: valueToJson(a.value) })),
          }),
        );
      } else {
        io.out("committed");
        for (const read of result.reads ?? []) io.out(formatRead(read));
        for (const added of result.added ?? [])
          io.out(`${added.item} = ${formatValue(added.value)} (after add)`);
      }
      return clientExitCodes.ok;
    }),
  );

  // ------------------------------------------------------------ leases
  const lease = program.command("lease").description("acquire, renew and release leases held in a cell");
  const leaseCommand = (name: "acquire" | "renew" | "release", description: string): Command => {
    const command = withCommonOptions(
      lease
        .command(name)
        .description(description)
        .argument("<key>", "the cell's key", cellKeyArgument)
        .argument("<name>", "the lease's name", leaseTextArgument("name"))
        .requiredOption(
          "--holder <holder>",
          "who holds the lease (release and renew need the same holder)",
          leaseTextArgument("holder"),
        ),
    );
    if (name !== "release")
      command.option(
        "--duration <duration>",
        `how long the lease lasts: milliseconds, or with a unit (30s, 2m; default ${leaseDurationMsDefault} ms)`,
        durationMs("--duration", limits.leaseDurationMsMin, limits.leaseDurationMsMax),
      );
    return command;
  };
  const leaseAction =
    (op: "acquire" | "renew" | "release") =>
    (key: string, name: string, options: CommonOptions & { holder: string; duration?: number }) =>
      run(context, options, async (io) => {
        const durationMs = options.duration ?? leaseDurationMsDefault;
        const sentAtMs = Date.now();
        const result = await withCell(io, key, (c) =>
          op === "acquire"
            ? c.acquireLease(name, options.holder, durationMs)
            : op === "renew"
              ? c.renewLease(name, options.holder, durationMs)
              : c.releaseLease(name, options.holder),
        );
        return reportLease(io, key, name, { holder: options.holder, durationMs, sentAtMs }, result);
      });
  leaseCommand("acquire", "take a lease unless another holder has it").action(leaseAction("acquire"));
  leaseCommand("renew", "extend a lease this holder has").action(leaseAction("renew"));
  leaseCommand("release", "give up a lease this holder has").action(leaseAction("release"));

  // ------------------------------------------------------------ status
  withCommonOptions(
    program
      .command("status")
      .description("show every server of the colony: up or down, nodes hosted and resident, leaders"),
  ).action((options: CommonOptions) => run(context, options, (io) => colonyStatus(io)));

  // ------------------------------------------------------------ client-key
  withCommonOptions(
    program
      .command("client-key")
      .description(
        "print the client key, in hex: what to give clients that should reach cells without holding the colony key",
      ),
  ).action((options: CommonOptions) =>
    run(context, options, async (io) => {
      const colony = openColony(io.colonyFile, io.env, io.lookupHost);
      const keys = clientKeysOf(colonyKeys(colony));
      const hex = [keys.signing, ...keys.alsoAccepted].map((key) => key.toString("hex"));
      io.out(io.json ? JSON.stringify({ clientKeys: hex }) : hex.join("\n"));
      return clientExitCodes.ok;
    }),
  );
}

/**
 * Prints a lease result. `expiresAtMs` is in the cell's time, which is no clock of this machine,
 * so a grant is shown with the moment this machine may rely on it until: a third of the
 * duration after the request was sent (docs/PROTOCOL.md, section 10).
 */
function reportLease(
  io: Io,
  cellKey: string,
  name: string,
  request: { readonly holder: string; readonly durationMs: number; readonly sentAtMs: number },
  result: LeaseResult,
): number {
  const base = { cell: cellKey, lease: name };
  switch (result.status) {
    case "granted": {
      const reliableUntil = isoTime(request.sentAtMs + Math.floor(request.durationMs / 3));
      if (io.json)
        io.out(
          JSON.stringify({
            ...base,
            status: "granted",
            holder: result.holder,
            token: result.token.toString(),
            durationMs: request.durationMs,
            expiresAtMs: result.expiresAtMs,
            reliableUntil,
          }),
        );
      else
        io.out(
          `granted to ${result.holder}, token ${result.token}; rely on it until ${reliableUntil} (a third of ${request.durationMs} ms after the request)`,
        );
      return clientExitCodes.ok;
    }
    case "released":
      io.out(io.json ? JSON.stringify({ ...base, status: "released" }) : "released");
      return clientExitCodes.ok;
    case "held":
      if (io.json)
        io.out(
          JSON.stringify({ ...base, status: "held", holder: result.holder, expiresAtMs: result.expiresAtMs }),
        );
      else
        io.say(
          `lease ${quoted(name)} is held by ${quoted(result.holder)} (until cell time ${result.expiresAtMs} ms); try again later`,
        );
      return clientExitCodes.conditionFailed;
    case "not_held":
      if (io.json) io.out(JSON.stringify({ ...base, status: "not_held" }));
      else
        io.say(
          `lease ${quoted(name)} is not held by ${quoted(request.holder)}: it expired, another holder took it, or it was never taken; acquire it again`,
        );
      return clientExitCodes.conditionFailed;
    case "rejected":
      throw new CommandFailure(
        clientExitCodes.invalidRequest,
        result.reason,
        `cell ${quoted(cellKey)} refused the lease operation: ${result.reason.replace(/_/g, " ")}: ${result.detail}`,
      );
  }
}

// ---------------------------------------------------------------- status

interface ServerStatusRow {
  readonly server: string;
  readonly address: string;
  readonly admin: string;
  readonly up: boolean;
  readonly error?: string;
  readonly [field: string]: unknown;
}

const statusFields = [
  "healthy",
  "hostedNodes",
  "residentNodes",
  "leaders",
  "pendingRequests",
  "stalledCells",
  "stalledCount",
  "faultyCells",
  "faultyCount",
  "suspectedPeers",
  "uptimeSeconds",
  "rssBytes",
  "dataFreeBytes",
  "diskWarning",
  "colonyKeys",
] as const;

/**
 * Lines on the colony keys the servers hold (their fingerprints), printed only when something is
 * worth knowing: a rotation under way (servers holding two keys, or not the same ones), or a
 * server that does not accept the key this command signs with.
 */
function colonyKeyLines(rows: readonly ServerStatusRow[], own: ColonyKeys | null): string[] {
  const held = rows
    .filter((r) => r.up && Array.isArray(r.colonyKeys) && r.colonyKeys.every((k) => typeof k === "string"))
    .map((r) => ({ server: r.server, keys: r.colonyKeys as string[] }));
  if (held.length === 0) return [];
  const first = held[0]?.keys.join(" ");
  const settled = held.every((h) => h.keys.length === 1 && h.keys.join(" ") === first);
  const lines: string[] = [];
  if (!settled) {
    lines.push("colony key fingerprints (a rotation is under way: the first key signs, both are accepted):");
    for (const h of held) {
      const [signs, ...also] = h.keys;
      lines.push(
        `  ${h.server}: signs with ${signs}${also.length > 0 ? `, also accepts ${also.join(", ")}` : ""}`,
      );
    }
  }
  if (own === null) return lines;
  const ownPrint = keyFingerprint(own.signing);
  const refusing = held.filter((h) => !h.keys.includes(ownPrint)).map((h) => h.server);
  if (refusing.length > 0)
    lines.push(
      `${refusing.join(", ")} ${refusing.length === 1 ? "does" : "do"} not accept the key this command signs with (${ownPrint}): its requests there fail; check the key file or PHYSALIA_COLONY_KEY`,
    );
  return lines;
}

async function colonyStatus(io: Io): Promise<number> {
  const colony = openColony(io.colonyFile, io.env, io.lookupHost);
  const answers = await mapBounded(colony.servers, adminConcurrencyMax, (s) =>
    settle(adminCall(s, "GET", "/status")),
  );
  const rows: ServerStatusRow[] = colony.servers.map((server, i) => {
    const base = {
      server: server.id,
      address: formatServerAddress(server.host, server.port),
      admin: adminUrl(server),
    };
    const answer = answers[i];
    if (answer === undefined || !answer.ok)
      return { ...base, up: false, error: answer?.problem ?? "no answer" };
    if (answer.value.status !== 200 || !isRecord(answer.value.body))
      return { ...base, up: false, error: `GET /status answered ${answer.value.status}` };
    const body = answer.value.body;
    const fields: Record<string, unknown> = {};
    for (const field of statusFields) fields[field] = body[field] ?? null;
    return { ...base, up: true, ...fields };
  });
  // A server that stopped itself (a disk failure) still answers, but serves nothing.
  const stopped = rows.filter((r) => r.up && r.healthy === false).length;
  const up = rows.filter((r) => r.up).length - stopped;
  const down = rows.length - up - stopped;
  if (io.json) {
    io.out(JSON.stringify({ colony: colony.connection.colony, servers: rows, up, stopped, down }));
  } else {
    io.out(
      `colony ${colony.connection.colony}: ${rows.length} servers, ${up} up, ${stopped > 0 ? `${stopped} stopped, ` : ""}${down} down`,
    );
    const number = (value: unknown) => (typeof value === "number" ? String(value) : "-");
    const lines = table([
      ["SERVER", "ADDRESS", "STATE", "HOSTED", "RESIDENT", "LEADERS", "PENDING", "UPTIME"],
      ...rows.map((r) =>
        r.up
          ? [
              r.server,
              r.address,
              r.healthy === false ? "stopped" : "up",
              number(r.hostedNodes),
              number(r.residentNodes),
              // A stopped server's nodes lead nothing and its requests wait for nothing.
              r.healthy === false ? "-" : number(r.leaders),
              r.healthy === false ? "-" : number(r.pendingRequests),
              typeof r.uptimeSeconds === "number" ? formatDuration(r.uptimeSeconds) : "-",
            ]
          : [r.server, r.address, `down: ${r.error}`],
      ),
    ]);
    for (const line of lines) io.out(line);
    for (const r of rows) {
      const stalled = cellsLine(r.stalledCells, r.stalledCount);
      if (stalled !== null) io.out(`${r.server}: stalled cells: ${stalled} (upgrade the servers)`);
      const faulty = cellsLine(r.faultyCells, r.faultyCount);
      if (faulty !== null)
        io.out(
          `${r.server}: faulty cells: ${faulty} (a damaged record: replace the node with a new incarnation)`,
        );
      if (Array.isArray(r.suspectedPeers) && r.suspectedPeers.length > 0)
        io.out(`${r.server}: suspects ${r.suspectedPeers.join(", ")}`);
      if (typeof r.diskWarning === "string") io.out(`${r.server}: ${r.diskWarning}`);
    }
    // Status needs no key (the admin port answers it without one): without a usable key, the
    // servers' keys are still shown, but not compared with this command's.
    let own: ColonyKeys | null = null;
    try {
      own = colonyKeys(colony);
    } catch (error) {
      if (!(error instanceof ColonyFileError)) throw error;
    }
    for (const line of colonyKeyLines(rows, own)) io.out(line);
  }
  if (up === 0)
    throw new CommandFailure(
      clientExitCodes.colonyUnreachable,
      "colony_unreachable",
      stopped > 0
        ? `no server of the colony in ${colony.file} serves: ${stopped} stopped themselves (see their logs) and ${down} do not answer`
        : `no server of the colony in ${colony.file} answers; start it (\`physalia up\`) or check the file`,
    );
  return clientExitCodes.ok;
}

/** Cells a status line names before it only counts the rest. */
const statusLineCellsMax = 10;

/** "a, b, c", or "a, b, ... (1,204 in all)"; null when there are none. */
function cellsLine(cells: unknown, count: unknown): string | null {
  if (!Array.isArray(cells) || cells.length === 0) return null;
  const total = typeof count === "number" && count > cells.length ? count : cells.length;
  const named = cells.slice(0, statusLineCellsMax).map(String).join(", ");
  return total > statusLineCellsMax ? `${named}, ... (${total.toLocaleString("en-US")} in all)` : named;
}

// ---------------------------------------------------------------- cell list

/** One server's sorted /cells listing, read a page at a time. */
class CellCursor {
  private page: readonly string[] = [];
  private position = 0;
  private more = true;
  private pages = 0;
  problem: string | null = null;

  constructor(
    readonly server: ServerEntry,
    private after: string,
  ) {}

  /** The next key, or null when done (or the server stopped answering: see `problem`). */
  async head(): Promise<string | null> {
    while (this.position >= this.page.length) {
      if (!this.more || this.problem !== null) return null;
      if (this.pages >= listPagesPerServerMax) {
        this.problem = `stopped after ${listPagesPerServerMax} pages`;
        return null;
      }
      try {
        const page = await cellsPage(this.server, this.after);
        this.pages += 1;
        this.page = page.cells;
        this.position = 0;
        const last = page.cells.at(-1);
        this.more = page.more && last !== undefined && compareUtf8(last, this.after) > 0;
        if (last !== undefined) this.after = last;
      } catch (error) {
        this.problem = (error as Error).message;
        return null;
      }
    }
    return this.page[this.position] ?? null;
  }

  advance(): void {
    this.position += 1;
  }
}

/** A k-way merge of every server's sorted listing: memory stays at a page per server. */
async function listCells(io: Io, after: string, limit: number | null): Promise<number> {
  const colony = openColony(io.colonyFile, io.env, io.lookupHost);
  const cursors = colony.servers.map((s) => new CellCursor(s, after));
  const heads = await mapBounded(cursors, adminConcurrencyMax, (c) => c.head());
  if (cursors.every((c) => c.problem !== null))
    throw new CommandFailure(
      clientExitCodes.colonyUnreachable,
      "colony_unreachable",
      `no server of the colony in ${colony.file} answers (${cursors[0]?.server.id}: ${cursors[0]?.problem}); start it (\`physalia up\`) or check the file`,
    );
  // A binary heap of cursors by their head key.
  const heap: { key: string; cursor: CellCursor }[] = [];
  const push = (entry: { key: string; cursor: CellCursor }): void => {
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (compareUtf8((heap[parent] as { key: string }).key, entry.key) <= 0) break;
      heap[i] = heap[parent] as { key: string; cursor: CellCursor };
      i = parent;
    }
    heap[i] = entry;
  };
  const pop = (): { key: string; cursor: CellCursor } | undefined => {
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child =
        right < heap.length &&
        compareUtf8((heap[right] as { key: string }).key, (heap[left] as { key: string }).key) < 0
          ? right
          : left;
      if (compareUtf8((heap[child] as { key: string }).key, last.key) >= 0) break;
      heap[i] = heap[child] as { key: string; cursor: CellCursor };
      i = child;
    }
    heap[i] = last;
    return top;
  };
  cursors.forEach((cursor, i) => {
    const key = heads[i];
    if (key !== null && key !== undefined) push({ key, cursor });
  });

  let buffered = "";
  const emit = (text: string): void => {
    buffered += text;
    if (buffered.length >= outputChunkBytes) {
      io.write(buffered);
      buffered = "";
    }
  };
  if (io.json) emit('{"cells":[');
  let listed = 0;
  let previous: string | null = null;
  let more = false;
  for (;;) {
    const top = pop();
    if (top === undefined) break;
    if (top.key !== previous) {
      if (limit !== null && listed >= limit) {
        more = true;
        break;
      }
      emit(io.json ? `${listed > 0 ? "," : ""}${JSON.stringify(top.key)}` : `${top.key}\n`);
      listed += 1;
      previous = top.key;
    }
    top.cursor.advance();
    const next = await top.cursor.head();
    if (next !== null) push({ key: next, cursor: top.cursor });
  }
  const down = cursors
    .filter((c) => c.problem !== null)
    .map((c) => ({ server: c.server.id, error: c.problem as string }));
  if (io.json) emit(`],"more":${more},"serversDown":${JSON.stringify(down)}}\n`);
  io.write(buffered);
  if (!io.json)
    for (const d of down)
      io.say(`warning: server ${d.server} did not answer (${d.error}); cells only it hosts are not listed`);
  return clientExitCodes.ok;
}
