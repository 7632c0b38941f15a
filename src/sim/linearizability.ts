/**
 * Linearizability checker for client histories: Wing & Gong's backtracking search with Lowe's
 * memoization, as in Porcupine (github.com/anishathalye/porcupine, `checker.go`).
 *
 * The search walks a doubly-linked list of call and return events sorted by time. At a call it
 * tries to linearize the operation now: if the model accepts the operation's result in the
 * current state and the pair (set of linearized operations, resulting state) has not been seen
 * before, the operation is lifted out of the list (call and return) and the search restarts at
 * the head. At a return event the operation could not be linearized in time: the search pops the
 * last linearized operation, puts it back into the list (unlift) and tries the next candidate
 * after it. The history is linearizable when every completed operation has been linearized; it
 * is not when the search has to backtrack with nothing left to undo.
 *
 * P-compositionality is the caller's business: partition a history per cell (per independent
 * object) and check each part on its own. The search is exponential in the worst case, so it is
 * bounded by `maxSteps` and answers "unknown" when the budget runs out.
 *
 * Pure: no clock, no randomness, no I/O.
 */
import { assert, fmix32, fnv1a } from "../core/index.ts";

export interface HistoryOperation<I, O> {
  /** Unique within the history. */
  readonly id: number;
  readonly client: number;
  readonly input: I;
  /** Invocation time (a global simulated time). */
  readonly callMs: number;
  /** null: the operation timed out / never returned (open-ended). */
  readonly returnMs: number | null;
  /** undefined when returnMs is null. */
  readonly output: O | undefined;
}

export interface Model<S, I, O> {
  init(): S;
  /**
   * Apply input to state; return the next state if `output` is a legal result, else null. For an
   * open operation output is undefined: any result is legal.
   */
  step(state: S, input: I, output: O | undefined): S | null;
  /** A string key identifying the state, for memoization (equal states -> equal keys). */
  key(state: S): string;
  /** One line naming an operation, for explanations. */
  describe?(input: I, output: O | undefined): string;
  /** One line naming a state, for explanations; the key (shortened) is used without it. */
  describeState?(state: S): string;
}

export type CheckResult =
  | { readonly status: "ok"; readonly operations: number }
  | {
      readonly status: "violation";
      readonly operations: number;
      readonly explanation: string;
      /** Op ids of the longest linearizable prefix found, in linearization order. */
      readonly longestPrefix: readonly number[];
    }
  /** The search budget ran out before an answer. */
  | { readonly status: "unknown"; readonly operations: number; readonly reason: string };

export interface CheckOptions {
  /** Bound on search steps (one step = one visit of a list event). */
  readonly maxSteps?: number;
}

export const CHECK_STEPS_MAX_DEFAULT = 5_000_000;

/** Pending operations listed in an explanation before "and N more". */
const EXPLANATION_CANDIDATES_MAX = 6;
/** Characters of a state description or operation description in an explanation. */
const EXPLANATION_TEXT_CHARS_MAX = 200;

/**
 * Checks that `history` is linearizable with respect to `model`.
 *
 * Time semantics:
 * - An operation takes effect at one instant strictly inside [callMs, returnMs]; two operations
 *   are ordered in real time only when one returns strictly before the other is called.
 * - Equal timestamps: an operation that returns at t and another called at t are NOT ordered;
 *   they are treated as concurrent. The event list therefore puts calls before returns at equal
 *   times. This is the conservative choice for a checker: it admits more linearizations, so a
 *   reported violation is never an artifact of timestamp resolution (simulated clocks readily
 *   produce equal times), at the price of possibly missing a violation that hinges on ordering
 *   two events that share a millisecond.
 * - Open operations (returnMs null) return at +infinity: they may take effect at any point
 *   after their call, or never (linearizing them last is always allowed, and an operation that
 *   never returned may also have been lost). So they have no return event, and the search
 *   succeeds as soon as every completed operation is linearized.
 */
