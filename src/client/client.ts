/**
 * The client core: finds a cell's nodes, routes to the nearest (or the known leader), follows
 * redirects, retries with exponential backoff and jitter while keeping the same (session,
 * sequence) so a retried write applies once, and turns outcomes into typed results and errors.
 * Written against the transport and scheduler ports: the simulator runs this very code.
 */

import type { ClientRequest, ClientResponse, RequestBody, ResponseBody } from "../cell/index.ts";
import {
  type Command,
  type CommandResult,
  copyOperation,
  copyTransaction,
  type LeaseOp,
  type LeaseResult,
  OPERATION_FORMAT_VERSION,
  type Operation,
  show,
  type Transaction,
  type TxnResult,
  type Value,
  validateOperation,
  validateTransaction,
} from "../cell/index.ts";
import {
  type Address,
  type CellKey,
  cellKeyProblem,
  limits,
  type Prng,
  type Scheduler,
  type ServerId,
  type TimerHandle,
} from "../core/index.ts";
import { rendezvousScore } from "../discovery/index.ts";
import type { TransportPort } from "../transport/index.ts";
import {
  CellStalledError,
  InvalidRequestError,
  OutcomeUnknownError,
  type PhysaliaError,
  UnavailableError,
  UnknownCellError,
} from "./errors.ts";

/** Where a cell's nodes are (discovery). Answers may be stale: that costs a retry, never safety. */
export interface CellResolver {
  members(cellKey: CellKey): readonly ServerId[] | null;
  /** Called when a node reports newer membership (a forwarding pointer). */
  learned?(cellKey: CellKey, members: readonly ServerId[], epoch: number): void;
}

export interface ClientOptions {
  readonly address: Address;
  readonly transport: TransportPort<ClientRequest | ClientResponse>;
  readonly scheduler: Scheduler;
  readonly random: Prng;
  readonly resolver: CellResolver;
  /** Smaller is nearer; the client prefers near nodes. Default: every server equally near. */
  readonly distance?: (serverId: ServerId) => number;
  /**
   * The shortest time an attempt is waited for, and the wait before any answer was timed
   * (default limits.clientRequestTimeoutMs). Slower answers lengthen it, and so does each
   * unanswered attempt of an operation for its next, up to limits.clientRequestTimeoutMsMax (or
   * this, if larger).
   */
  readonly requestTimeoutMs?: number;
  /**
   * Attempts of one operation that fail without pointing anywhere (timeouts, errors, lost
   * connections; default limits.clientAttemptsMax). Redirects are answers and count apart, up to
   * limits.clientRedirectsMax, so an operation rides out an election; every operation ends
   * limits.clientOperationMsMax after its first attempt at the latest.
   */
  readonly attemptsMax?: number;
  /**
   * Told true when the client goes from no operation outstanding to one, and false when the last
   * one ends. A runtime whose timers do not keep the process alive (the Node.js client's) holds
   * it alive meanwhile, so that a program awaiting an operation gets its answer or its error
   * even when no connection is open.
   */
  readonly onBusy?: (busy: boolean) => void;
  /**
   * Sessions an earlier client left idle (its `idleSessions()`), taken up again instead of new
   * ones: a program that runs briefly and often (the CLI) then does not open a session in the cell
   * at each run. Checked with `resumedSessionsProblem`. Each must be held by this client alone.
   */
  readonly sessions?: readonly ResumedSession[];
}

/** Session ids are drawn below this: 52 random bits (see withSession). */
const sessionIdMax = 2 ** 52;

/**
 * A session of one cell that a client no longer uses, as `idleSessions()` gives it: taken up
 * again by another client (`ClientOptions.sessions`), it goes on at `seq + 1`. A session must
 * never be used by two clients at once: two commands under one `(session, seq)` apply once, and
 * the second is answered the first one's result.
 */
export interface ResumedSession {
  readonly cellKey: CellKey;
  readonly id: number;
  /** The last sequence number the session used (0: none). */
  readonly seq: number;
  /** True while no command of the session has been answered (the cell may not know it yet). */
  readonly fresh: boolean;
}

/** Why these sessions cannot be taken up, or null. */
export function resumedSessionsProblem(sessions: unknown): string | null {
  if (!Array.isArray(sessions)) return "sessions must be an array of { cellKey, id, seq, fresh }";
  const perCell = new Map<string, number>();
  const ids = new Set<string>();
  for (const [i, s] of sessions.entries()) {
    const shape = "{ cellKey: string, id: 1..2^52-1, seq: 0..2^53-2, fresh: boolean }";
    if (typeof s !== "object" || s === null) return `sessions[${i}] must be ${shape}, not ${show(s)}`;
    // The next command of the session takes seq + 1, which must stay a safe integer.
    const wrong =
      typeof s.cellKey !== "string"
        ? "cellKey"
        : !Number.isSafeInteger(s.id) || s.id < 1 || s.id >= sessionIdMax
          ? "id"
          : !Number.isSafeInteger(s.seq) || s.seq < 0 || s.seq >= Number.MAX_SAFE_INTEGER
            ? "seq"
            : typeof s.fresh !== "boolean"
              ? "fresh"
              : null;
    if (wrong !== null) return `sessions[${i}].${wrong} is ${show(s[wrong])}; a session is ${shape}`;
    const problem = cellKeyProblem(s.cellKey);
    if (problem !== null) return `sessions[${i}].cellKey: ${problem}`;
    const key = `${s.id} ${s.cellKey}`;
    if (ids.has(key)) return `sessions[${i}]: session ${s.id} of cell ${show(s.cellKey)} is listed twice`;
    ids.add(key);
    const count = (perCell.get(s.cellKey) ?? 0) + 1;
    if (count > limits.clientSessionsPerCellMax)
      return `more than ${limits.clientSessionsPerCellMax} sessions of cell ${show(s.cellKey)}, the most a client uses`;
    perCell.set(s.cellKey, count);
  }
  if (sessions.length > limits.clientCellsMax) return `more than ${limits.clientCellsMax} sessions`;
  return null;
}

export type Consistency = "linearizable" | "eventual";

export type Outcome<T> =
  | {
      readonly ok: true;
      readonly value: T;
      /** Log index of the answer: the slot a command applied at, or the applied index a read saw. */
      readonly index: number;
      /** For commands: the session and sequence number that identify it in the log. */
      readonly session?: { readonly id: number; readonly seq: number };
    }
  | { readonly ok: false; readonly error: PhysaliaError };

