/**
 * Canonical binary encoding helpers. The same logical value always encodes to the same bytes:
 * unsigned integers as minimal LEB128 varints, bigints as sign + minimal magnitude bytes,
 * strings as UTF-8 with a length prefix. Readers reject non-canonical or truncated input with a
 * DecodeError (bad input from outside is an expected outcome, not a bug).
 */
export class DecodeError extends Error {
  override name = "DecodeError";
}

const textEncoder = new TextEncoder();
const scratchBytes = new Uint8Array(8);
const scratchView = new DataView(scratchBytes.buffer);
const textDecoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The memory of short ASCII strings read lately: a string read again (a cell key, a server id, an
 * item key: most strings a server reads are one it read a moment ago) is the same string object,
 * built once, flat, its hash computed once, with nothing allocated. Direct-mapped by a hash of the
 * bytes; a slot holds the last string that hashed to it. Bounded: recentAsciiSlots strings of at
 * most 63 bytes.
 */
const recentAsciiSlots = 4096;
const recentAsciiStrings: (string | undefined)[] = new Array(recentAsciiSlots).fill(undefined);

/** The ASCII text of buffer[start, start + length), or null if a byte is not ASCII. */
function recentAscii(buffer: Uint8Array, start: number, length: number): string | null {
  let hash = 0x811c9dc5 ^ length;
  for (let i = 0; i < length; i++) {
    const code = buffer[start + i] as number;
    if (code >= 0x80) return null;
    hash = Math.imul(hash ^ code, 0x01000193);
  }
  const slot = (hash ^ (hash >>> 15)) & (recentAsciiSlots - 1);
  const known = recentAsciiStrings[slot];
  if (known !== undefined && known.length === length) {
    let i = 0;
    while (i < length && known.charCodeAt(i) === buffer[start + i]) i++;
    if (i === length) return known;
  }
  const text = asciiText(buffer, start, length);
  recentAsciiStrings[slot] = text;
  return text;
}

/** ASCII bytes as a flat string, built in one piece. */
function asciiText(buffer: Uint8Array, start: number, length: number): string {
  if (length === 0) return "";
  return String.fromCharCode.apply(null, buffer.subarray(start, start + length) as unknown as number[]);
}

export function utf8Encode(text: string): Uint8Array {
  return textEncoder.encode(text);
}

export function utf8Length(text: string): number {
  // Fast path for ASCII, which is what keys usually are.
  let ascii = true;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) > 0x7f) {
      ascii = false;
      break;
    }
  }
  return ascii ? text.length : textEncoder.encode(text).length;
}

export class ByteWriter {
  private buffer: Uint8Array;
  private length = 0;

  constructor(initialCapacity = 64) {
    this.buffer = new Uint8Array(
      Number.isInteger(initialCapacity) && initialCapacity > 0 ? initialCapacity : 16,
    );
  }

  private reserve(extra: number): void {
    if (this.length + extra <= this.buffer.length) return;
    let capacity = Math.max(16, this.buffer.length * 2);
    while (capacity < this.length + extra) capacity *= 2;
    const next = new Uint8Array(capacity);
    next.set(this.buffer.subarray(0, this.length));
    this.buffer = next;
  }

  byte(value: number): this {
    this.reserve(1);
    this.buffer[this.length++] = value & 0xff;
    return this;
  }

  bool(value: boolean): this {
    return this.byte(value ? 1 : 0);
  }

  /** Unsigned integer up to 2^53 - 1 as a minimal varint. */
  uint(value: number): this {
    if (!Number.isSafeInteger(value) || value < 0)
      throw new RangeError(`not an unsigned safe integer: ${value}`);
    this.reserve(8);
    while (value >= 0x80) {
      this.buffer[this.length++] = (value % 0x80) | 0x80;
      value = Math.floor(value / 0x80);
    }
    this.buffer[this.length++] = value;
    return this;
  }

  /** Signed safe integer, zigzag encoded. */
  int(value: number): this {
    if (!Number.isSafeInteger(value)) throw new RangeError(`not a safe integer: ${value}`);
    return this.uint(value >= 0 ? value * 2 : -value * 2 - 1);
  }

