/** Identifiers of the glossary (docs/PROTOCOL.md section 1). */
import { utf8Length } from "./codec.ts";
import { limits } from "./limits.ts";

/** The partition key that names a cell. */
export type CellKey = string;
/** A server of the colony, e.g. "s3". */
export type ServerId = string;
/** Where a message goes: a server id or a client's address. */
export type Address = string;

/** A node: one member of one cell on one server, in one incarnation. */
export interface NodeId {
  readonly serverId: ServerId;
  /** Minted fresh each time the cell is placed on a server; unique within the cell. */
  readonly incarnation: number;
}

export function nodeIdEquals(a: NodeId, b: NodeId): boolean {
  // Numbers first: incarnations differ far more often than they match, and comparing them reads
  // no strings.
  return a === b || (a.incarnation === b.incarnation && a.serverId === b.serverId);
}

export function formatNodeId(node: NodeId): string {
  return `${node.serverId}#${node.incarnation}`;
}

/** A UTF-16 surrogate not part of a pair (in `u` mode a pair is one code point, not matched). */
const loneSurrogate = /\p{Surrogate}/u;

/** Why a cell key is unacceptable, or null if it is fine. */
export function cellKeyProblem(key: string): string | null {
  if (key.length === 0) return "a cell key must not be empty";
  if (utf8Length(key) > limits.cellKeyBytesMax) {
    return `cell key of ${utf8Length(key)} bytes exceeds the limit of ${limits.cellKeyBytesMax}`;
  }
  // Stored and sent as UTF-8, where a lone surrogate would become U+FFFD: another cell's key.
  if (loneSurrogate.test(key))
    return "a cell key must be Unicode text: it holds an unpaired UTF-16 surrogate";
  return null;
}

/**
 * Orders two strings as their UTF-8 bytes compare (code point order): the order servers list
 * their cells in. JavaScript's `<` compares UTF-16 code units instead, which puts characters past
 * U+FFFF (surrogate pairs) before U+E000-U+FFFF.
 */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xSurrogate = x >= 0xd800 && x <= 0xdfff;
    const ySurrogate = y >= 0xd800 && y <= 0xdfff;
    if (xSurrogate !== ySurrogate && (xSurrogate ? y : x) >= 0xe000) return xSurrogate ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}