interface Session {
  readonly id: number;
  seq: number;
  /** True until the cell is known to have this session. */
  fresh: boolean;
  busy: boolean;
}

interface CellState {
  leader: ServerId | null;
  /** Highest log index seen in any answer: the session watermark for eventual reads. */
  watermark: number;
  readonly sessions: Session[];
  readonly waiting: (() => void)[];
  /** startWaiting's loop is running: a session released within it is taken up by that loop. */
  startingWaiting: boolean;
  /** Servers that recently failed to answer, with when they may be tried again. */
  readonly avoid: Map<ServerId, number>;
  /**
   * A leader an attempt timed out at while its server answered nothing, and until when the
   * cell's requests go around it through the other nodes, marked `leaderUnresponsive`
   * (limits.clientLeaderDetourMs): a node that still hears that leader relays them to it, one
   * that does not takes over.
   */
  detourFrom: ServerId | null;
  /** When the detour started: an answer from detourFrom after it ends it (the leader is slow, not cut off). */
  detourSinceMs: number;
  detourUntilMs: number;
  /**
   * The server that last answered a write or linearizable read of this cell sent to it, and
   * when: the cell's leader there was committing then. An attempt there that times out after
   * such an answer waits longer instead of going around the leader (see expireAttempts).
   */
  committedAt: ServerId | null;
  committedAtMs: number;
}

interface Operation$ {
  readonly cellKey: CellKey;
  readonly build: (leaderUnresponsive: boolean) => RequestBody;
  readonly isWrite: boolean;
  readonly preferLeader: boolean;
  /** `unanswered`: some attempt went unanswered (timed out, or its connection was lost), and may apply yet. */
  readonly done: (response: ResponseBody | PhysaliaError, unanswered: boolean) => void;
  attempts: number;
  currentId: number;
  target: ServerId | null;
  leaderUnresponsive: boolean;
  /** The backoff before the next attempt, while one is pending (request timeouts are swept). */
  timer: TimerHandle | null;
  /** When the current attempt is given up. */
  deadlineMs: number;
  /** When the first attempt was sent. */
  firstSentAtMs: number;
  /** A write was sent at least once: if every attempt fails its outcome is unknown. */
  sent: boolean;
  /** Redirects followed by this operation. */
  redirects: number;
  /** Attempts of this operation given up unanswered: each waits twice as long as the one before. */
  timeouts: number;
  /** Times the current attempt's deadline was moved on because its cell kept committing there. */
  extensions: number;
  /**
   * Times an attempt of this operation at its cell's leader waited longer only because that
   * leader's server went on answering other requests (leaderOnlySlow).
   */
  slowLeaderWaits: number;
  /** When the current attempt was sent, or its deadline last moved on. */
  waitingSinceMs: number;
  /** Request ids of every attempt still registered in `inflight`. */
  readonly attemptIds: number[];
  /**
   * When each of attemptIds was sent (scheduler time; the last is the current attempt's): an
   * answer to any of them is timed by its own attempt.
   */
  readonly attemptSentMs: number[];
  finished: boolean;
  lastProblem: string;
  /**
   * Servers that answered `unknown_cell` to this operation, while every attempt so far got that
   * answer (null once any attempt got another answer or none). At most a cell's members.
   */
  unknownAt: ServerId[] | null;
  /** Some attempt went unanswered: a copy of it may still reach the cell. */
  unanswered: boolean;
}

const waitingPerCellMax = 10_000;
/** Servers whose last answer the client remembers (the first one it heard is forgotten). */
const serversHeardMax = 10_000;
/** Requests one turn sends before the transport is flushed without waiting for the turn's end. */
const requestsPerFlushMax = 1024;

/**
 * The client over the ports (the simulator runs it). The package's PhysaliaClient
 * (src/client/connect.ts) is this class with `connect()`, which builds one on real sockets.
 */
export class PhysaliaClient {
  readonly address: Address;
  private readonly transport: TransportPort<ClientRequest | ClientResponse>;
  private readonly scheduler: Scheduler;
  private readonly random: Prng;
  private readonly resolver: CellResolver;
  private readonly distance: (serverId: ServerId) => number;
  private readonly requestTimeoutMs: number;
  private readonly requestTimeoutMsMax: number;
  private readonly attemptsMax: number;
  /**
   * Smoothed answer time of successful attempts and its mean deviation (0: none timed yet).
   * Each attempt has its own request id, so a late answer is timed against the attempt it
   * answers: the estimate follows a slow colony even while attempts time out.
   */
  private answerMs = 0;
  private answerDeviationMs = 0;
  private readonly cells = new Map<CellKey, CellState>();
  /** Operations outstanding (see admit). */
  private outstanding = 0;
  private readonly onBusy: ((busy: boolean) => void) | null;
  private readonly inflight = new Map<number, Operation$>();
  /** Every operation from its first attempt to its end, waiting for a retry included. */
  private readonly running = new Set<Operation$>();
  /** Work waiting on a timer that close() must not leave waiting (see later()). */
  private readonly deferred = new Map<TimerHandle, () => void>();
  /** When each server last answered anything, in the order they were first heard. */
  private readonly heardMs = new Map<Address, number>();
  private nextRequestId = 1;
  /** Requests sent since the transport was last flushed (see `flushSoon`). */
  private unflushed = 0;
  private closed = false;
  private readonly closeHooks: (() => unknown)[] = [];
  /** One timer for every attempt's timeout, armed for the earliest deadline (timeoutAtMs). */
  private timeoutTimer: TimerHandle | null = null;
  private timeoutAtMs = Number.POSITIVE_INFINITY;

  constructor(options: ClientOptions) {
    this.address = options.address;
    this.transport = options.transport;
    this.scheduler = options.scheduler;
    this.random = options.random;
    this.resolver = options.resolver;
    this.distance = options.distance ?? (() => 0);
    this.requestTimeoutMs = options.requestTimeoutMs ?? limits.clientRequestTimeoutMs;
    this.requestTimeoutMsMax = Math.max(this.requestTimeoutMs, limits.clientRequestTimeoutMsMax);
    this.attemptsMax = options.attemptsMax ?? limits.clientAttemptsMax;
    this.onBusy = options.onBusy ?? null;
    if (options.sessions !== undefined) {
      const problem = resumedSessionsProblem(options.sessions);
      if (problem !== null) throw new InvalidRequestError("", `client sessions: ${problem}`);
      for (const s of options.sessions) {
        this.cellState(s.cellKey).sessions.push({ id: s.id, seq: s.seq, fresh: s.fresh, busy: false });
      }
    }
    this.transport.onMessage((from, message) => {
      if (message.kind !== "response") return;
      this.heard(from);
      this.onResponse(message);
    });
  }