  /** Sign byte, then the magnitude as minimal little-endian bytes with a length prefix. Linear in size. */
  bigint(value: bigint): this {
    const negative = value < 0n;
    const magnitude = negative ? -value : value;
    this.byte(negative ? 1 : 0);
    if (magnitude <= 0xffffffffn) {
      let small = Number(magnitude);
      let length = 0;
      for (let rest = small; rest > 0; rest = Math.floor(rest / 0x100)) length += 1;
      this.uint(length);
      this.reserve(length);
      for (let i = 0; i < length; i++) {
        this.buffer[this.length++] = small & 0xff;
        small = Math.floor(small / 0x100);
      }
      return this;
    }
    let hex = magnitude.toString(16);
    if (hex.length % 2 === 1) hex = `0${hex}`;
    const length = hex.length / 2;
    this.uint(length);
    this.reserve(length);
    for (let i = 0; i < length; i++) {
      const at = hex.length - 2 * (i + 1);
      this.buffer[this.length++] = Number.parseInt(hex.slice(at, at + 2), 16);
    }
    return this;
  }

  /** An IEEE 754 double, 8 bytes little-endian (for clock readings, which may be fractional). */
  f64(value: number): this {
    this.reserve(8);
    scratchView.setFloat64(0, value, true);
    this.buffer.set(scratchBytes, this.length);
    this.length += 8;
    return this;
  }

  bytes(value: Uint8Array): this {
    this.uint(value.length);
    this.reserve(value.length);
    this.buffer.set(value, this.length);
    this.length += value.length;
    return this;
  }

  string(value: string): this {
    const n = value.length;
    // ASCII (what keys and ids usually are) is copied as is, without an intermediate array.
    if (n < 0x80) {
      this.reserve(n + 1);
      const start = this.length;
      this.buffer[start] = n;
      let i = 0;
      for (; i < n; i++) {
        const code = value.charCodeAt(i);
        if (code >= 0x80) break;
        this.buffer[start + 1 + i] = code;
      }
      if (i === n) {
        this.length = start + 1 + n;
        return this;
      }
    }
    return this.bytes(utf8Encode(value));
  }

  raw(value: Uint8Array): this {
    this.reserve(value.length);
    this.buffer.set(value, this.length);
    this.length += value.length;
    return this;
  }

  /** Empties the writer, keeping its buffer, to write the next value into. */
  clear(): this {
    this.length = 0;
    return this;
  }

  /**
   * The bytes written so far, without a copy: valid only until the writer is written to or
   * cleared again. For handing a value to something that copies it at once.
   */
  view(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }

  /** A copy of the bytes written since `start` (a value of `size` taken earlier). */
  copyFrom(start: number): Uint8Array {
    return this.buffer.slice(start, this.length);
  }

  /** Bytes the writer holds room for. */
  get capacity(): number {
    return this.buffer.length;
  }

  get size(): number {
    return this.length;
  }

  finish(): Uint8Array {
    return this.buffer.slice(0, this.length);
  }
}

export class ByteReader {
  private offset = 0;
  /** Where this reader's input ends: the buffer's end, or a nested byte string's (enter()). */
  private limit: number;

  constructor(private readonly buffer: Uint8Array) {
    this.limit = buffer.length;
  }

  get remaining(): number {
    return this.limit - this.offset;
  }

  /** Bytes read so far. */
  get position(): number {
    return this.offset;
  }

  /** A copy of the bytes read since `start` (a position taken earlier). */
  copyFrom(start: number): Uint8Array {
    return Uint8Array.prototype.slice.call(this.buffer, start, this.offset);
  }

  byte(): number {
    if (this.offset >= this.limit) throw new DecodeError("truncated input: expected a byte");
    return this.buffer[this.offset++] as number;
  }

  bool(): boolean {
    const b = this.byte();
    if (b > 1) throw new DecodeError(`invalid boolean byte ${b}`);
    return b === 1;
  }

