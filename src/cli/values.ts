/**
 * Item values and conditions as people type them on the command line, and values as the CLI
 * prints them (docs/OPERATIONS.md, "Values and conditions").
 *
 * Typed on the command line, a value is:
 *   - an integer: `42`, `-7`, `0` (an optional `-`, then digits without a leading zero);
 *   - a boolean: `true` or `false` (lower case);
 *   - bytes: `hex:00ff` (pairs of hex digits), `b64:AP8=` (standard base64 with padding);
 *   - text stored as its UTF-8 bytes: `str:anything` (the prefix forces text), or any other text.
 *
 * Printed, integers are digits and booleans words. Bytes print as their text when they are
 * printable UTF-8 (no control characters, bidirectional marks or byte-order marks), with `str:`
 * in front when the plain text would read back as something else (`str:42`, `str:true`,
 * `str:hex:00`, `str:` for no bytes), and as `hex:...` otherwise. So `parseValue(formatValue(v))`
 * gives back `v` for every value.
 *
 * In JSON a value is `{"type": "integer", "value": "42"}` (digits in a string: integers may be
 * larger than JSON numbers hold exactly), `{"type": "boolean", "value": true}`, or
 * `{"type": "bytes", "value": {"text": "..."}}` when the bytes are valid UTF-8, else
 * `{"type": "bytes", "value": {"hex": "..."}}`.
 *
 * Conditions (`--if`) are `ITEM=VALUE`, `ITEM!` (missing), `ITEM?` (exists), `ITEM<N`,
 * `ITEM<=N`, `ITEM>N`, `ITEM>=N`; see parseCondition for how they split.
 */
import { type Condition, type Value, wellFormedUtf8Length } from "../cell/index.ts";

/** Bad input from the person at the keyboard: the message says what was wrong and what to do. */
export class InputError extends Error {
  override name = "InputError";
}

const integerPattern = /^-?(0|[1-9][0-9]*)$/;
const hexPattern = /^(?:[0-9a-fA-F]{2})*$/;
const base64Pattern = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** Shown in messages: the start of what was typed. */
const quotedCharsMax = 60;

const utf8Encoder = new TextEncoder();
const strictUtf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** `"text"` for messages, cut short when long. */
export function quoted(text: string): string {
  const cut = text.length > quotedCharsMax ? `${text.slice(0, quotedCharsMax)}...` : text;
  return JSON.stringify(cut);
}

/** A value as typed on the command line (see the module comment). Throws InputError. */
export function parseValue(text: string): Value {
  if (text.startsWith("str:")) return textBytes(text.slice(4));
  if (text.startsWith("hex:")) {
    const digits = text.slice(4);
    if (!hexPattern.test(digits))
      throw new InputError(
        `${quoted(text)} is not hex bytes: after "hex:" write pairs of hex digits, like hex:00ff ` +
          `(to store this text as it is, write str:${text})`,
      );
    return Uint8Array.from(Buffer.from(digits, "hex"));
  }
  if (text.startsWith("b64:")) {
    const digits = text.slice(4);
    if (!base64Pattern.test(digits))
      throw new InputError(
        `${quoted(text)} is not base64 bytes: after "b64:" write standard base64 with its = padding, ` +
          `like b64:AP8= (to store this text as it is, write str:${text})`,
      );
    return Uint8Array.from(Buffer.from(digits, "base64"));
  }
  if (text === "true") return true;
  if (text === "false") return false;
  if (integerPattern.test(text)) return BigInt(text);
  return textBytes(text);
}

/**
 * The UTF-8 bytes of `text`. Throws InputError for an unpaired UTF-16 surrogate (a JSON string
 * may hold one, as "\ud800"), which has no UTF-8 form: encoding would store U+FFFD instead.
 */
function textBytes(text: string): Uint8Array {
  if (wellFormedUtf8Length(text) < 0)
    throw new InputError(
      `${quoted(text)} holds an unpaired UTF-16 surrogate, which is not text and has no UTF-8 form; ` +
        "give such bytes in hex (hex:...)",
    );
  return utf8Encoder.encode(text);
}

/** An integer as typed (`42`, `-7`); `what` names it in the message. Throws InputError. */
export function parseInteger(text: string, what: string): bigint {
  if (integerPattern.test(text)) return BigInt(text);
  throw new InputError(
    `${what} must be an integer like 42 or -7 (digits, no leading zeros, no + or decimal point), got ${quoted(text)}`,
  );
}

