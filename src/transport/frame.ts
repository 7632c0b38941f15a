/**
 * The frame: the unit the TCP transport writes. On the wire:
 *
 *   u32 big-endian length of what follows
 *   u8 version
 *   varint address length, UTF-8 sender address
 *   varint sequence number (per connection; 0 is the hello)
 *   varint message count, then per message: varint length, payload bytes
 *   32-byte HMAC-SHA256 over every byte before it (prefix included), keyed with a link key
 *
 * Link keys are derived from the colony key, one per kind of connection (`linkKey`): frames
 * between two servers are tagged with the servers' link key, frames on a client's connection
 * (either way) with the clients' link key. A client can be given the clients' link key alone
 * (its "client key"): it then talks to servers as a client, but cannot tag a frame that names a
 * server as its sender, so it cannot pose as one. The receiver picks the key by the sender the
 * frame names, before it checks the tag.
 *
 * Decoding treats its input as hostile: it checks the size bounds while walking the structure
 * (cheap, no allocation), then the tag in constant time, and only then hands the messages out (as
 * views of the frame). Bad input is an expected outcome, so it returns a tagged result and never
 * throws.
 *
 * The tag is HMAC-SHA256 (RFC 2104) computed as two one-shot hashes, H(K^opad || H(K^ipad ||
 * bytes)), with the padded key blocks prepared once. `createHmac` would make a native object per
 * frame, and the young-generation collector pays for every such object it finds dead (about 1 ms
 * per collection on a busy server, on top of the copying): one-shot hashes make none, and cost
 * less than a third of the CPU for a small frame.
 */
import { createHmac, hash, timingSafeEqual } from "node:crypto";
import { type Address, assert, utf8Encode } from "../core/index.ts";
import {
  frameOverheadBytes,
  framePrefixBytes,
  frameTagBytes,
  type TransportLimits,
  transportLimits,
  varintBytes,
} from "./limits.ts";

/** 2 since frames are tagged with link keys (1 tagged every frame with the colony key itself). */
export const frameVersion = 2;
/** Shortest colony key accepted: HMAC-SHA256 is only as strong as its key, up to its block. */
export const colonyKeyBytesMin = 32;
/** Keys an endpoint accepts at once: two while the colony key is rotated. */
export const colonyKeysMax = 2;

export interface Frame {
  readonly sender: Address;
  /** Per connection, strictly increasing; the hello is 0. */
  readonly sequence: number;
  readonly messages: readonly Uint8Array[];
}

export type FrameRejection = "oversized" | "malformed" | "unauthenticated" | "unsupported-version";

export type FrameDecodeResult =
  /** `otherKey`: the frame was tagged with an accepted key other than the signing one. */
  | { readonly ok: true; readonly frame: Frame; readonly otherKey: boolean }
  | { readonly ok: false; readonly reason: FrameRejection; readonly detail: string };

/** SHA-256's block: the HMAC key pads are one block each. */
const hashBlockBytes = 64;

/** One key, prepared once: its HMAC pads, and the buffers tags are computed in. */
class HmacKey {
  /** The key XOR ipad, then the bytes to tag (decoding copies them here). Grows by doubling, so to less than twice the largest frame verified. */
  private inner: Buffer;
  /** The key XOR opad, then the inner digest. */
  private readonly outer = Buffer.alloc(hashBlockBytes + frameTagBytes);
  private readonly expected = Buffer.alloc(frameTagBytes);

  constructor(key: Uint8Array) {
    const block = Buffer.alloc(hashBlockBytes);
    block.set(key.length > hashBlockBytes ? hash("sha256", key, "buffer") : key);
    this.inner = Buffer.alloc(hashBlockBytes + 1024);
    for (let i = 0; i < hashBlockBytes; i++) {
      this.inner[i] = (block[i] as number) ^ 0x36;
      this.outer[i] = (block[i] as number) ^ 0x5c;
    }
  }