  /** The handle of one cell; throws InvalidRequestError for a key that cannot name a cell. */
  cell(cellKey: CellKey): CellHandle {
    const problem =
      typeof cellKey === "string" ? cellKeyProblem(cellKey) : `a cell key is a string, not ${typeof cellKey}`;
    if (problem !== null) throw new InvalidRequestError(String(cellKey), `client.cell(): ${problem}`);
    return new CellHandle(this, cellKey);
  }

  /**
   * The sessions no operation is using, of the cells given or of every cell, for another client
   * to take up (`ClientOptions.sessions`) once this one is closed. Only sessions that sent a
   * command are listed.
   */
  idleSessions(cellKeys?: readonly CellKey[]): ResumedSession[] {
    const listed: ResumedSession[] = [];
    for (const cellKey of cellKeys ?? [...this.cells.keys()]) {
      for (const s of this.cells.get(cellKey)?.sessions ?? []) {
        if (!s.busy && s.seq > 0) listed.push({ cellKey, id: s.id, seq: s.seq, fresh: s.fresh });
      }
    }
    return listed;
  }

  /** Runs when the client is closed (a real client closes its connections here). */
  onClose(hook: () => unknown): void {
    this.closeHooks.push(hook);
  }

  /**
   * Ends every operation in flight and releases the client's resources. A write already sent to a
   * node ends with OutcomeUnknownError (the cell may apply it yet); everything else with
   * UnavailableError (nothing was applied).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timeoutTimer !== null) this.scheduler.clearTimer(this.timeoutTimer);
    this.timeoutTimer = null;
    this.timeoutAtMs = Number.POSITIVE_INFINITY;
    for (const op of [...this.running]) {
      this.finish(
        op,
        op.isWrite && op.sent
          ? new OutcomeUnknownError(op.cellKey, "the client was closed while the write was in flight")
          : new UnavailableError(op.cellKey, "the client was closed"),
      );
    }
    // Retries waiting on a timer go now, and end at once: the client is closed.
    for (const [timer, work] of [...this.deferred]) {
      this.scheduler.clearTimer(timer);
      this.deferred.delete(timer);
      work();
    }
    await Promise.all(this.closeHooks.map((hook) => hook()));
  }

  /** The session watermark of a cell: the highest log index this client has seen. */
  watermark(cellKey: CellKey): number {
    return this.cells.get(cellKey)?.watermark ?? 0;
  }

  // ------------------------------------------------------------------ operations (callback form)

  /** A transaction with writes (or a lease operation): through the log, exactly once. */
  command(cellKey: CellKey, given: Operation, answer: (outcome: Outcome<CommandResult>) => void): void {
    // Limits are checked here too, so a bad request fails at once with the same message the
    // server would give, without a round trip or a session sequence number.
    const problem = validateOperation(given);
    if (problem !== null) {
      answer({ ok: false, error: new InvalidRequestError(cellKey, problem.message) });
      return;
    }
    // Sent, and sent again by retries, as it is now: the caller may change its bytes meanwhile.
    const op = copyOperation(given);
    const callback = this.admit(cellKey, answer);
    if (callback === null) return;
    const go = (retriesLeft: number): void => {
      const admitted = this.withSession(cellKey, (session, release) => {
        session.seq += 1;
        const command: Command = {
          version: OPERATION_FORMAT_VERSION,
          session: session.id,
          seq: session.seq,
          newSession: session.fresh,
          op,
        };
        const build = (leaderUnresponsive: boolean): RequestBody => ({
          type: "command",
          command,
          leaderUnresponsive,
        });
        // Every copy of this command carries one (session, seq), so however many reach the cell it
        // applies at most once. A retry after sessions_full is therefore this very command again:
        // under another sequence number, a late copy of this one (one that waited in a relay, say)
        // could find room and apply too, and the operation count twice.
        // Some copy of it went unanswered: it may still reach the cell and apply.
        let unansweredCopy = false;
        const send = (fullRetriesLeft: number): void => {
          this.run(cellKey, true, true, build, (response, unanswered) => {
            unansweredCopy ||= unanswered;
            const kind =
              response instanceof Error || response.type !== "result" ? null : response.result.kind;
            if ((kind === "session_expired" || kind === "stale_request") && retriesLeft > 0) {
              // Applied nothing. Expired: the cell forgot this session. Stale: the cell has a later
              // command of it, so another client used it too (a session taken up from a copy of
              // the state it was kept in). Either way, continue in a fresh one.
              release(true);
              go(retriesLeft - 1);
              return;
            }
            if (kind === "sessions_full" && fullRetriesLeft > 0) {
              // This copy applied nothing; the cell is at its session limit for now.
              this.later(limits.clientBackoffMsMax, () => send(fullRetriesLeft - 1));
              return;
            }
            if (kind !== null && kind !== "session_expired" && kind !== "sessions_full")
              session.fresh = false;
            release(false);
            // "Nothing applied" holds of this copy; with another unanswered, the outcome is unknown.
            const outcome =
              (kind === "sessions_full" || response instanceof UnavailableError) && unansweredCopy
                ? { ok: false as const, error: unansweredCopyError(cellKey, response) }
                : this.toOutcome(cellKey, response, (body) => (body.type === "result" ? body.result : null));
            callback(
              outcome.ok ? { ...outcome, session: { id: command.session, seq: command.seq } } : outcome,
            );
          });
        };
        send(retriesLeft);
      });
      if (!admitted) {
        // Told through the callback, also on a retry from a timer, where a throw would reach no one.
        const detail = `more than ${waitingPerCellMax} operations of this client wait for it; slow down`;
        callback({ ok: false, error: new UnavailableError(cellKey, detail) });
      }
    };
    go(3);
  }

