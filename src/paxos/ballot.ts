/**
 * Ballots are (round, proposer incarnation), ordered lexicographically, packed into one safe
 * integer so they compare with `<`. Incarnations are unique within a cell, so two proposers
 * never share a ballot.
 */
import { assert } from "../core/index.ts";

export type Ballot = number;

const INCARNATION_BITS = 2 ** 20;
/** No ballot promised or accepted yet. */
export const BALLOT_NONE: Ballot = 0;
/** Marks a log entry known to be chosen; higher than any real ballot. */
export const BALLOT_CHOSEN: Ballot = Number.MAX_SAFE_INTEGER;
export const INCARNATION_MAX = INCARNATION_BITS - 1;
export const ROUND_MAX = Math.floor(Number.MAX_SAFE_INTEGER / INCARNATION_BITS) - 1;

export function makeBallot(round: number, incarnation: number): Ballot {
  assert(
    Number.isInteger(round) && round >= 1 && round <= ROUND_MAX,
    () => `ballot round out of range: ${round}`,
  );
  assert(
    Number.isInteger(incarnation) && incarnation >= 1 && incarnation <= INCARNATION_MAX,
    () => `incarnation out of range: ${incarnation}`,
  );
  return round * INCARNATION_BITS + incarnation;
}

/**
 * Why `ballot` cannot be one, or null: BALLOT_NONE, BALLOT_CHOSEN and what makeBallot can make
 * are ballots. Decoders refuse the rest, so a peer's bad number never reaches a replica.
 */
export function ballotProblem(ballot: number): string | null {
  if (ballot === BALLOT_NONE || ballot === BALLOT_CHOSEN) return null;
  if (!Number.isSafeInteger(ballot) || ballot < 0) return `ballot ${ballot} is not a ballot`;
  const round = ballotRound(ballot);
  const incarnation = ballotIncarnation(ballot);
  if (round < 1 || round > ROUND_MAX) return `ballot ${ballot} has round ${round}, out of 1 to ${ROUND_MAX}`;
  if (incarnation < 1) return `ballot ${ballot} names no incarnation`;
  return null;
}

export function ballotRound(ballot: Ballot): number {
  return Math.floor(ballot / INCARNATION_BITS);
}

export function ballotIncarnation(ballot: Ballot): number {
  return ballot % INCARNATION_BITS;
}

export function formatBallot(ballot: Ballot): string {
  if (ballot === BALLOT_NONE) return "none";
  if (ballot === BALLOT_CHOSEN) return "chosen";
  return `${ballotRound(ballot)}.${ballotIncarnation(ballot)}`;
}
