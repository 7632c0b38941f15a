/**
 * Bounds of the TCP transport. They sit in this folder rather than in core/limits.ts because the
 * transport reaches core only through core/index.ts, which exports the core table alone; the
 * message size bound itself comes from the core table, so a message the protocol may build always
 * fits in a frame. The relations between bounds are asserted at load, and again for the overrides
 * a transport is constructed with.
 */
import { assert, limits } from "../core/index.ts";

export const transportLimits = Object.freeze({
  // ---- frames
  /** Bytes of one frame on the wire, length prefix and authentication tag included. */
  frameBytesMax: 4 * 1024 * 1024,
  /** Messages in one frame. */
  frameMessagesMax: 16_384,
  /** Encoded bytes of one message (the core bound: a message carries a full pipeline). */
  messageBytesMax: limits.messageBytesMax,
  /** UTF-8 bytes of an address named in a frame. */
  addressBytesMax: 256,

  // ---- queues
  /**
   * Payload bytes queued for one peer while its connection is down or its socket is full. Past
   * this the oldest frames are dropped: the protocol retransmits, and a newer message is worth
   * more than an older one.
   */
  peerQueueBytesMax: 8 * 1024 * 1024,
  /**
   * Payload bytes queued for all peers together. Past this the peer with the most queued (most
   * likely one that stopped reading) loses its queue, so a few such peers cannot hold
   * peerQueueBytesMax each for thousands of connections.
   */
  queuedBytesMax: 256 * 1024 * 1024,
  /**
   * Bytes of partly received frames held for all connections together (each holds at most one
   * frame). Past this the connection holding the most is closed, so many peers that each send a
   * large frame's first bytes and stall cannot hold frameBytesMax each.
   */
  receiveBufferedBytesMax: 256 * 1024 * 1024,
  /**
   * Bytes written to connections whose sockets stopped taking them (each holds at most its
   * socket's high-water mark and one frame), for all connections together. Past this the
   * connection holding the most is closed, so many peers that stop reading cannot hold
   * frameBytesMax each in their sockets beside what is queued for them.
   */
  sendBufferedBytesMax: 256 * 1024 * 1024,
  /**
   * Bytes read from all connections together in one turn of the event loop. Past this every
   * connection stops reading until the next turn, after the receiver has handled what arrived,
   * so a burst from many peers cannot fill the receiver's inbox with more than this and one
   * read per connection (TCP's flow control holds the rest at the senders).
   */
  turnReceiveBytesMax: 64 * 1024 * 1024,
  /** A queued frame older than this is dropped rather than sent: its content is stale. */
  peerQueueAgeMsMax: 10_000,
  /** Messages accepted by `send` between two flushes. */
  turnMessagesMax: 262_144,
  /** Peers with a connection, a dial or queued frames at once. */
  peersMax: 16_384,

  // ---- connections
  /** Accepted connections open at once; further connections are closed on arrival. */
  connectionsAcceptedMax: 8_192,
  /** Dials in progress at once; further dials wait for a backoff delay. */
  dialsPendingMax: 256,
  /** A dial that has not connected after this is abandoned. */
  dialTimeoutMs: 3_000,
  /** A connection whose peer has not sent an authenticated hello after this is closed. */
  helloTimeoutMs: 5_000,
  /** A connection being retired (a duplicate) is destroyed if the peer has not closed it after this. */
  retireGraceMs: 2_000,
  /** Rejected frames a connection may send after its hello before it is closed. */
  badFramesPerConnectionMax: 16,
  /** Reconnect backoff: the delay doubles from min up to max, then a random part is taken off. */
  reconnectDelayMsMin: 20,
  reconnectDelayMsMax: 2_000,

  // ---- logging
  /** Warnings passed to the logger per second; the rest are counted, so a hostile peer cannot flood the log. */
  warningsPerSecondMax: 20,
});

