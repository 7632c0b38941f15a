/**
 * The transaction file of `physalia txn KEY --file FILE`: one JSON object with up to three lists,
 * all optional, checked here so that a mistake is reported with where it is and what to write
 * instead (docs/OPERATIONS.md, "Transaction files"):
 *
 *   {
 *     "conditions": ["count>=3", {"item": "color", "op": "equals", "value": "blue"}],
 *     "reads": ["color", "count"],
 *     "writes": [
 *       {"item": "color", "op": "put", "value": "red"},
 *       {"item": "count", "op": "add", "delta": -1},
 *       {"item": "draft", "op": "delete"}
 *     ]
 *   }
 *
 * A condition is a string in the `--if` syntax or an object {item, op, value}: op is "exists" or
 * "missing" (no value), "equals" (any value), or "lt", "le", "gt", "ge" (an integer). Values are
 * as valueFromJson reads them. The cell's own limits (key and value sizes, items per
 * transaction) are checked by the client before anything is sent.
 */
import {
  type Condition,
  type ProblemCode,
  type Transaction,
  validateTransaction,
  type Write,
} from "../cell/index.ts";
import { FileTooLargeError, readBoundedText } from "../client/index.ts";
import { describeJson, InputError, parseCondition, quoted, valueFromJson } from "./values.ts";

/** Far above any transaction the cell accepts (72 KiB encoded), so only nonsense is refused here. */
export const transactionFileBytesMax = 1024 * 1024;

const conditionOps = new Set(["exists", "missing", "equals", "lt", "le", "gt", "ge"]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function onlyFields(value: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const field of Object.keys(value)) {
    if (!allowed.includes(field))
      throw new InputError(
        `${where}: unknown field ${quoted(field)}; the fields here are ${allowed.map((f) => `"${f}"`).join(", ")}`,
      );
  }
}

function list(value: unknown, where: string): readonly unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new InputError(`${where}: expected a list, got ${describeJson(value)}`);
  return value;
}

function itemName(value: unknown, where: string): string {
  if (typeof value !== "string" || value === "")
    throw new InputError(
      `${where}: ${value === undefined ? "missing; " : ""}an item is named by a non-empty string${value === undefined ? "" : `, got ${describeJson(value)}`}`,
    );
  return value;
}

function condition(value: unknown, where: string): Condition {
  if (typeof value === "string") {
    try {
      return parseCondition(value);
    } catch (error) {
      throw new InputError(`${where}: ${(error as Error).message}`);
    }
  }
  if (!isRecord(value))
    throw new InputError(
      `${where}: a condition is a string like "count>=3" or an object {"item", "op", "value"}, got ${describeJson(value)}`,
    );
  onlyFields(value, ["item", "op", "value"], where);
  const item = itemName(value.item, `${where}.item`);
  const op = value.op;
  if (typeof op !== "string" || !conditionOps.has(op))
    throw new InputError(
      `${where}.op: ${op === undefined ? "missing" : `${describeJson(op)} is not a condition`}; use "exists", "missing", "equals", "lt", "le", "gt" or "ge"`,
    );
  if (op === "exists" || op === "missing") {
    if ("value" in value) throw new InputError(`${where}: an "${op}" condition takes no value`);
    return { item, op };
  }
  if (!("value" in value)) throw new InputError(`${where}: an "${op}" condition needs a "value"`);
  const parsed = valueFromJson(value.value, `${where}.value`);
  if (op === "equals") return { item, op, value: parsed };
  if (typeof parsed !== "bigint")
    throw new InputError(`${where}.value: "${op}" compares integers; the value must be an integer`);
  return { item, op: op as "lt" | "le" | "gt" | "ge", value: parsed };
}

function write(value: unknown, where: string): Write {
  if (!isRecord(value))
    throw new InputError(`${where}: a write is an object {"item", "op", ...}, got ${describeJson(value)}`);
  const item = itemName(value.item, `${where}.item`);
  switch (value.op) {
    case "put":
      onlyFields(value, ["item", "op", "value"], where);
      if (!("value" in value)) throw new InputError(`${where}: a "put" needs a "value"`);
      return { item, op: "put", value: valueFromJson(value.value, `${where}.value`) };
    case "delete":
      onlyFields(value, ["item", "op"], where);
      return { item, op: "delete" };
    case "add": {
      onlyFields(value, ["item", "op", "delta"], where);
      if (!("delta" in value)) throw new InputError(`${where}: an "add" needs a "delta" (an integer)`);
      const delta = valueFromJson(value.delta, `${where}.delta`);
      if (typeof delta !== "bigint")
        throw new InputError(`${where}.delta: the delta of an "add" must be an integer, like 1 or "-5"`);
      return { item, op: "add", delta };
    }
    default:
      throw new InputError(
        `${where}.op: ${value.op === undefined ? "missing" : `${describeJson(value.op)} is not a write`}; use "put", "delete" or "add"`,
      );
  }
}