export function checkLinearizable<S, I, O>(
  history: readonly HistoryOperation<I, O>[],
  model: Model<S, I, O>,
  options?: CheckOptions,
): CheckResult {
  const maxSteps = options?.maxSteps ?? CHECK_STEPS_MAX_DEFAULT;
  assert(
    Number.isSafeInteger(maxSteps) && maxSteps > 0,
    () => `maxSteps must be a positive integer: ${maxSteps}`,
  );
  const operations = history.length;
  validateHistory(history);
  if (operations === 0) return { status: "ok", operations };

  const list = buildEventList(history);
  const head = list.head;
  let completedRemaining = list.completed;

  const linearized = new OperationBitset(operations);
  const cache = new LinearizationCache();
  /** Backtracking stack: the linearized call events and the states before them. */
  const stack: { readonly event: CallEvent<I, O>; readonly stateBefore: S }[] = [];
  let state = model.init();

  let longestPrefix: number[] | null = null;
  let stuck: StuckPoint<S> | null = null;

  let deepest = 0;
  let steps = 0;
  let event: ListEvent<I, O> | null = head.next;
  while (completedRemaining > 0) {
    steps++;
    if (steps > maxSteps) {
      return {
        status: "unknown",
        operations,
        reason:
          `search budget of ${maxSteps} steps exhausted after linearizing at most ` +
          `${deepest} of ${operations} operations (${cache.size} cached configurations); ` +
          "raise maxSteps or check a shorter history",
      };
    }
    assert(event !== null, "a completed operation's return event must stop the scan");
    if (event.kind === "call") {
      const next = model.step(state, event.operation.input, event.operation.output);
      if (next !== null) {
        linearized.set(event.index);
        if (cache.add(linearized, model.key(next))) {
          stack.push({ event, stateBefore: state });
          if (stack.length > deepest) deepest = stack.length;
          state = next;
          lift(event);
          if (event.match !== null) completedRemaining--;
          event = head.next;
          continue;
        }
        linearized.clear(event.index);
      }
      event = event.next;
    } else {
      // The operation returning here cannot be linearized after the current prefix: backtrack.
      if (longestPrefix === null || stack.length > longestPrefix.length) {
        longestPrefix = stack.map((entry) => entry.event.operation.id);
        stuck = { returningIndex: event.call.index, state, candidates: pendingCalls(head, event) };
      }
      const top = stack.pop();
      if (top === undefined) {
        assert(longestPrefix !== null && stuck !== null, "a dead end was recorded");
        return {
          status: "violation",
          operations,
          explanation: explain(model, history, longestPrefix, stuck),
          longestPrefix,
        };
      }
      state = top.stateBefore;
      linearized.clear(top.event.index);
      unlift(top.event);
      if (top.event.match !== null) completedRemaining++;
      event = top.event.next;
    }
  }
  return { status: "ok", operations };
}

// ---- history validation and the event list

function validateHistory<I, O>(history: readonly HistoryOperation<I, O>[]): void {
  const ids = new Set<number>();
  for (const operation of history) {
    assert(!ids.has(operation.id), () => `operation id ${operation.id} appears twice in the history`);
    ids.add(operation.id);
    assert(Number.isFinite(operation.callMs), () => `operation ${operation.id}: callMs ${operation.callMs}`);
    if (operation.returnMs === null) {
      assert(
        operation.output === undefined,
        () => `operation ${operation.id} never returned but has an output`,
      );
    } else {
      assert(
        Number.isFinite(operation.returnMs) && operation.returnMs >= operation.callMs,
        () =>
          `operation ${operation.id} returns at ${operation.returnMs} before its call at ${operation.callMs}`,
      );
    }
  }
}

interface CallEvent<I, O> {
  readonly kind: "call";
  readonly operation: HistoryOperation<I, O>;
  /** Position of the operation in the history: its bit in the linearized set. */
  readonly index: number;
  /** The return event; null for an open operation. Set once, while the list is built. */
  match: ReturnEvent<I, O> | null;
  prev: ListNode<I, O>;
  next: ListEvent<I, O> | null;
}

interface ReturnEvent<I, O> {
  readonly kind: "return";
  readonly call: CallEvent<I, O>;
  prev: ListNode<I, O>;
  next: ListEvent<I, O> | null;
}