  /** A read-only transaction. */
  read(
    cellKey: CellKey,
    given: Transaction,
    consistency: Consistency,
    answer: (outcome: Outcome<TxnResult>) => void,
  ): void {
    // Anything else would be read as "eventual": a weaker read than asked for, and silently so.
    if (consistency !== "linearizable" && consistency !== "eventual") {
      const detail = `the consistency of a read is "linearizable" or "eventual", not ${show(consistency)}`;
      answer({ ok: false, error: new InvalidRequestError(cellKey, detail) });
      return;
    }
    const problem = validateTransaction(given);
    if (problem !== null || given.writes.length > 0) {
      const message = problem?.message ?? "a read may not write: send writes as a transaction";
      answer({ ok: false, error: new InvalidRequestError(cellKey, message) });
      return;
    }
    const txn = copyTransaction(given);
    const callback = this.admit(cellKey, answer);
    if (callback === null) return;
    const build =
      consistency === "linearizable"
        ? (leaderUnresponsive: boolean): RequestBody => ({
            type: "read",
            consistency,
            txn,
            leaderUnresponsive,
          })
        : (): RequestBody => ({ type: "read", consistency, txn, watermark: this.watermark(cellKey) });
    this.run(cellKey, false, consistency === "linearizable", build, (response) => {
      callback(this.toOutcome(cellKey, response, (body) => (body.type === "read" ? body.result : null)));
    });
  }

  /** Raw request (control plane and tools): membership changes and describe. */
  request(cellKey: CellKey, body: RequestBody, answer: (outcome: Outcome<ResponseBody>) => void): void {
    const callback = this.admit(cellKey, answer);
    if (callback === null) return;
    this.run(
      cellKey,
      body.type === "change",
      true,
      () => body,
      (response) => {
        callback(this.toOutcome(cellKey, response, (b) => b));
      },
    );
  }

  /**
   * Counts an operation as outstanding until `answer` is called; null (and `answer` told it is
   * unavailable) when the client already has clientOperationsMax outstanding.
   */
  private admit<T>(
    cellKey: CellKey,
    answer: (outcome: Outcome<T>) => void,
  ): ((outcome: Outcome<T>) => void) | null {
    if (this.outstanding >= limits.clientOperationsMax) {
      const detail = `this client has ${limits.clientOperationsMax} operations outstanding, its limit; wait for some to finish`;
      answer({ ok: false, error: new UnavailableError(cellKey, detail) });
      return null;
    }
    this.outstanding += 1;
    if (this.outstanding === 1) this.onBusy?.(true);
    let answered = false;
    return (outcome) => {
      if (!answered) {
        answered = true;
        this.outstanding -= 1;
        if (this.outstanding === 0) this.onBusy?.(false);
      }
      answer(outcome);
    };
  }

  /** Runs `work` after `delayMs`, or at once when the client is closed meanwhile. */
  private later(delayMs: number, work: () => void): void {
    const timer = this.scheduler.setTimer(delayMs, () => {
      this.deferred.delete(timer);
      work();
    });
    this.deferred.set(timer, work);
  }

  // ------------------------------------------------------------------ sessions

  private cellState(cellKey: CellKey): CellState {
    let state = this.cells.get(cellKey);
    if (state === undefined) {
      if (this.cells.size >= limits.clientCellsMax) {
        // Forget the least recently added idle cell.
        for (const [key, candidate] of this.cells) {
          if (candidate.sessions.every((s) => !s.busy) && candidate.waiting.length === 0) {
            this.cells.delete(key);
            break;
          }
        }
      }
      state = {
        leader: null,
        watermark: 0,
        sessions: [],
        waiting: [],
        startingWaiting: false,
        avoid: new Map(),
        detourFrom: null,
        detourSinceMs: 0,
        detourUntilMs: 0,
        committedAt: null,
        committedAtMs: Number.NEGATIVE_INFINITY,
      };
      this.cells.set(cellKey, state);
    }
    return state;
  }

  /** Run `body` with an idle session of the cell (one request in flight per session), now or once one is free; false if too many wait. */
  private withSession(
    cellKey: CellKey,
    body: (session: Session, release: (discard: boolean) => void) => void,
  ): boolean {
    const state = this.cellState(cellKey);
    let session = state.sessions.find((s) => !s.busy);
    if (session === undefined && state.sessions.length < limits.clientSessionsPerCellMax) {
      // 52 random bits: a cell tells clients' sessions apart by id alone, and one that took
      // another's live id would be answered that session's results instead of applying its own.
      session = { id: 1 + (this.random.uint52() % (sessionIdMax - 1)), seq: 0, fresh: true, busy: false };
      state.sessions.push(session);
    }
    if (session === undefined) {
      if (state.waiting.length >= waitingPerCellMax) return false;
      state.waiting.push(() => this.withSession(cellKey, body));
      return true;
    }
    const chosen = session;
    chosen.busy = true;
    body(chosen, (discard) => {
      chosen.busy = false;
      // A session whose sequence numbers are used up is retired (only a resumed one gets near).
      if (discard || chosen.seq >= Number.MAX_SAFE_INTEGER)
        state.sessions.splice(state.sessions.indexOf(chosen), 1);
      this.startWaiting(state);
    });
    return true;
  }

  /**
   * Starts waiting operations while the cell has a session for them. A loop, not a call per
   * release: an operation that ends at once (the client closed) releases its session inside the
   * loop, and 10,000 waiting operations would otherwise nest 10,000 calls deep.
   */
  private startWaiting(state: CellState): void {
    if (state.startingWaiting) return;
    state.startingWaiting = true;
    try {
      while (
        state.waiting.length > 0 &&
        (state.sessions.length < limits.clientSessionsPerCellMax || state.sessions.some((s) => !s.busy))
      ) {
        (state.waiting.shift() as () => void)();
      }
    } finally {
      state.startingWaiting = false;
    }
  }

  // ------------------------------------------------------------------ attempts

  private run(
    cellKey: CellKey,
    isWrite: boolean,
    preferLeader: boolean,
    build: (leaderUnresponsive: boolean) => RequestBody,
    done: (response: ResponseBody | PhysaliaError, unanswered: boolean) => void,
  ): void {
    const op: Operation$ = {
      cellKey,
      build,
      isWrite,
      preferLeader,
      done,
      attempts: 0,
      currentId: 0,
      target: null,
      leaderUnresponsive: false,
      timer: null,
      deadlineMs: 0,
      firstSentAtMs: 0,
      sent: false,
      redirects: 0,
      timeouts: 0,
      extensions: 0,
      slowLeaderWaits: 0,
      waitingSinceMs: 0,
      attemptIds: [],
      attemptSentMs: [],
      finished: false,
      lastProblem: "no node answered",
      unknownAt: [],
      unanswered: false,
    };
    if (this.closed) {
      this.finish(op, new UnavailableError(cellKey, "the client was closed"));
      return;
    }
    this.running.add(op);
    this.attempt(op);
  }