  /** Writes the inner pad into target[0, 64): the bytes after it can then be tagged in place. */
  padInto(target: Buffer): void {
    this.inner.copy(target, 0, 0, hashBlockBytes);
  }

  /** The tag of padded[64, end), where padded starts with padInto's block, written at target[offset]. */
  tagPadded(padded: Buffer, end: number, target: Buffer, offset: number): void {
    const innerDigest = hash("sha256", padded.subarray(0, end), "binary");
    this.outer.write(innerDigest, hashBlockBytes, "latin1");
    target.write(hash("sha256", this.outer, "binary"), offset, "latin1");
  }

  /** Whether `tag` is the tag of `bytes`, compared in constant time. */
  verify(bytes: Uint8Array, tag: Uint8Array): boolean {
    const end = hashBlockBytes + bytes.length;
    if (this.inner.length < end) {
      const grown = Buffer.alloc(Math.max(end, this.inner.length * 2));
      this.inner.copy(grown, 0, 0, hashBlockBytes);
      this.inner = grown;
    }
    this.inner.set(bytes, hashBlockBytes);
    this.tagPadded(this.inner, end, this.expected, 0);
    return tag.length === frameTagBytes && timingSafeEqual(this.expected, tag);
  }
}

/**
 * The colony's keys as an endpoint holds them: the key it tags what it sends with, and the keys it
 * accepts on what it receives, that one first. Two are accepted while the colony key is rotated
 * (docs/OPERATIONS.md, "Rotating the colony key"): every endpoint first accepts the new key beside
 * the old, then tags with the new one, then drops the old.
 */
export class FrameKey {
  private readonly signing: HmacKey;
  private readonly others: readonly HmacKey[];

  constructor(key: Uint8Array, alsoAccepted: readonly Uint8Array[] = []) {
    const problem = colonyKeysProblem([key, ...alsoAccepted]);
    if (problem !== null) throw new RangeError(problem);
    this.signing = new HmacKey(key);
    this.others = alsoAccepted.map((other) => new HmacKey(other));
  }

  /** Writes the signing key's inner pad into target[0, 64): the bytes after it can then be tagged in place. */
  padInto(target: Buffer): void {
    this.signing.padInto(target);
  }

  /** The signing key's tag of padded[64, end), where padded starts with padInto's block, written at target[offset]. */
  tagPadded(padded: Buffer, end: number, target: Buffer, offset: number): void {
    this.signing.tagPadded(padded, end, target, offset);
  }

  /**
   * Under which key `tag` is the tag of `bytes`: "signing" this endpoint's own, "other" the other
   * key it accepts, null none (so the answer is truthy exactly when the tag verifies). Each
   * comparison is in constant time.
   */
  verify(bytes: Uint8Array, tag: Uint8Array): "signing" | "other" | null {
    if (this.signing.verify(bytes, tag)) return "signing";
    for (const other of this.others) if (other.verify(bytes, tag)) return "other";
    return null;
  }
}

/** Why these bytes cannot be a colony key, or null if they can. */
export function colonyKeyProblem(key: Uint8Array): string | null {
  if (!(key instanceof Uint8Array)) return "the colony key must be a Buffer or Uint8Array";
  if (key.length < colonyKeyBytesMin)
    return `the colony key is ${key.length} bytes; it must be at least ${colonyKeyBytesMin} random bytes (e.g. \`openssl rand 32\`)`;
  return null;
}

/**
 * Why these keys cannot be an endpoint's keys (the signing key first, then any other it accepts),
 * or null if they can: one or two keys, each a colony key, no two the same.
 */