  uint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.byte();
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (b === 0 && i > 0) throw new DecodeError("non-canonical varint");
        if (!Number.isSafeInteger(result)) throw new DecodeError("varint exceeds 2^53");
        return result;
      }
      scale *= 0x80;
    }
    throw new DecodeError("varint too long");
  }

  int(): number {
    const z = this.uint();
    return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  }

  bigint(maxMagnitudeBytes: number): bigint {
    const negative = this.bool();
    const length = this.uint();
    if (length > maxMagnitudeBytes)
      throw new DecodeError(`integer of ${length} bytes exceeds ${maxMagnitudeBytes}`);
    if (length > this.remaining) throw new DecodeError("truncated integer");
    const start = this.offset;
    this.offset += length;
    if (length === 0) {
      if (negative) throw new DecodeError("non-canonical negative zero");
      return 0n;
    }
    if (this.buffer[start + length - 1] === 0)
      throw new DecodeError("non-canonical integer: leading zero byte");
    let magnitude: bigint;
    if (length <= 4) {
      let small = 0;
      for (let i = length - 1; i >= 0; i--) small = small * 0x100 + (this.buffer[start + i] as number);
      magnitude = BigInt(small);
    } else {
      let hex = "0x";
      for (let i = length - 1; i >= 0; i--)
        hex += (this.buffer[start + i] as number).toString(16).padStart(2, "0");
      magnitude = BigInt(hex);
    }
    return negative ? -magnitude : magnitude;
  }

  /** A finite double (NaN and the infinities are refused: no clock reads them). */
  f64(): number {
    if (this.remaining < 8) throw new DecodeError("truncated input: expected 8 bytes of a double");
    for (let i = 0; i < 8; i++) scratchBytes[i] = this.buffer[this.offset + i] as number;
    this.offset += 8;
    const value = scratchView.getFloat64(0, true);
    if (!Number.isFinite(value)) throw new DecodeError(`not a finite number: ${value}`);
    return value;
  }

  bytes(maxLength: number): Uint8Array {
    const start = this.span(maxLength);
    return this.buffer.slice(start, this.offset);
  }

  /**
   * Like bytes(), but a view of the input instead of a copy: for bytes that are decoded at once
   * and not kept (a view keeps the whole input alive).
   */
  view(maxLength: number): Uint8Array {
    const start = this.span(maxLength);
    return this.buffer.subarray(start, this.offset);
  }

  /**
   * Reads a length-prefixed byte string's length and narrows the input to that string, to decode
   * it in place (as view() and a reader of its own would, without allocating either). Returns the
   * end to hand back to leave(), which checks that the string was read to its end.
   */
  enter(maxLength: number): number {
    const start = this.span(maxLength);
    const outer = this.limit;
    this.limit = this.offset;
    this.offset = start;
    return outer;
  }

  /** The end of a byte string entered with enter(): the input is widened again to `outer`. */
  leave(outer: number): void {
    this.end();
    this.limit = outer;
  }

  /** A length-prefixed byte string decoded in place by `read`, which must read it to its end. */
  nested<T>(maxLength: number, read: (reader: ByteReader) => T): T {
    const outer = this.enter(maxLength);
    const value = read(this);
    this.leave(outer);
    return value;
  }

  /** Reads a length-prefixed byte string's length, checks it, skips the bytes; returns their start. */
  private span(maxLength: number): number {
    const length = this.uint();
    if (length > maxLength) throw new DecodeError(`byte string of ${length} bytes exceeds ${maxLength}`);
    if (length > this.remaining) throw new DecodeError("truncated byte string");
    const start = this.offset;
    this.offset += length;
    return start;
  }

  string(maxBytes: number): string {
    const start = this.offset;
    const length = this.buffer[start];
    // Short ASCII strings (cell keys, server ids, item keys) come from the memory of recent ones.
    if (length !== undefined && length < 0x40 && length <= maxBytes && start + 1 + length <= this.limit) {
      const text = recentAscii(this.buffer, start + 1, length);
      if (text !== null) {
        this.offset = start + 1 + length;
        return text;
      }
    }
    const raw = this.bytes(maxBytes);
    try {
      return textDecoder.decode(raw);
    } catch {
      throw new DecodeError("invalid UTF-8 in string");
    }
  }

  end(): void {
    if (this.remaining !== 0) throw new DecodeError(`${this.remaining} unexpected trailing bytes`);
  }
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}