  private attempt(op: Operation$): void {
    if (op.finished) return;
    const now = this.scheduler.nowMs();
    const tooLong = op.attempts > 0 && now - op.firstSentAtMs >= limits.clientOperationMsMax;
    // Every attempt so far has ended, by a redirect or by a failure.
    const failed = op.attempts - op.redirects;
    if (failed >= this.attemptsMax || op.redirects >= limits.clientRedirectsMax || tooLong) {
      const took = tooLong ? ` in ${Math.round(now - op.firstSentAtMs)} ms` : "";
      const redirected = op.redirects > 0 ? ` (${op.redirects} redirected)` : "";
      // Servers close a connection whose hello their colony key does not authenticate: a client
      // that no server ever answered, whose attempts end with lost connections, likely has the
      // wrong key.
      const keyHint =
        this.heardMs.size === 0 && op.lastProblem.includes("was lost")
          ? "; no server has answered this client: if they are up, check that its colony key is the colony's"
          : "";
      const detail = `${op.attempts} attempts failed${took}${redirected}; last: ${op.lastProblem}${keyHint}`;
      this.finish(
        op,
        op.isWrite && op.sent
          ? new OutcomeUnknownError(op.cellKey, detail)
          : new UnavailableError(op.cellKey, detail),
      );
      return;
    }
    const target = this.pickTarget(op);
    if (target === null) {
      this.finish(op, new UnknownCellError(op.cellKey));
      return;
    }
    if (op.attempts === 0) op.firstSentAtMs = now;
    const detour = this.detouring(this.cellState(op.cellKey), now) !== null;
    op.attempts += 1;
    op.target = target;
    op.extensions = 0;
    op.waitingSinceMs = now;
    const id = this.nextRequestId++;
    op.currentId = id;
    this.inflight.set(id, op);
    op.attemptIds.push(id);
    op.attemptSentMs.push(now);
    op.sent = true;
    this.transport.send(target, {
      kind: "request",
      id,
      cellKey: op.cellKey,
      body: op.build(op.leaderUnresponsive || detour),
    });
    this.flushSoon();
    op.deadlineMs = now + this.attemptWaitMs(op);
    this.armTimeouts(op.deadlineMs);
  }

  /** How long an attempt sent now is waited for. */
  attemptTimeoutMs(): number {
    if (this.answerMs === 0) return this.requestTimeoutMs;
    const wait = Math.ceil(this.answerMs + 4 * this.answerDeviationMs);
    return Math.min(this.requestTimeoutMsMax, Math.max(this.requestTimeoutMs, wait));
  }

  /**
   * How long this attempt of `op` is waited for: the client's attempt timeout, doubled for each
   * attempt of the operation that went unanswered, up to clientRequestTimeoutMsMax. Answers slower
   * than the estimate (a colony under more load than it serves) then bring fewer copies of each
   * request, and fewer claims that a leader is unresponsive, while the estimate catches up.
   */
  private attemptWaitMs(op: Operation$): number {
    return Math.min(this.requestTimeoutMsMax, this.attemptTimeoutMs() * 2 ** Math.min(op.timeouts, 16));
  }

  /** An attempt sent at `sentAtMs` was answered with a result now. */
  private timeAnswer(sentAtMs: number): void {
    const sample = Math.max(0, this.scheduler.nowMs() - sentAtMs);
    if (this.answerMs === 0) {
      this.answerMs = Math.max(sample, 1);
      this.answerDeviationMs = sample / 2;
      return;
    }
    this.answerDeviationMs += (Math.abs(this.answerMs - sample) - this.answerDeviationMs) / 4;
    this.answerMs = Math.max(1, this.answerMs + (sample - this.answerMs) / 8);
  }

  /** Fire the timeout sweep by `atMs` (a timer already armed for earlier stays). */
  private armTimeouts(atMs: number): void {
    if (atMs >= this.timeoutAtMs) return;
    if (this.timeoutTimer !== null) this.scheduler.clearTimer(this.timeoutTimer);
    this.timeoutAtMs = atMs;
    this.timeoutTimer = this.scheduler.setTimer(Math.max(0, atMs - this.scheduler.nowMs()), () =>
      this.expireAttempts(),
    );
  }

  /**
   * Gives up every attempt past its deadline, then arms the timer for the earliest remaining
   * one. An attempt awaits its answer while it is its operation's current one and no backoff is
   * pending (a redirect, an error or a lost connection ended it before its time). Deadlines differ
   * as the answer times move, so every waiting attempt is looked at: at most the operations in
   * flight and their earlier attempts, and the timer fires only when one of them is due.
   */
  private expireAttempts(): void {
    this.timeoutTimer = null;
    this.timeoutAtMs = Number.POSITIVE_INFINITY;
    const now = this.scheduler.nowMs();
    let next = Number.POSITIVE_INFINITY;
    // abandonAttempt only arms a timer: the map does not change while it is walked.
    for (const [id, op] of this.inflight) {
      if (op.finished || op.currentId !== id || op.timer !== null) continue;
      if (op.deadlineMs > now) {
        if (op.deadlineMs < next) next = op.deadlineMs;
        continue;
      }
      const target = op.target as ServerId;
      op.timeouts += 1;
      op.unanswered = true;
      const committing = this.keepsCommitting(op, target, now);
      const slow = !committing && this.leaderOnlySlow(op, target);
      if (committing || slow) {
        if (slow) op.slowLeaderWaits += 1;
        op.extensions += 1;
        op.waitingSinceMs = now;
        op.deadlineMs = Math.min(
          now + this.attemptWaitMs(op),
          op.firstSentAtMs + limits.clientOperationMsMax,
        );
        if (op.deadlineMs < next) next = op.deadlineMs;
        continue;
      }
      const waited = Math.round(now - (op.attemptSentMs[op.attemptSentMs.length - 1] as number));
      this.abandonAttempt(op, target, `server ${target} did not answer within ${waited} ms`);
    }
    if (next !== Number.POSITIVE_INFINITY) this.armTimeouts(next);
  }