interface HeadNode<I, O> {
  readonly kind: "head";
  next: ListEvent<I, O> | null;
}

type ListEvent<I, O> = CallEvent<I, O> | ReturnEvent<I, O>;
type ListNode<I, O> = ListEvent<I, O> | HeadNode<I, O>;

function buildEventList<I, O>(
  history: readonly HistoryOperation<I, O>[],
): { head: HeadNode<I, O>; completed: number } {
  const timed: { timeMs: number; event: ListEvent<I, O> }[] = [];
  let completed = 0;
  const head: HeadNode<I, O> = { kind: "head", next: null };
  history.forEach((operation, index) => {
    const call: CallEvent<I, O> = {
      kind: "call",
      operation,
      index,
      match: null,
      prev: head,
      next: null,
    };
    if (operation.returnMs !== null) {
      const returned: ReturnEvent<I, O> = { kind: "return", call, prev: head, next: null };
      call.match = returned;
      timed.push({ timeMs: operation.returnMs, event: returned });
      completed++;
    }
    timed.push({ timeMs: operation.callMs, event: call });
  });
  // By time; at equal times calls first (concurrent, see checkLinearizable); then by history
  // position so the order never depends on the sort's stability.
  timed.sort((a, b) => {
    if (a.timeMs !== b.timeMs) return a.timeMs - b.timeMs;
    if (a.event.kind !== b.event.kind) return a.event.kind === "call" ? -1 : 1;
    return eventIndex(a.event) - eventIndex(b.event);
  });
  let previous: ListNode<I, O> = head;
  for (const { event } of timed) {
    event.prev = previous;
    previous.next = event;
    previous = event;
  }
  return { head, completed };
}

function eventIndex<I, O>(event: ListEvent<I, O>): number {
  return event.kind === "call" ? event.index : event.call.index;
}

/** Removes a call event and its return event from the list. */
function lift<I, O>(call: CallEvent<I, O>): void {
  call.prev.next = call.next;
  if (call.next !== null) call.next.prev = call.prev;
  const returned = call.match;
  if (returned !== null) {
    returned.prev.next = returned.next;
    if (returned.next !== null) returned.next.prev = returned.prev;
  }
}

/** Puts a lifted call event (and its return event) back where they were. Exact inverse of lift. */
function unlift<I, O>(call: CallEvent<I, O>): void {
  const returned = call.match;
  if (returned !== null) {
    returned.prev.next = returned;
    if (returned.next !== null) returned.next.prev = returned;
  }
  call.prev.next = call;
  if (call.next !== null) call.next.prev = call;
}

/** The call events before `stop`: the operations pending (called, not linearized) at that point. */
function pendingCalls<I, O>(head: HeadNode<I, O>, stop: ListEvent<I, O>): number[] {
  const indexes: number[] = [];
  for (let event = head.next; event !== null && event !== stop; event = event.next) {
    if (event.kind === "call") indexes.push(event.index);
  }
  return indexes;
}

// ---- the linearized set and the memo of visited configurations

/**
 * A fixed-size set of operation indexes in 32-bit words, with an order-independent hash kept up
 * to date on every change (XOR of a mixed word per member, Zobrist style), so hashing is O(1).
 */
export class OperationBitset {
  readonly words: Uint32Array;
  private hashValue = 0;

  constructor(readonly size: number) {
    this.words = new Uint32Array(Math.ceil(size / 32));
  }

  has(index: number): boolean {
    return ((this.words[index >>> 5] as number) & (1 << (index & 31))) !== 0;
  }

  set(index: number): void {
    assert(
      index >= 0 && index < this.size && !this.has(index),
      () => `bitset: set ${index} twice or out of range`,
    );
    this.words[index >>> 5] = (this.words[index >>> 5] as number) | (1 << (index & 31));
    this.hashValue ^= memberHash(index);
  }

  clear(index: number): void {
    assert(index >= 0 && index < this.size && this.has(index), () => `bitset: clear ${index} not set`);
    this.words[index >>> 5] = (this.words[index >>> 5] as number) & ~(1 << (index & 31));
    this.hashValue ^= memberHash(index);
  }

  hash(): number {
    return this.hashValue >>> 0;
  }