export function colonyKeysProblem(keys: readonly Uint8Array[]): string | null {
  if (keys.length === 0) return "no colony key";
  if (keys.length > colonyKeysMax)
    return `${keys.length} colony keys; an endpoint holds at most ${colonyKeysMax}: the key in use and, while it is rotated, the other one`;
  for (const [i, key] of keys.entries()) {
    const problem = colonyKeyProblem(key);
    if (problem !== null) return keys.length === 1 ? problem : `key ${i + 1}: ${problem}`;
  }
  if (keys.length === 2 && Buffer.compare(keys[0] as Uint8Array, keys[1] as Uint8Array) === 0)
    return "the same colony key is given twice";
  return null;
}

/** The two kinds of connection, each with its own link key. */
export type Link = "servers" | "clients";

/**
 * The link key of one kind of connection, derived from a colony key (HMAC-SHA256 of a label under
 * it): "servers" for frames between two servers, "clients" for frames on a client's connection.
 * The clients' link key is the client key given to clients that should not hold the colony key.
 */
export function linkKey(colonyKey: Uint8Array, link: Link): Buffer {
  const problem = colonyKeyProblem(colonyKey);
  if (problem !== null) throw new RangeError(problem);
  return createHmac("sha256", colonyKey).update(`physalia frame link key v1: ${link}`).digest();
}

/**
 * Import a colony key, and the keys also accepted on received frames while the key is rotated;
 * a short key is a configuration error, reported with what to do.
 */
export function frameKey(key: Uint8Array, alsoAccepted: readonly Uint8Array[] = []): FrameKey {
  return new FrameKey(key, alsoAccepted);
}

function writeVarint(target: Buffer, offset: number, value: number): number {
  while (value >= 0x80) {
    target[offset++] = (value % 0x80) | 0x80;
    value = Math.floor(value / 0x80);
  }
  target[offset++] = value;
  return offset;
}

/** Bytes a message adds to a frame: its length prefix and its payload. */
export function messageFrameBytes(message: Uint8Array): number {
  return varintBytes(message.length) + message.length;
}

/**
 * Encode a frame. The caller keeps within the bounds (the transport splits batches before
 * encoding), so exceeding one is a bug here, not a rejection.
 */
export function encodeFrame(key: FrameKey, frame: Frame, bounds: TransportLimits = transportLimits): Buffer {
  let bodyBytes = 0;
  for (const message of frame.messages) {
    assert(message.length <= bounds.messageBytesMax, () => `message of ${message.length} bytes`);
    bodyBytes += messageFrameBytes(message);
  }
  const body = Buffer.allocUnsafe(bodyBytes);
  let offset = 0;
  for (const message of frame.messages) {
    offset = writeVarint(body, offset, message.length);
    body.set(message, offset);
    offset += message.length;
  }
  return encodeFrameBody(
    key,
    { sender: frame.sender, sequence: frame.sequence, count: frame.messages.length, body },
    bounds,
  );
}

/**
 * A frame whose messages are already laid out as on the wire: `count` times a varint length and
 * the payload, in `body` (what the transport builds as messages are sent, without a buffer per
 * message).
 */
export interface FrameBody {
  readonly sender: Address;
  readonly sequence: number;
  readonly count: number;
  readonly body: Uint8Array;
}