  /**
   * Whether an attempt of `op` at `target` that reached its deadline should wait longer instead
   * of being given up: the cell's writes or linearizable reads were answered by `target` since the
   * attempt was sent (or since its deadline last moved on), so the cell's leader there is
   * committing and the attempt is queued behind other requests. Sending a copy elsewhere, marked
   * `leaderUnresponsive`, would only add a relayed duplicate to the load that made it late. A
   * leader cut off from its followers answers no write, so an attempt there is given up as before
   * and its cell taken over. At most limits.clientAttemptExtensionsMax times per attempt (a request
   * the server dropped unanswered is sent again), and never past the operation's time.
   */
  private keepsCommitting(op: Operation$, target: ServerId, now: number): boolean {
    if (op.extensions >= limits.clientAttemptExtensionsMax) return false;
    if (now - op.firstSentAtMs >= limits.clientOperationMsMax) return false;
    const state = this.cells.get(op.cellKey);
    return state !== undefined && state.committedAt === target && state.committedAtMs > op.waitingSinceMs;
  }

  /**
   * Whether an attempt at the cell's leader that reached its deadline should wait once more,
   * though the cell's writes were not answered there since: that server answered other requests
   * since the attempt was sent (or its deadline last moved on), so it is up and reaches this
   * client; under load an attempt there is late because it is queued. Giving it up would send a
   * copy around the leader, marked `leaderUnresponsive`, for a follower to relay: a duplicate the
   * leader commits and the session drops, on a colony already short of time (with 4,096 writers
   * on 7 servers such copies cost about 11% of the writes/s, docs/BENCHMARK-LOG.md). A leader cut off
   * from its followers is not helped by the wait, so each operation waits so at most
   * limits.clientSlowLeaderWaitsMax times; its next timeout goes around the leader as before.
   */
  private leaderOnlySlow(op: Operation$, target: ServerId): boolean {
    if (op.slowLeaderWaits >= limits.clientSlowLeaderWaitsMax) return false;
    if (this.cells.get(op.cellKey)?.leader !== target) return false;
    return (this.heardMs.get(target) ?? Number.NEGATIVE_INFINITY) >= op.waitingSinceMs;
  }

  /**
   * The connection to a server was lost or refused (a real client's transport tells): every
   * request waiting on it tries another node now instead of at its timeout. Its outcome stays
   * unknown, as after a timeout, and its retry keeps its session and sequence number.
   */
  serverLost(serverId: ServerId): void {
    if (this.closed) return;
    // abandonAttempt only arms a timer: the map does not change while it is walked.
    for (const [id, op] of this.inflight) {
      if (!op.finished && op.currentId === id && op.target === serverId)
        this.abandonAttempt(op, serverId, `the connection to server ${serverId} was lost`);
    }
  }

  /** Gives up the current attempt of `op` at `target`: avoid it for a while, retry after a backoff. */
  private abandonAttempt(op: Operation$, target: ServerId, problem: string): void {
    op.unanswered = true;
    op.lastProblem = problem;
    op.unknownAt = null;
    this.avoid(op.cellKey, target);
    const state = this.cellState(op.cellKey);
    if (state.leader === target) {
      state.leader = null;
      op.leaderUnresponsive = true;
      // Unless the leader has answered anything since this attempt left (it is slow, not cut off),
      // the cell's next requests go around it for a while.
      const sentMs = op.attemptSentMs[op.attemptSentMs.length - 1] ?? 0;
      if ((this.heardMs.get(target) ?? Number.NEGATIVE_INFINITY) < sentMs) {
        const now = this.scheduler.nowMs();
        state.detourFrom = target;
        state.detourSinceMs = now;
        state.detourUntilMs = now + limits.clientLeaderDetourMs;
      }
    }
    this.retryAfterBackoff(op);
  }

  /**
   * Flushes the transport at the end of the turn: the requests a turn sends (the next writes of
   * many callers, issued as their previous ones are answered) then share a frame per server and
   * one write to its socket, instead of a frame and a system call each. A turn that sends very
   * many flushes as it goes, so a frame's batch stays bounded.
   */
  private flushSoon(): void {
    this.unflushed += 1;
    if (this.unflushed >= requestsPerFlushMax) {
      this.flushNow();
      return;
    }
    if (this.unflushed === 1) this.scheduler.defer(() => this.flushNow());
  }

  private flushNow(): void {
    if (this.unflushed === 0) return;
    this.unflushed = 0;
    this.transport.flush();
  }

  /**
   * The leader the cell's requests go around now (CellState.detourFrom), or null: the detour
   * ends after limits.clientLeaderDetourMs, or as soon as that server answers anything.
   */
  private detouring(state: CellState, now: number): ServerId | null {
    const from = state.detourFrom;
    if (from === null) return null;
    if (
      now < state.detourUntilMs &&
      (this.heardMs.get(from) ?? Number.NEGATIVE_INFINITY) < state.detourSinceMs
    )
      return from;
    state.detourFrom = null;
    return null;
  }

  private heard(server: Address): void {
    const heard = this.heardMs;
    if (heard.size >= serversHeardMax && !heard.has(server)) {
      const first = heard.keys().next().value;
      if (first !== undefined) heard.delete(first);
    }
    heard.set(server, this.scheduler.nowMs());
  }

  private pickTarget(op: Operation$): ServerId | null {
    const state = this.cellState(op.cellKey);
    const now = this.scheduler.nowMs();
    const around = this.detouring(state, now);
    // A leader learnt from the cell's answers; placing the cell again would cost more than the
    // request (and a stale leader redirects).
    if (
      op.preferLeader &&
      state.leader !== null &&
      state.leader !== around &&
      (state.avoid.get(state.leader) ?? 0) <= now
    )
      return state.leader;
    const members = this.resolver.members(op.cellKey);
    if (members === null || members.length === 0) return null;
    const usable = members.filter((m) => m !== around && (state.avoid.get(m) ?? 0) <= now);
    const pool = usable.length > 0 ? usable : [...members];
    // Nearest first. Among equally near nodes, the first attempt of an operation for the leader
    // goes where every client that sees the same nodes sends it: the first requests of many
    // clients to a cell with no leader (a fresh colony) then start one election, not a duel of
    // several. Retries, and eventual reads, spread at random.
    let best: ServerId[] = [];
    let bestDistance = Number.POSITIVE_INFINITY;
    for (const member of pool) {
      const d = this.distance(member);
      if (d < bestDistance) {
        bestDistance = d;
        best = [member];
      } else if (d === bestDistance) {
        best.push(member);
      }
    }
    if (op.preferLeader && op.attempts === 0 && best.length > 1) return agreedChoice(op.cellKey, best);
    return this.random.pick(best);
  }

