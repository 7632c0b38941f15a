/**
 * Text helpers of the cell: exact UTF-8 sizes without encoding, well-formedness (a string with an
 * unpaired surrogate does not survive UTF-8 encoding, so it can never be a key), and short
 * descriptions of values for messages meant for people.
 */

/** UTF-8 length of `text` as TextEncoder encodes it (an unpaired surrogate becomes U+FFFD, 3 bytes). */
export function utf8ByteLength(text: string): number {
  const length = wellFormedUtf8Length(text);
  return length >= 0 ? length : utf8Encoder.encode(text).length;
}

const utf8Encoder = new TextEncoder();

/** UTF-8 length of `text`, or -1 when it holds an unpaired surrogate (it is not Unicode text). */
export function wellFormedUtf8Length(text: string): number {
  const length = text.length;
  let bytes = length;
  for (let i = 0; i < length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800) {
      bytes += 1;
    } else if (unit < 0xd800 || unit > 0xdfff) {
      bytes += 2;
    } else if (unit <= 0xdbff && i + 1 < length && isLowSurrogate(text.charCodeAt(i + 1))) {
      bytes += 2;
      i++;
    } else {
      return -1;
    }
  }
  return bytes;
}

function isLowSurrogate(unit: number): boolean {
  return unit >= 0xdc00 && unit <= 0xdfff;
}

const quotedUnitsMax = 48;

/** `text` in double quotes for a message, shortened to its first 48 UTF-16 units. */
export function quote(text: string): string {
  if (text.length <= quotedUnitsMax) return JSON.stringify(text);
  return `${JSON.stringify(cutUnits(text, quotedUnitsMax)).slice(0, -1)}..." (${text.length} characters)`;
}

/** The first `units` UTF-16 units of `text`, never splitting a surrogate pair. */
export function cutUnits(text: string, units: number): string {
  let end = Math.min(units, text.length);
  const last = text.charCodeAt(end - 1);
  if (end < text.length && last >= 0xd800 && last <= 0xdbff) end--;
  return text.slice(0, end);
}

/** `text` cut at a character boundary, with a "..." mark, to at most `bytesMax` UTF-8 bytes. */
export function clipText(text: string, bytesMax: number): string {
  if (utf8ByteLength(text) <= bytesMax) return text;
  const budget = bytesMax - 3;
  let bytes = 0;
  let end = 0;
  while (end < text.length) {
    const unit = text.charCodeAt(end);
    let units = 1;
    let size = 3;
    if (unit < 0x80) size = 1;
    else if (unit < 0x800) size = 2;
    else if (
      unit >= 0xd800 &&
      unit <= 0xdbff &&
      end + 1 < text.length &&
      isLowSurrogate(text.charCodeAt(end + 1))
    ) {
      size = 4;
      units = 2;
    }
    if (bytes + size > budget) break;
    bytes += size;
    end += units;
  }
  return `${text.slice(0, end)}...`;
}

/** A short description of any JavaScript value, for messages ("a number (5)", "a string"). */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (value instanceof Uint8Array) return `a byte array of ${value.length} bytes`;
  if (Array.isArray(value)) return "an array";
  switch (typeof value) {
    case "number":
      return `a number (${String(value)})`;
    case "string":
      return `a string (${quote(value)})`;
    case "bigint":
      return "an integer";
    case "boolean":
      return `a boolean (${String(value)})`;
    case "object":
      return "an object";
    default:
      return `a ${typeof value}`;
  }
}

/** A value as it would be written in a message: numbers plainly, bigints with n, strings quoted. */
export function show(value: unknown): string {
  if (typeof value === "number") return String(value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "string") return quote(value);
  return describe(value);
}
