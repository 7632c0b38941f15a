/**
 * What the replica needs from the state machine it replicates. The cell (src/cell) implements
 * it; the replica never interprets commands itself.
 */
export interface ApplyContext {
  /** Log slot of the entry that carries the command. */
  readonly index: number;
  /** The proposer's clock reading stamped into the entry (ms). Never the local clock. */
  readonly stampMs: number;
  /** The ballot the stamp was taken under; stamps of different ballots come from different clocks. */
  readonly stampBallot: number;
}

export interface StateMachine<C, R> {
  /**
   * Why this build cannot apply the command (e.g. an unknown operation format version), or null.
   * A non-null answer stalls the cell at that entry: it is never skipped.
   */
  unsupported(command: C): string | null;
  /** Apply one committed command. Total and deterministic: never throws for any command. */
  apply(command: C, context: ApplyContext): R;
  /** Canonical bytes of the whole state. */
  snapshot(): Uint8Array;
  /** Replace the state with a snapshot taken by `snapshot()`; throws DecodeError on bad bytes. */
  restore(snapshot: Uint8Array): void;
  /** Encoded size of a command, for batch limits. */
  commandBytes(command: C): number;
}