  /** `serverId` if it serves a node of the cell as far as the client knows, else null. */
  private member(cellKey: CellKey, serverId: ServerId): ServerId | null {
    return this.resolver.members(cellKey)?.includes(serverId) ? serverId : null;
  }

  private avoid(cellKey: CellKey, serverId: ServerId): void {
    const state = this.cellState(cellKey);
    state.avoid.set(serverId, this.scheduler.nowMs() + limits.clientBackoffMsMax);
    if (state.avoid.size > limits.membersMax * 4) {
      const oldest = state.avoid.keys().next().value;
      if (oldest !== undefined) state.avoid.delete(oldest);
    }
  }

  private retryAfterBackoff(op: Operation$): void {
    if (op.timer !== null) this.scheduler.clearTimer(op.timer);
    const exponent = Math.min(op.attempts, 10);
    const ceiling = Math.min(limits.clientBackoffMsMax, limits.clientBackoffMsBase * 2 ** exponent);
    const delay = ceiling / 2 + this.random.below(Math.floor(ceiling / 2) + 1);
    op.timer = this.scheduler.setTimer(delay, () => {
      op.timer = null;
      this.attempt(op);
    });
  }

  private onResponse(response: ClientResponse): void {
    const op = this.inflight.get(response.id);
    if (op === undefined) return;
    this.inflight.delete(response.id);
    if (op.finished) return;
    const body = response.body;
    const state = this.cellState(op.cellKey);
    const current = response.id === op.currentId;
    switch (body.type) {
      case "result":
      case "read":
      case "membership":
        this.timeAnswer(op.attemptSentMs[op.attemptIds.indexOf(response.id)] as number);
        if (body.index > state.watermark) state.watermark = body.index;
        if (op.preferLeader && op.target !== null && current) {
          // A relayed answer names the leader, and the next requests go there; but while the
          // client goes around that leader (its server did not answer), to the node that relayed.
          const now = this.scheduler.nowMs();
          const via = response.relayedFrom;
          state.leader =
            via === undefined || via === this.detouring(state, now)
              ? op.target
              : this.member(op.cellKey, via);
          state.committedAt = op.target;
          state.committedAtMs = now;
        }
        this.finish(op, body);
        return;
      case "status":
        this.finish(op, body);
        return;
      case "redirect":
        if (!current) return;
        if (body.members !== null && body.epoch !== null) {
          this.resolver.learned?.(
            op.cellKey,
            body.members.map((m) => m.serverId),
            body.epoch,
          );
        }
        state.leader = body.leader?.serverId ?? null;
        if (state.leader === op.target) state.leader = null;
        op.lastProblem = `redirected by ${op.target} (${body.reason})`;
        op.unknownAt = null;
        op.redirects += 1;
        // Nodes that point at each other while nobody leads: ask the next one to take over.
        if (op.redirects >= 2) op.leaderUnresponsive = true;
        if (op.timer !== null) this.scheduler.clearTimer(op.timer);
        op.timer = null;
        // Follow a redirect at once; back off only when redirects keep coming.
        if (state.leader !== null && op.attempts % 3 !== 0) this.attempt(op);
        else this.retryAfterBackoff(op);
        return;
      case "error":
        if (!current) return;
        switch (body.code) {
          case "invalid":
            this.finish(op, new InvalidRequestError(op.cellKey, body.message));
            return;
          case "stalled":
            this.finish(op, new CellStalledError(op.cellKey, body.message));
            return;
          case "overloaded":
          case "behind":
          case "faulty":
          case "unknown_cell":
            op.lastProblem = `${op.target}: ${body.message}`;
            if (body.code !== "unknown_cell" || op.target === null) op.unknownAt = null;
            else if (op.unknownAt !== null) {
              if (!op.unknownAt.includes(op.target)) op.unknownAt.push(op.target);
              // A majority of the cell's servers do not host it, and no attempt reached a node
              // of it: the cell does not exist (or lost its majority for good). Nothing applied.
              const members = this.resolver.members(op.cellKey) ?? [];
              const hosts = members.filter((m) => !op.unknownAt?.includes(m)).length;
              if (members.length > 0 && hosts < Math.floor(members.length / 2) + 1) {
                this.finish(op, new UnknownCellError(op.cellKey));
                return;
              }
            }
            if (op.target !== null && body.code !== "overloaded") this.avoid(op.cellKey, op.target);
            if (state.leader === op.target && body.code !== "overloaded") state.leader = null;
            this.retryAfterBackoff(op);
            return;
        }
    }
  }

  private finish(op: Operation$, response: ResponseBody | PhysaliaError): void {
    if (op.finished) return;
    op.finished = true;
    if (op.timer !== null) this.scheduler.clearTimer(op.timer);
    op.timer = null;
    this.running.delete(op);
    for (const id of op.attemptIds) this.inflight.delete(id);
    op.attemptIds.length = 0;
    op.attemptSentMs.length = 0;
    op.done(response, op.unanswered);
  }

  private toOutcome<T>(
    cellKey: CellKey,
    response: ResponseBody | PhysaliaError,
    pick: (body: ResponseBody) => T | null,
  ): Outcome<T> {
    if (response instanceof Error) return { ok: false, error: response };
    const value = pick(response);
    if (value === null) {
      return {
        ok: false,
        error: new UnavailableError(cellKey, `unexpected answer of type ${response.type}`),
      };
    }
    const index = "index" in response ? response.index : 0;
    return { ok: true, value, index };
  }
}

/**
 * The node of `nodes` that every client picks for `cellKey`: the first by rendezvous score, as
 * placement ranks servers (src/discovery), so cells spread evenly over their members and the
 * choice does not depend on the order the members are listed in.
 */