/** Encode a frame from its laid-out messages; the bounds hold as for encodeFrame. */
export function encodeFrameBody(
  key: FrameKey,
  frame: FrameBody,
  bounds: TransportLimits = transportLimits,
): Buffer {
  const address = utf8Encode(frame.sender);
  assert(address.length <= bounds.addressBytesMax, () => `sender address of ${address.length} bytes`);
  assert(Number.isSafeInteger(frame.sequence) && frame.sequence >= 0, "sequence is a safe unsigned integer");
  assert(frame.count <= bounds.frameMessagesMax, () => `${frame.count} messages in a frame`);
  const messagesBytes = frame.body.length;
  const size =
    framePrefixBytes +
    1 +
    varintBytes(address.length) +
    address.length +
    varintBytes(frame.sequence) +
    varintBytes(frame.count) +
    messagesBytes +
    frameTagBytes;
  assert(size <= bounds.frameBytesMax, () => `frame of ${size} bytes exceeds ${bounds.frameBytesMax}`);
  assert(
    size <= frameOverheadBytes(bounds, address.length) + messagesBytes,
    "the overhead the transport plans for covers the frame",
  );
  // The frame follows the key's inner pad, so its tag is computed without copying it.
  const padded = Buffer.allocUnsafe(hashBlockBytes + size);
  key.padInto(padded);
  const out = padded.subarray(hashBlockBytes);
  out.writeUInt32BE(size - framePrefixBytes, 0);
  let offset = framePrefixBytes;
  out[offset++] = frameVersion;
  offset = writeVarint(out, offset, address.length);
  out.set(address, offset);
  offset += address.length;
  offset = writeVarint(out, offset, frame.sequence);
  offset = writeVarint(out, offset, frame.count);
  out.set(frame.body, offset);
  offset += messagesBytes;
  assert(offset === size - frameTagBytes, "frame layout adds up");
  key.tagPadded(padded, hashBlockBytes + offset, out, offset);
  return out;
}

/** The hello: the first frame on every connection, naming its sender. */
export function encodeHello(
  key: FrameKey,
  sender: Address,
  bounds: TransportLimits = transportLimits,
): Buffer {
  return encodeFrame(key, { sender, sequence: 0, messages: [] }, bounds);
}

/** A minimal cursor over untrusted bytes; `null` from a read means the input is malformed. */
class Cursor {
  constructor(
    private readonly bytes: Uint8Array,
    public offset: number,
    private readonly end: number,
  ) {}

  get remaining(): number {
    return this.end - this.offset;
  }

  byte(): number | null {
    if (this.offset >= this.end) return null;
    return this.bytes[this.offset++] as number;
  }

  /** A canonical (minimal) LEB128 varint up to 2^53 - 1. */
  varint(): number | null {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.byte();
      if (b === null) return null;
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (b === 0 && i > 0) return null;
        return Number.isSafeInteger(result) ? result : null;
      }
      scale *= 0x80;
    }
    return null;
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function reject(reason: FrameRejection, detail: string): FrameDecodeResult {
  return { ok: false, reason, detail };
}

/**
 * The key a frame from `sender` must be tagged with, or null when no key this endpoint holds
 * may tag a frame from that sender (the frame is then unauthenticated).
 */
export type FrameKeyOf = (sender: string) => FrameKey | null;

/**
 * Decode one whole frame (length prefix included), as the splitter yields it. Never throws.
 * `key` is the key every frame is tagged with, or picks it by the sender the frame names.
 */