/** The shape of the bounds, with plain numbers so a transport can be built with overrides. */
export type TransportLimits = { readonly [K in keyof typeof transportLimits]: number };

/** Bytes of an unsigned integer as a LEB128 varint. */
export function varintBytes(value: number): number {
  let bytes = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 0x80);
    bytes += 1;
  }
  return bytes;
}

/** Tag length of HMAC-SHA256. */
export const frameTagBytes = 32;
/** Bytes of the big-endian length prefix. */
export const framePrefixBytes = 4;
/** Varint bytes of the largest sequence number (2^53 - 1). */
const sequenceBytesMax = 8;

/** Bytes of a frame around its messages, for a sender address of `addressBytes`. */
export function frameOverheadBytes(bounds: TransportLimits, addressBytes: number): number {
  return (
    framePrefixBytes +
    1 + // version
    varintBytes(addressBytes) +
    addressBytes +
    sequenceBytesMax +
    varintBytes(bounds.frameMessagesMax) +
    frameTagBytes
  );
}

/** Why a set of transport bounds is inconsistent, or null if it is fine. */
export function transportLimitsProblem(bounds: TransportLimits): string | null {
  for (const [name, value] of Object.entries(bounds)) {
    if (!Number.isSafeInteger(value) || value <= 0)
      return `transport limit ${name} must be a positive integer, got ${value}`;
  }
  const largestMessageFrame =
    frameOverheadBytes(bounds, bounds.addressBytesMax) +
    varintBytes(bounds.messageBytesMax) +
    bounds.messageBytesMax;
  if (bounds.frameBytesMax < largestMessageFrame)
    return `frameBytesMax ${bounds.frameBytesMax} cannot hold one message of messageBytesMax ${bounds.messageBytesMax} (needs ${largestMessageFrame})`;
  if (bounds.frameBytesMax - framePrefixBytes > 0xffff_ffff)
    return `frameBytesMax ${bounds.frameBytesMax} does not fit a 4-byte length prefix`;
  if (bounds.peerQueueBytesMax < bounds.frameBytesMax)
    return `peerQueueBytesMax ${bounds.peerQueueBytesMax} must hold at least one frame of frameBytesMax ${bounds.frameBytesMax}`;
  if (bounds.queuedBytesMax < bounds.peerQueueBytesMax)
    return `queuedBytesMax ${bounds.queuedBytesMax} must hold at least one peer's queue of peerQueueBytesMax ${bounds.peerQueueBytesMax}`;
  if (bounds.receiveBufferedBytesMax < 2 * bounds.frameBytesMax)
    return `receiveBufferedBytesMax ${bounds.receiveBufferedBytesMax} must hold at least two frames of frameBytesMax ${bounds.frameBytesMax}`;
  if (bounds.turnReceiveBytesMax < bounds.frameBytesMax)
    return `turnReceiveBytesMax ${bounds.turnReceiveBytesMax} must hold at least one frame of frameBytesMax ${bounds.frameBytesMax}`;
  if (bounds.sendBufferedBytesMax < 2 * bounds.frameBytesMax)
    return `sendBufferedBytesMax ${bounds.sendBufferedBytesMax} must hold at least two frames of frameBytesMax ${bounds.frameBytesMax}`;
  if (bounds.reconnectDelayMsMax < bounds.reconnectDelayMsMin * 2)
    return `reconnectDelayMsMax ${bounds.reconnectDelayMsMax} must be at least twice reconnectDelayMsMin ${bounds.reconnectDelayMsMin} so backoff can grow`;
  if (bounds.messageBytesMax > limits.messageBytesMax)
    return `messageBytesMax ${bounds.messageBytesMax} exceeds the protocol's ${limits.messageBytesMax}`;
  return null;
}

assert(transportLimitsProblem(transportLimits) === null, () =>
  String(transportLimitsProblem(transportLimits)),
);
assert(
  transportLimits.messageBytesMax >= limits.messageBytesMax,
  "every message the protocol may build fits in a frame",
);