export function agreedChoice(cellKey: CellKey, nodes: readonly ServerId[]): ServerId {
  let chosen = nodes[0] as ServerId;
  let lowest = rendezvousScore(cellKey, chosen);
  for (const node of nodes) {
    const score = rendezvousScore(cellKey, node);
    if (score < lowest || (score === lowest && node < chosen)) {
      lowest = score;
      chosen = node;
    }
  }
  return chosen;
}

/** A node's view of its cell, as `describe` answers it. */
export type CellStatus = Extract<ResponseBody, { type: "status" }>["status"];

/** Operations on one cell, as promises. */
export class CellHandle {
  constructor(
    private readonly client: PhysaliaClient,
    readonly cellKey: CellKey,
  ) {}

  /** A transaction: conditions, reads and writes. Read-only transactions are linearizable reads. */
  transact(txn: Transaction): Promise<TxnResult> {
    // Anything but a transaction goes on to be refused by validation, as a rejected promise.
    if (Array.isArray(txn?.writes) && txn.writes.length === 0) return this.read(txn, "linearizable");
    return this.commandTxn(txn);
  }

  /** A read-only transaction with the chosen consistency. */
  read(txn: Transaction, consistency: Consistency = "linearizable"): Promise<TxnResult> {
    return new Promise((resolve, reject) => {
      this.client.read(this.cellKey, txn, consistency, (outcome) =>
        outcome.ok ? resolve(outcome.value) : reject(outcome.error),
      );
    });
  }

  async get(item: string, options: { consistency?: Consistency } = {}): Promise<Value | null> {
    if (typeof options !== "object" || options === null) {
      const detail = `get(item, options): options is an object such as { consistency: "eventual" }, not ${show(options)}`;
      throw new InvalidRequestError(this.cellKey, detail);
    }
    const result = await this.read(
      { conditions: [], reads: [item], writes: [] },
      options.consistency ?? "linearizable",
    );
    if (result.status !== "committed" || result.reads === null) return null;
    return result.reads[0]?.value ?? null;
  }

  async put(item: string, value: Value): Promise<void> {
    expectCommitted(
      this.cellKey,
      await this.commandTxn({ conditions: [], reads: [], writes: [{ item, op: "put", value }] }),
    );
  }

  async delete(item: string): Promise<void> {
    expectCommitted(
      this.cellKey,
      await this.commandTxn({ conditions: [], reads: [], writes: [{ item, op: "delete" }] }),
    );
  }

  /** Atomically add `delta` (a missing item counts as 0n); returns the new value. */
  async add(item: string, delta: bigint): Promise<bigint> {
    const result = expectCommitted(
      this.cellKey,
      await this.commandTxn({ conditions: [], reads: [], writes: [{ item, op: "add", delta }] }),
    );
    if (result.added === null) {
      throw new OutcomeUnknownError(
        this.cellKey,
        "the add was applied once, but its result was too large for the cell to keep for this retry; read the item",
      );
    }
    return result.added[0]?.value ?? 0n;
  }

  acquireLease(name: string, holder: string, durationMs: number): Promise<LeaseResult> {
    return this.lease({ op: "acquire", name, holder, durationMs });
  }

  renewLease(name: string, holder: string, durationMs: number): Promise<LeaseResult> {
    return this.lease({ op: "renew", name, holder, durationMs });
  }

  releaseLease(name: string, holder: string): Promise<LeaseResult> {
    return this.lease({ op: "release", name, holder });
  }

  /**
   * The cell as one of its nodes sees it (the leader if known, else the nearest): members,
   * leader, epoch, applied and committed index, and whether it is stalled. Needs no quorum.
   */
  describe(): Promise<CellStatus> {
    return new Promise((resolve, reject) => {
      this.client.request(this.cellKey, { type: "describe" }, (outcome) => {
        if (!outcome.ok) return reject(outcome.error);
        const body = outcome.value;
        if (body.type === "status") return resolve(body.status);
        reject(new UnavailableError(this.cellKey, `a node answered describe with ${body.type}`));
      });
    });
  }

  private lease(lease: LeaseOp): Promise<LeaseResult> {
    return new Promise((resolve, reject) => {
      this.client.command(this.cellKey, { type: "lease", lease }, (outcome) => {
        if (!outcome.ok) return reject(outcome.error);
        const result = outcome.value;
        if (result.kind === "lease") return resolve(result.result);
        reject(unexpectedResult(this.cellKey, result));
      });
    });
  }

  private commandTxn(txn: Transaction): Promise<TxnResult> {
    return new Promise((resolve, reject) => {
      this.client.command(this.cellKey, { type: "txn", txn }, (outcome) => {
        if (!outcome.ok) return reject(outcome.error);
        const result = outcome.value;
        if (result.kind === "txn") return resolve(result.result);
        reject(unexpectedResult(this.cellKey, result));
      });
    });
  }
}

function expectCommitted(cellKey: CellKey, result: TxnResult): Extract<TxnResult, { status: "committed" }> {
  if (result.status === "committed") return result;
  if (result.status === "rejected")
    throw new InvalidRequestError(cellKey, `${result.reason}: ${result.detail}`);
  throw new InvalidRequestError(cellKey, `condition ${result.condition} did not hold`);
}

/** A write refused (nothing applied) after an earlier copy of it went unanswered: it may apply yet. */
function unansweredCopyError(cellKey: CellKey, refusal: ResponseBody | PhysaliaError): OutcomeUnknownError {
  const refused =
    refusal instanceof Error
      ? refusal.message
      : `the cell already remembers ${limits.sessionsPerCellMax} client sessions, so this write was refused`;
  return new OutcomeUnknownError(
    cellKey,
    `${refused}; an earlier copy of it went unanswered and may still apply`,
  );
}

function unexpectedResult(cellKey: CellKey, result: CommandResult): PhysaliaError {
  switch (result.kind) {
    case "session_expired":
      return new OutcomeUnknownError(cellKey, "the cell no longer remembers this client's session");
    case "sessions_full":
      return new UnavailableError(
        cellKey,
        `the cell already remembers ${limits.sessionsPerCellMax} client sessions, each used within the last ` +
          `${limits.sessionRetentionMs / 1000} s (every SDK client that writes to the cell opens one, and so do ` +
          "CLI commands that find no session kept from an earlier one); nothing was applied: retry in a minute, " +
          "or write through fewer clients (one SDK client, kept open)",
      );
    default:
      return new UnavailableError(cellKey, `unexpected result ${result.kind}`);
  }
}