function isPrintable(text: string): boolean {
  // Control characters, bidirectional controls and marks, and the byte-order mark would make
  // the printed line lie about what is stored.
  // Bidi_Control is every bidirectional control of Unicode (U+061C, U+200E, U+200F, U+202A-U+202E,
  // U+2066-U+2069).
  return !/[\p{Cc}\p{Bidi_Control}\ufeff]/u.test(text);
}

/** The bytes as text if they are well-formed UTF-8, else null. */
export function utf8Text(bytes: Uint8Array): string | null {
  try {
    return strictUtf8Decoder.decode(bytes);
  } catch {
    return null;
  }
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

/** True when parseValue reads `text` back as its own UTF-8 bytes. */
function readsBackAsText(text: string): boolean {
  return (
    text !== "" &&
    text !== "true" &&
    text !== "false" &&
    !integerPattern.test(text) &&
    !/^(?:str|hex|b64):/.test(text) &&
    // On a command line, a word starting with - that is not a number is taken for an option.
    !text.startsWith("-")
  );
}

/** A value as the CLI prints it; reads back with parseValue to the same value. */
export function formatValue(value: Value): string {
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "boolean") return value ? "true" : "false";
  const text = utf8Text(value);
  if (text === null || !isPrintable(text)) return `hex:${hex(value)}`;
  return readsBackAsText(text) ? text : `str:${text}`;
}

export type JsonValue =
  | { readonly type: "integer"; readonly value: string }
  | { readonly type: "boolean"; readonly value: boolean }
  | { readonly type: "bytes"; readonly value: { readonly text: string } | { readonly hex: string } };