export function decodeFrame(
  key: FrameKey | FrameKeyOf,
  bytes: Uint8Array,
  bounds: TransportLimits = transportLimits,
): FrameDecodeResult {
  if (bytes.length > bounds.frameBytesMax)
    return reject("oversized", `frame of ${bytes.length} bytes exceeds ${bounds.frameBytesMax}`);
  // prefix, version, address length, sequence, count, tag
  const frameBytesMin = framePrefixBytes + 4 + frameTagBytes;
  if (bytes.length < frameBytesMin)
    return reject("malformed", `frame of ${bytes.length} bytes is shorter than ${frameBytesMin}`);
  const declared =
    (bytes[0] as number) * 0x100_0000 +
    ((bytes[1] as number) << 16) +
    ((bytes[2] as number) << 8) +
    (bytes[3] as number);
  if (declared !== bytes.length - framePrefixBytes)
    return reject("malformed", `length prefix ${declared} does not match ${bytes.length - framePrefixBytes}`);

  const tagStart = bytes.length - frameTagBytes;
  const cursor = new Cursor(bytes, framePrefixBytes, tagStart);
  const version = cursor.byte();
  if (version !== frameVersion) return reject("unsupported-version", `frame version ${version}`);
  const addressBytes = cursor.varint();
  if (addressBytes === null) return reject("malformed", "bad address length");
  if (addressBytes > bounds.addressBytesMax)
    return reject("oversized", `address of ${addressBytes} bytes exceeds ${bounds.addressBytesMax}`);
  if (addressBytes > cursor.remaining) return reject("malformed", "truncated address");
  const addressStart = cursor.offset;
  cursor.offset += addressBytes;
  const sequence = cursor.varint();
  if (sequence === null) return reject("malformed", "bad sequence number");
  const count = cursor.varint();
  if (count === null) return reject("malformed", "bad message count");
  if (count > bounds.frameMessagesMax)
    return reject("oversized", `${count} messages exceed ${bounds.frameMessagesMax}`);
  // Each message takes at least one byte, so a count beyond the bytes left is malformed; checking
  // it here keeps the allocation below bounded by the frame's size.
  if (count > cursor.remaining) return reject("malformed", `${count} messages in ${cursor.remaining} bytes`);
  const starts = new Array<number>(count);
  const lengths = new Array<number>(count);
  for (let i = 0; i < count; i++) {
    const length = cursor.varint();
    if (length === null) return reject("malformed", `bad length of message ${i}`);
    if (length > bounds.messageBytesMax)
      return reject("oversized", `message of ${length} bytes exceeds ${bounds.messageBytesMax}`);
    if (length > cursor.remaining) return reject("malformed", `truncated message ${i}`);
    starts[i] = cursor.offset;
    lengths[i] = length;
    cursor.offset += length;
  }
  if (cursor.remaining !== 0) return reject("malformed", `${cursor.remaining} trailing bytes before the tag`);

  let sender: string;
  try {
    sender = utf8.decode(bytes.subarray(addressStart, addressStart + addressBytes));
  } catch {
    return reject("malformed", "sender address is not UTF-8");
  }
  const senderKey = key instanceof FrameKey ? key : key(sender);
  if (senderKey === null)
    return reject("unauthenticated", `no key this endpoint holds may tag a frame from ${sender}`);
  const verified = senderKey.verify(bytes.subarray(0, tagStart), bytes.subarray(tagStart));
  if (verified === null)
    return reject("unauthenticated", "the tag does not match the colony's key for its sender");
  // Messages are views of the frame's bytes, not copies: the transport decodes each at once, and
  // decoders copy what they keep (ByteReader.bytes), so no view outlives the delivery. Plain
  // Uint8Array views: `slice` of one copies, where a Buffer's would give another view.
  const messages = new Array<Uint8Array>(count);
  const base = bytes.byteOffset;
  for (let i = 0; i < count; i++) {
    messages[i] = new Uint8Array(bytes.buffer, base + (starts[i] as number), lengths[i] as number);
  }
  return { ok: true, frame: { sender, sequence, messages }, otherKey: verified === "other" };
}

export type SplitResult =
  | { readonly ok: true; readonly frames: readonly Uint8Array[] }
  | { readonly ok: false; readonly reason: "oversized"; readonly detail: string };

/**
 * Cuts a byte stream into whole frames (each with its length prefix). Chunks are kept as they
 * arrive and each frame's bytes are copied at most once, so feeding a frame in many small chunks
 * costs time linear in its size. A length prefix above the bound is rejected as soon as its four
 * bytes arrive, before any of the body is buffered; the splitter then stays failed (the
 * connection is closed, as the stream cannot be resynchronized). Until `admitFrames()` is called
 * the bound is that of a hello, so a connection that has not yet authenticated cannot make its
 * receiver hold more than a hello's bytes.
 */
export class FrameSplitter {
  private chunks: Uint8Array[] = [];
  /** Index of the first chunk still holding unread bytes. */
  private head = 0;
  /** Bytes of chunks[head] already consumed. */
  private headOffset = 0;
  private bufferedBytes = 0;
  /** Size of the frame being assembled (prefix included), or -1 before its prefix is complete. */
  private frameBytes = -1;
  private failure: SplitResult | null = null;

