import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseTransaction, readTransactionFile, repeatedName, transactionFileBytesMax } from "./txn-file.ts";
import { InputError } from "./values.ts";

const text = (s: string) => new TextEncoder().encode(s);

function problem(document: unknown): string {
  const source = typeof document === "string" ? document : JSON.stringify(document);
  try {
    parseTransaction(source, "t.json");
  } catch (error) {
    expect(error).toBeInstanceOf(InputError);
    return (error as Error).message;
  }
  throw new Error("expected an InputError");
}

describe("transaction files", () => {
  it("reads conditions, reads and writes with typed values", () => {
    const txn = parseTransaction(
      JSON.stringify({
        conditions: [
          "count>=3",
          { item: "color", op: "equals", value: "blue" },
          { item: "size", op: "equals", value: { type: "integer", value: "12345678901234567890" } },
          { item: "lock", op: "missing" },
          { item: "n", op: "lt", value: 10 },
        ],
        reads: ["color", "count"],
        writes: [
          { item: "color", op: "put", value: "red" },
          { item: "raw", op: "put", value: { type: "bytes", value: { hex: "00ff" } } },
          { item: "b", op: "put", value: { type: "bytes", value: { base64: "AP8=" } } },
          { item: "flag", op: "put", value: true },
          { item: "big", op: "put", value: "hex:0102" },
          { item: "count", op: "add", delta: -1 },
          { item: "total", op: "add", delta: "100000000000000000000" },
          { item: "draft", op: "delete" },
        ],
      }),
      "t.json",
    );
    expect(txn.conditions).toEqual([
      { item: "count", op: "ge", value: 3n },
      { item: "color", op: "equals", value: text("blue") },
      { item: "size", op: "equals", value: 12345678901234567890n },
      { item: "lock", op: "missing" },
      { item: "n", op: "lt", value: 10n },
    ]);
    expect(txn.reads).toEqual(["color", "count"]);
    expect(txn.writes).toEqual([
      { item: "color", op: "put", value: text("red") },
      { item: "raw", op: "put", value: Uint8Array.from([0, 255]) },
      { item: "b", op: "put", value: Uint8Array.from([0, 255]) },
      { item: "flag", op: "put", value: true },
      { item: "big", op: "put", value: Uint8Array.from([1, 2]) },
      { item: "count", op: "add", delta: -1n },
      { item: "total", op: "add", delta: 100000000000000000000n },
      { item: "draft", op: "delete" },
    ]);
  });

  it("lets every list be left out", () => {
    expect(parseTransaction('{"reads": ["a"]}', "t.json")).toEqual({
      conditions: [],
      reads: ["a"],
      writes: [],
    });
  });

  it("says where a file is broken and what to write instead", () => {
    expect(problem("{reads: []}")).toMatch(/^t\.json is not valid JSON/);
    expect(problem([])).toMatch(/one object \{"conditions", "reads", "writes"\}, not a list/);
    expect(problem({})).toMatch(/no conditions, reads or writes; it would do nothing/);
    expect(problem({ write: [] })).toMatch(
      /unknown field "write"; the fields here are "conditions", "reads", "writes"/,
    );
    expect(problem({ reads: "a" })).toMatch(/t\.json: reads: expected a list, got the text "a"/);
    expect(problem({ reads: ["a", 3] })).toMatch(
      /reads\[1\]: an item is named by a non-empty string, got number 3/,
    );
    expect(problem({ reads: [""] })).toMatch(/reads\[0\]: an item is named by a non-empty string/);
    expect(problem({ conditions: ["count"] })).toMatch(/conditions\[0\]: "count" is not a condition/);
    expect(problem({ conditions: [{ item: "a", op: "ne", value: 1 }] })).toMatch(
      /conditions\[0\]\.op: the text "ne" is not a condition; use "exists", "missing", "equals"/,
    );
    expect(problem({ conditions: [{ item: "a", op: "exists", value: 1 }] })).toMatch(
      /conditions\[0\]: an "exists" condition takes no value/,
    );
    expect(problem({ conditions: [{ item: "a", op: "equals" }] })).toMatch(
      /an "equals" condition needs a "value"/,
    );
    expect(problem({ conditions: [{ item: "a", op: "gt", value: "blue" }] })).toMatch(
      /conditions\[0\]\.value: "gt" compares integers/,
    );
    expect(problem({ writes: [{ item: "a", op: "set", value: 1 }] })).toMatch(
      /writes\[0\]\.op: the text "set" is not a write; use "put", "delete" or "add"/,
    );
    expect(problem({ writes: [{ item: "a", op: "put" }] })).toMatch(/writes\[0\]: a "put" needs a "value"/);
    expect(problem({ writes: [{ item: "a", op: "delete", value: 1 }] })).toMatch(
      /writes\[0\]: unknown field "value"; the fields here are "item", "op"/,
    );
    expect(problem({ writes: [{ item: "a", op: "add", delta: "x" }] })).toMatch(
      /writes\[0\]\.delta: the delta of an "add" must be an integer/,
    );
    expect(problem({ writes: [{ item: "a", op: "add", delta: 1.5 }] })).toMatch(/1\.5 is not an integer/);
    expect(problem({ writes: [{ item: "a", op: "add" }] })).toMatch(/an "add" needs a "delta"/);
    expect(problem({ writes: [{ op: "put", value: 1 }] })).toMatch(
      /writes\[0\]\.item: missing; an item is named by a non-empty string$/,
    );
    expect(problem({ writes: [{ item: "a" }] })).toMatch(
      /writes\[0\]\.op: missing; use "put", "delete" or "add"$/,
    );
    expect(problem({ conditions: [{ item: "a" }] })).toMatch(/conditions\[0\]\.op: missing; use "exists"/);
  });

  it("refuses an item read or written twice as a mistake of the file, naming it", () => {
    expect(problem({ reads: ["a", "a"] })).toMatch(/^t\.json: item "a" is read twice/);
    expect(
      problem({
        writes: [
          { item: "a", op: "put", value: 1 },
          { item: "a", op: "delete" },
        ],
      }),
    ).toMatch(/^t\.json: .*"a"/);
  });

  it("refuses a name given twice in one object, which JSON would otherwise drop silently", () => {
    const twice =
      '{"writes": [{"item": "a", "op": "put", "value": 1}],\n "writes": [{"item": "b", "op": "delete"}]}';
    expect(() => parseTransaction(twice, "t.json")).toThrow(
      't.json: the field "writes" appears twice in one object (line 2); write it once (a list holds several entries)',
    );
    expect(() =>
      parseTransaction('{"writes": [{"item": "a", "item": "b", "op": "delete"}]}', "t.json"),
    ).toThrow(/the field "item" appears twice/);
    // Equal names in different objects, escapes and names inside strings are fine.
    expect(
      repeatedName('{"a": {"a": 1}, "b": [{"a": "\\"a\\":"}, {"a": 2}], "c\\"": 1, "c": "{\\"c\\": 1}"}'),
    ).toBeNull();
    expect(repeatedName('{"a\\u0062": 1, "ab": 2}')).toEqual({ name: "ab", line: 1 });
  });

  it("says what is wrong with a value", () => {
    expect(
      problem(
        '{"writes": [{"item": "s", "op": "put", "value": {"type": "bytes", "value": {"text": "a\\ud800b"}}}]}',
      ),
    ).toMatch(/writes\[0\]\.value\.value\.text: "a\\ud800b" holds an unpaired UTF-16 surrogate/);
    expect(problem('{"writes": [{"item": "s", "op": "put", "value": "x\\udc00"}]}')).toMatch(
      /writes\[0\]\.value: "x\\udc00" holds an unpaired UTF-16 surrogate, which is not text and has no UTF-8 form; give such bytes in hex/,
    );
    const put = (value: unknown) => problem({ writes: [{ item: "a", op: "put", value }] });
    expect(put(null)).toMatch(/writes\[0\]\.value: expected a value .* got null/);
    expect(put(2 ** 60)).toMatch(
      /beyond what a JSON number holds exactly; write the integer as a string of digits/,
    );
    expect(put("hex:abc")).toMatch(/writes\[0\]\.value: "hex:abc" is not hex bytes/);
    expect(put({ type: "integer" })).toMatch(/exactly "type" and "value"/);
    expect(put({ type: "float", value: 1 })).toMatch(
      /value\.type: the text "float" is not a type; use "integer"/,
    );
    expect(put({ type: "integer", value: "1.0" })).toMatch(/value\.value must be an integer/);
    expect(put({ type: "boolean", value: "yes" })).toMatch(/a boolean is true or false, got the text "yes"/);
    expect(put({ type: "bytes", value: "00ff" })).toMatch(/bytes are \{"text": "..."\}, \{"hex": "..."\}/);
    expect(put({ type: "bytes", value: { hex: "0g" } })).toMatch(
      /value\.value\.hex: "0g" is not pairs of hex digits/,
    );
    expect(put({ type: "bytes", value: { utf8: "x" } })).toMatch(/not \{"utf8": ...\}/);
  });

  it("reads files, refusing missing and oversized ones with their name", () => {
    const dir = mkdtempSync(join(tmpdir(), "physalia-txn-"));
    try {
      const good = join(dir, "good.json");
      writeFileSync(good, '{"writes": [{"item": "a", "op": "put", "value": 1}]}');
      expect(readTransactionFile(good).writes).toEqual([{ item: "a", op: "put", value: 1n }]);
      const missing = join(dir, "missing.json");
      expect(() => readTransactionFile(missing)).toThrow(`cannot read the transaction file ${missing}`);
      const huge = join(dir, "huge.json");
      writeFileSync(huge, " ".repeat(transactionFileBytesMax + 1));
      expect(() => readTransactionFile(huge)).toThrow(/is over 1048576 bytes/);
      const broken = join(dir, "broken.json");
      writeFileSync(broken, '{"reads": [1]}');
      expect(() => readTransactionFile(broken)).toThrow(`${broken}: reads[0]`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