/** A value as `--json` output prints it. */
export function valueToJson(value: Value): JsonValue {
  if (typeof value === "bigint") return { type: "integer", value: value.toString() };
  if (typeof value === "boolean") return { type: "boolean", value };
  const text = utf8Text(value);
  return { type: "bytes", value: text === null ? { hex: hex(value) } : { text } };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** What a JSON value is, for messages. */
export function describeJson(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "an object";
  if (typeof value === "string") return `the text ${quoted(value)}`;
  return `${typeof value} ${String(value)}`;
}

function integerFromJson(value: unknown, where: string): bigint {
  if (typeof value === "number") {
    if (Number.isSafeInteger(value)) return BigInt(value);
    throw new InputError(
      Number.isInteger(value)
        ? `${where}: ${value} is beyond what a JSON number holds exactly; write the integer as a string of digits`
        : `${where}: ${value} is not an integer; values hold whole numbers only`,
    );
  }
  if (typeof value === "string") return parseInteger(value, where);
  throw new InputError(`${where}: expected an integer, got ${describeJson(value)}`);
}

/**
 * A value as a transaction file writes it: the `--json` form (`{"type": ..., "value": ...}`,
 * bytes also as `{"base64": ...}`), a JSON boolean, a JSON integer within 2^53, or a string in
 * the command-line syntax (`"42"`, `"hex:00ff"`, `"blue"`). `where` locates it in messages.
 */
export function valueFromJson(value: unknown, where: string): Value {
  if (typeof value === "boolean") return value;
  if (typeof value === "number") return integerFromJson(value, where);
  if (typeof value === "string") {
    try {
      return parseValue(value);
    } catch (error) {
      throw new InputError(`${where}: ${(error as Error).message}`);
    }
  }
  if (!isRecord(value))
    throw new InputError(
      `${where}: expected a value (a string like "42" or "hex:00ff", true/false, or {"type": ..., "value": ...}), got ${describeJson(value)}`,
    );
  const keys = Object.keys(value).sort().join(",");
  if (keys !== "type,value")
    throw new InputError(
      `${where}: a typed value is an object with exactly "type" and "value", got the fields ${Object.keys(value).join(", ") || "(none)"}`,
    );
  switch (value.type) {
    case "integer":
      return integerFromJson(value.value, `${where}.value`);
    case "boolean":
      if (typeof value.value !== "boolean")
        throw new InputError(`${where}.value: a boolean is true or false, got ${describeJson(value.value)}`);
      return value.value;
    case "bytes":
      return bytesFromJson(value.value, `${where}.value`);
    default:
      throw new InputError(
        `${where}.type: ${describeJson(value.type)} is not a type; use "integer", "boolean" or "bytes"`,
      );
  }
}

function bytesFromJson(value: unknown, where: string): Uint8Array {
  const fields = isRecord(value) ? Object.keys(value) : [];
  if (!isRecord(value) || fields.length !== 1)
    throw new InputError(`${where}: bytes are {"text": "..."}, {"hex": "..."} or {"base64": "..."}`);
  const [field] = fields as [string];
  const content = value[field];
  if (typeof content !== "string")
    throw new InputError(`${where}.${field}: expected a string, got ${describeJson(content)}`);
  switch (field) {
    case "text":
      try {
        return textBytes(content);
      } catch (error) {
        throw new InputError(`${where}.text: ${(error as Error).message}`);
      }
    case "hex":
      if (!hexPattern.test(content))
        throw new InputError(`${where}.hex: ${quoted(content)} is not pairs of hex digits`);
      return Uint8Array.from(Buffer.from(content, "hex"));
    case "base64":
      if (!base64Pattern.test(content))
        throw new InputError(`${where}.base64: ${quoted(content)} is not standard base64 with = padding`);
      return Uint8Array.from(Buffer.from(content, "base64"));
    default:
      throw new InputError(
        `${where}: bytes are {"text": "..."}, {"hex": "..."} or {"base64": "..."}, not {"${field}": ...}`,
      );
  }
}

// ---------------------------------------------------------------- conditions

export const conditionSyntax =
  "a condition is ITEM=VALUE, ITEM! (missing), ITEM? (exists), ITEM<N, ITEM<=N, ITEM>N or ITEM>=N";

const comparisonOps = { "<": "lt", "<=": "le", ">": "gt", ">=": "ge" } as const;

/**
 * A condition as typed after `--if`. The text splits at its first `=`, `<` or `>` (`<=` and `>=`
 * taken whole): the item is what comes before, the value or integer what comes after. Without
 * any of those, a final `!` means "missing" and a final `?` means "exists". So an item whose key
 * holds `=`, `<` or `>` cannot be named here: use a transaction file. `ITEM!=V` is refused
 * rather than read as an item ending in `!`, and so is `ITEM==V`.
 */
export function parseCondition(text: string): Condition {
  const split = /^(.*?)(<=|>=|<|>|=)(.*)$/s.exec(text);
  if (split === null) {
    const item = text.slice(0, -1);
    const last = text.slice(-1);
    if ((last === "!" || last === "?") && item !== "") {
      checkConditionItem(item, text);
      return { item, op: last === "!" ? "missing" : "exists" };
    }
    throw new InputError(`${quoted(text)} is not a condition: ${conditionSyntax}`);
  }
  const [, item = "", operator = "", rest = ""] = split;
  if (item === "")
    throw new InputError(`${quoted(text)} names no item before ${operator}: ${conditionSyntax}`);
  if (operator === "=") {
    if (item.endsWith("!"))
      throw new InputError(
        `${quoted(text)}: there is no "not equals" condition; ${conditionSyntax} (an item whose key ends in "!" needs a transaction file)`,
      );
    if (rest.startsWith("="))
      throw new InputError(
        `${quoted(text)}: write equality with a single "=", like ${item}=${rest.slice(1)}`,
      );
  }
  checkConditionItem(item, text);
  if (/^\s/.test(rest))
    throw new InputError(
      `${quoted(text)}: the value after ${operator} starts with a space; write conditions without spaces, like count>=3` +
        (operator === "=" ? ` (a text value that starts with a space: ${item}=str:${rest})` : ""),
    );
  if (operator === "=") {
    try {
      return { item, op: "equals", value: parseValue(rest) };
    } catch (error) {
      throw new InputError(`in the condition ${quoted(text)}: ${(error as Error).message}`);
    }
  }
  const op = comparisonOps[operator as keyof typeof comparisonOps];
  return {
    item,
    op,
    value: parseInteger(rest, `in the condition ${quoted(text)}, the value after ${operator}`),
  };
}

function checkConditionItem(item: string, text: string): void {
  if (item.trim() !== item)
    throw new InputError(
      `${quoted(text)}: the item name starts or ends with a space; write conditions without spaces, like count>=3`,
    );
}

/** A condition in the `--if` syntax, for messages. */
export function formatCondition(condition: Condition): string {
  switch (condition.op) {
    case "exists":
      return `${condition.item}?`;
    case "missing":
      return `${condition.item}!`;
    case "equals":
      return `${condition.item}=${formatValue(condition.value)}`;
    case "lt":
      return `${condition.item}<${condition.value}`;
    case "le":
      return `${condition.item}<=${condition.value}`;
    case "gt":
      return `${condition.item}>${condition.value}`;
    case "ge":
      return `${condition.item}>=${condition.value}`;
  }
}