  private admitted = false;

  constructor(private readonly bounds: TransportLimits = transportLimits) {}

  /** The connection's hello is authenticated: frames up to frameBytesMax may follow. */
  admitFrames(): void {
    this.admitted = true;
  }

  /** Drops what is held, when its connection closes: buffered is 0 after. */
  discard(): void {
    this.chunks = [];
    this.head = 0;
    this.headOffset = 0;
    this.bufferedBytes = 0;
    this.frameBytes = -1;
  }

  /** Until admitFrames(), push yields at most one frame (the hello); the bytes after it wait. */
  get isAdmitted(): boolean {
    return this.admitted;
  }

  /** Bytes held waiting for the rest of a frame; at most one frame plus one chunk. */
  get buffered(): number {
    return this.bufferedBytes;
  }

  push(chunk: Uint8Array): SplitResult {
    if (this.failure !== null) return this.failure;
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.bufferedBytes += chunk.length;
    }
    const frames: Uint8Array[] = [];
    for (;;) {
      if (this.frameBytes < 0) {
        if (this.bufferedBytes < framePrefixBytes) break;
        const prefix = this.peekPrefix();
        // Before admitFrames(), the largest hello: its address at its bound, and no message.
        const prefixMax = this.admitted
          ? this.bounds.frameBytesMax - framePrefixBytes
          : frameOverheadBytes(this.bounds, this.bounds.addressBytesMax) - framePrefixBytes;
        if (prefix > prefixMax) {
          this.failure = {
            ok: false,
            reason: "oversized",
            detail: `length prefix ${prefix} exceeds ${prefixMax}${this.admitted ? "" : " (the bound of a hello)"}`,
          };
          this.chunks = [];
          this.head = 0;
          this.headOffset = 0;
          this.bufferedBytes = 0;
          return this.failure;
        }
        this.frameBytes = prefix + framePrefixBytes;
      }
      if (this.bufferedBytes < this.frameBytes) break;
      frames.push(this.take(this.frameBytes));
      this.frameBytes = -1;
      if (!this.admitted) break;
    }
    this.compact();
    return { ok: true, frames };
  }

  private peekPrefix(): number {
    let value = 0;
    let index = this.head;
    let offset = this.headOffset;
    for (let i = 0; i < framePrefixBytes; i++) {
      let chunk = this.chunks[index] as Uint8Array;
      while (offset >= chunk.length) {
        index += 1;
        offset = 0;
        chunk = this.chunks[index] as Uint8Array;
      }
      value = value * 0x100 + (chunk[offset] as number);
      offset += 1;
    }
    return value;
  }

  private take(size: number): Uint8Array {
    assert(size <= this.bufferedBytes, "take only buffered bytes");
    this.bufferedBytes -= size;
    const first = this.chunks[this.head] as Uint8Array;
    if (first.length - this.headOffset >= size) {
      // The whole frame sits in one chunk: hand out a view, no copy.
      const view = first.subarray(this.headOffset, this.headOffset + size);
      this.advance(first, size);
      return view;
    }
    const out = new Uint8Array(size);
    let filled = 0;
    while (filled < size) {
      const chunk = this.chunks[this.head] as Uint8Array;
      const available = chunk.length - this.headOffset;
      const n = Math.min(available, size - filled);
      out.set(chunk.subarray(this.headOffset, this.headOffset + n), filled);
      filled += n;
      this.advance(chunk, n);
    }
    return out;
  }

  private advance(chunk: Uint8Array, n: number): void {
    this.headOffset += n;
    if (this.headOffset === chunk.length) {
      this.chunks[this.head] = EMPTY;
      this.head += 1;
      this.headOffset = 0;
    }
  }

  /** Drop consumed chunk slots so the array does not grow with the life of the connection. */
  private compact(): void {
    if (this.head === this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    } else if (this.head >= 64 && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }
}

const EMPTY = new Uint8Array(0);