/** A transaction from the text of a transaction file; `origin` names the file in messages. */
export function parseTransaction(text: string, origin: string): Transaction {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new InputError(`${origin} is not valid JSON: ${(error as Error).message}`);
  }
  // JSON.parse keeps the last of two equal names in an object: the first would be dropped unseen.
  const repeated = repeatedName(text);
  if (repeated !== null)
    throw new InputError(
      `${origin}: the field ${JSON.stringify(repeated.name)} appears twice in one object (line ${repeated.line}); ` +
        "write it once (a list holds several entries)",
    );
  if (!isRecord(document))
    throw new InputError(
      `${origin}: a transaction file holds one object {"conditions", "reads", "writes"}, not ${describeJson(document)}`,
    );
  onlyFields(document, ["conditions", "reads", "writes"], origin);
  const conditions = list(document.conditions, `${origin}: conditions`).map((c, i) =>
    condition(c, `${origin}: conditions[${i}]`),
  );
  const reads = list(document.reads, `${origin}: reads`).map((r, i) => itemName(r, `${origin}: reads[${i}]`));
  const writes = list(document.writes, `${origin}: writes`).map((w, i) =>
    write(w, `${origin}: writes[${i}]`),
  );
  if (conditions.length + reads.length + writes.length === 0)
    throw new InputError(
      `${origin}: the transaction has no conditions, reads or writes; it would do nothing`,
    );
  const txn = { conditions, reads, writes };
  // What the file says wrongly (an item read or written twice, say) is its mistake; a limit it
  // breaks is the cell's refusal (exit 5), which the client reports when it checks the request.
  const problem = validateTransaction(txn);
  if (problem !== null && fileMistakes.has(problem.code))
    throw new InputError(`${origin}: ${problem.message}`);
  return txn;
}

/** Problems of a transaction that are mistakes in writing it, not limits of the cell. */
const fileMistakes: ReadonlySet<ProblemCode> = new Set<ProblemCode>([
  "malformed",
  "empty_transaction",
  "item_key_empty",
  "item_key_not_text",
  "not_a_value",
  "bad_condition_value",
  "bad_delta",
  "duplicate_read",
  "duplicate_write",
]);

/** Reads and parses a transaction file (`-` reads standard input). Throws InputError. */
export function readTransactionFile(file: string): Transaction {
  const origin = file === "-" ? "standard input" : file;
  let text: string;
  try {
    text = readBoundedText(file === "-" ? 0 : file, transactionFileBytesMax);
  } catch (error) {
    if (error instanceof FileTooLargeError)
      throw new InputError(
        `${origin} is over ${transactionFileBytesMax} bytes; a transaction is far smaller`,
      );
    throw new InputError(`cannot read the transaction file ${origin}: ${(error as Error).message}`);
  }
  return parseTransaction(text, origin);
}

/**
 * The first name that appears twice in one object of `text` (valid JSON), with the line of its
 * second appearance, or null.
 */
export function repeatedName(text: string): { name: string; line: number } | null {
  // Per open object, the names seen and whether the next string is a name; null for a list.
  const open: ({ names: Set<string>; nameNext: boolean } | null)[] = [];
  let line = 1;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === "\n") line++;
    else if (ch === "{") open.push({ names: new Set(), nameNext: true });
    else if (ch === "[") open.push(null);
    else if (ch === "}" || ch === "]") open.pop();
    else if (ch === ",") {
      const top = open[open.length - 1];
      if (top) top.nameNext = true;
    } else if (ch === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      const top = open[open.length - 1];
      if (top?.nameNext) {
        const name = JSON.parse(text.slice(i, end + 1)) as string;
        if (top.names.has(name)) return { name, line };
        top.names.add(name);
        top.nameNext = false;
      }
      i = end;
    }
  }
  return null;
}