  equalsWords(words: Uint32Array): boolean {
    const own = this.words;
    if (own.length !== words.length) return false;
    for (let i = 0; i < own.length; i++) if (own[i] !== words[i]) return false;
    return true;
  }
}

/** A well-spread word per member. */
function memberHash(index: number): number {
  return fmix32(Math.imul(index + 1, 0x9e3779b9));
}

/** Configurations (linearized set, state key) already explored: Lowe's memoization. */
class LinearizationCache {
  private readonly buckets = new Map<number, { readonly words: Uint32Array; readonly stateKey: string }[]>();
  size = 0;

  /** Adds the configuration; false when it was already present. */
  add(linearized: OperationBitset, stateKey: string): boolean {
    const hash = (linearized.hash() ^ Math.imul(fnv1a(stateKey), 0x27d4eb2d)) >>> 0;
    let bucket = this.buckets.get(hash);
    if (bucket === undefined) {
      bucket = [];
      this.buckets.set(hash, bucket);
    } else {
      for (const entry of bucket) {
        if (entry.stateKey === stateKey && linearized.equalsWords(entry.words)) return false;
      }
    }
    bucket.push({ words: linearized.words.slice(), stateKey });
    this.size++;
    return true;
  }
}

// ---- explanations

interface StuckPoint<S> {
  /** History index of the completed operation whose return the search could not pass. */
  readonly returningIndex: number;
  /** The state after the longest prefix. */
  readonly state: S;
  /** History indexes of the operations pending at that point (including `returning`). */
  readonly candidates: readonly number[];
}

function explain<S, I, O>(
  model: Model<S, I, O>,
  history: readonly HistoryOperation<I, O>[],
  longestPrefix: readonly number[],
  stuck: StuckPoint<S>,
): string {
  const byId = new Map(history.map((operation) => [operation.id, operation]));
  const returning = history[stuck.returningIndex];
  assert(returning !== undefined, "stuck operation is in the history");
  const lastId = longestPrefix[longestPrefix.length - 1];
  const last = lastId === undefined ? undefined : byId.get(lastId);
  const stateText = shorten(model.describeState ? model.describeState(stuck.state) : model.key(stuck.state));
  const others = stuck.candidates.filter((index) => index !== stuck.returningIndex);
  const listed = others.slice(0, EXPLANATION_CANDIDATES_MAX).map((index) => {
    const operation = history[index];
    assert(operation !== undefined, "candidate is in the history");
    return describeOperation(model, operation);
  });
  if (others.length > listed.length) listed.push(`and ${others.length - listed.length} more`);
  const blocked =
    others.length === 0
      ? "but its result is not legal in that state"
      : `but neither it nor any order of the ${others.length} other pending operation(s) makes its result legal: ` +
        listed.join("; ");
  return (
    `not linearizable: the longest linearizable prefix found has ${longestPrefix.length} of ` +
    `${history.length} operations` +
    (last === undefined ? "" : `, ending with ${describeOperation(model, last)}`) +
    `; then, in state {${stateText}}, ${describeOperation(model, returning)} must take effect before it ` +
    `returns at ${returning.returnMs}ms, ${blocked}`
  );
}

function describeOperation<S, I, O>(model: Model<S, I, O>, operation: HistoryOperation<I, O>): string {
  const text = model.describe
    ? model.describe(operation.input, operation.output)
    : `${stringify(operation.input)} -> ${operation.returnMs === null ? "?" : stringify(operation.output)}`;
  const returned = operation.returnMs === null ? "open" : `${operation.returnMs}`;
  return `#${operation.id} (client ${operation.client}, ${operation.callMs}..${returned}ms) ${shorten(text)}`;
}

function stringify(value: unknown): string {
  if (value === undefined) return "undefined";
  return JSON.stringify(value, (_key, inner: unknown) => (typeof inner === "bigint" ? `${inner}n` : inner));
}

function shorten(text: string): string {
  return text.length <= EXPLANATION_TEXT_CHARS_MAX
    ? text
    : `${text.slice(0, EXPLANATION_TEXT_CHARS_MAX - 3)}...`;
}
