import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Value } from "../cell/index.ts";
import {
  formatCondition,
  formatValue,
  InputError,
  parseCondition,
  parseInteger,
  parseValue,
  valueFromJson,
  valueToJson,
} from "./values.ts";

const text = (s: string) => new TextEncoder().encode(s);
const bytes = (...b: number[]) => Uint8Array.from(b);

function problem(action: () => unknown): string {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(InputError);
    return (error as Error).message;
  }
  throw new Error("expected an InputError");
}

describe("values typed on the command line", () => {
  it("reads integers, booleans, prefixed bytes and plain text", () => {
    expect(parseValue("42")).toBe(42n);
    expect(parseValue("-7")).toBe(-7n);
    expect(parseValue("0")).toBe(0n);
    expect(parseValue("123456789012345678901234567890")).toBe(123456789012345678901234567890n);
    expect(parseValue("true")).toBe(true);
    expect(parseValue("false")).toBe(false);
    expect(parseValue("hex:00ff")).toEqual(bytes(0, 255));
    expect(parseValue("hex:00FF")).toEqual(bytes(0, 255));
    expect(parseValue("hex:")).toEqual(bytes());
    expect(parseValue("b64:AP8=")).toEqual(bytes(0, 255));
    expect(parseValue("str:42")).toEqual(text("42"));
    expect(parseValue("str:")).toEqual(text(""));
    expect(parseValue("blue")).toEqual(text("blue"));
    expect(parseValue("")).toEqual(text(""));
    expect(parseValue("héllo ✓")).toEqual(text("héllo ✓"));
  });

  it("reads what only looks like a number or a boolean as text", () => {
    for (const t of ["007", "+5", "1.5", "1e3", "-", "--1", " 42", "True", "FALSE", "0x10", "HEX:00"])
      expect(parseValue(t)).toEqual(text(t));
  });

  it("refuses malformed hex and base64 and says how to write them", () => {
    expect(problem(() => parseValue("hex:0"))).toMatch(
      /"hex:0" is not hex bytes.*pairs of hex digits.*str:hex:0/,
    );
    expect(problem(() => parseValue("hex:zz"))).toMatch(/not hex bytes/);
    expect(problem(() => parseValue("b64:AP8"))).toMatch(/"b64:AP8" is not base64.*padding/);
    expect(problem(() => parseValue("b64:A===")).length).toBeGreaterThan(0);
  });

  it("reads integers strictly where only an integer will do", () => {
    expect(parseInteger("-12", "the delta")).toBe(-12n);
    expect(problem(() => parseInteger("1.5", "the delta"))).toMatch(/the delta must be an integer.*"1.5"/);
    expect(problem(() => parseInteger("", "the delta"))).toMatch(/got ""/);
  });
});

describe("values as printed", () => {
  it("prints integers as digits, booleans as words, text as text", () => {
    expect(formatValue(-7n)).toBe("-7");
    expect(formatValue(true)).toBe("true");
    expect(formatValue(text("blue sky"))).toBe("blue sky");
    expect(formatValue(text("✓ ok"))).toBe("✓ ok");
  });

  it("marks text that would read back as something else with str:", () => {
    expect(formatValue(text("42"))).toBe("str:42");
    expect(formatValue(text("false"))).toBe("str:false");
    expect(formatValue(text("hex:00"))).toBe("str:hex:00");
    expect(formatValue(text("hex:zz"))).toBe("str:hex:zz");
    expect(formatValue(text("str:x"))).toBe("str:str:x");
    expect(formatValue(text(""))).toBe("str:");
    expect(formatValue(text("007"))).toBe("007");
    expect(formatValue(text("-x"))).toBe("str:-x");
    expect(formatValue(text("-Infinity"))).toBe("str:-Infinity");
  });

  it("prints bytes that are not printable UTF-8 as hex", () => {
    expect(formatValue(bytes(0, 255))).toBe("hex:00ff");
    expect(formatValue(text("two\nlines"))).toBe(`hex:${Buffer.from("two\nlines").toString("hex")}`);
    expect(formatValue(text("\u202eevil"))).toMatch(/^hex:/);
    expect(formatValue(text("a\u061cb"))).toMatch(/^hex:/);
    expect(formatValue(bytes(0xef, 0xbb, 0xbf, 0x41))).toBe("hex:efbbbf41");
    expect(formatValue(bytes(0xc3))).toBe("hex:c3");
  });

  it("reads back every printed value as the same value", () => {
    const value = fc.oneof(
      fc.bigInt({ min: -(2n ** 200n), max: 2n ** 200n }),
      fc.boolean(),
      fc.uint8Array({ maxLength: 40 }),
      fc.string({ unit: "grapheme", maxLength: 20 }).map(text),
      fc.constantFrom("42", "true", "hex:", "str:", "b64:AA==", "007", "").map(text),
    );
    fc.assert(
      fc.property(value, (v: Value) => {
        expect(parseValue(formatValue(v))).toEqual(v);
      }),
      { numRuns: 2000 },
    );
  });

  it("writes JSON with explicit types, integers as digit strings, bytes as text or hex", () => {
    expect(valueToJson(2n ** 70n)).toEqual({ type: "integer", value: "1180591620717411303424" });
    expect(valueToJson(false)).toEqual({ type: "boolean", value: false });
    expect(valueToJson(text("42"))).toEqual({ type: "bytes", value: { text: "42" } });
    expect(valueToJson(text("a\nb"))).toEqual({ type: "bytes", value: { text: "a\nb" } });
    expect(valueToJson(bytes(0xff))).toEqual({ type: "bytes", value: { hex: "ff" } });
  });

  it("reads its own JSON back", () => {
    for (const v of [5n, -(2n ** 80n), true, text("hi"), text(""), bytes(0, 0xff, 0x80)] as Value[])
      expect(valueFromJson(JSON.parse(JSON.stringify(valueToJson(v))), "v")).toEqual(v);
  });
});

describe("conditions", () => {
  it("reads every form", () => {
    expect(parseCondition("color=blue")).toEqual({ item: "color", op: "equals", value: text("blue") });
    expect(parseCondition("count=3")).toEqual({ item: "count", op: "equals", value: 3n });
    expect(parseCondition("flag=true")).toEqual({ item: "flag", op: "equals", value: true });
    expect(parseCondition("note=")).toEqual({ item: "note", op: "equals", value: text("") });
    expect(parseCondition("lock!")).toEqual({ item: "lock", op: "missing" });
    expect(parseCondition("lock?")).toEqual({ item: "lock", op: "exists" });
    expect(parseCondition("n<5")).toEqual({ item: "n", op: "lt", value: 5n });
    expect(parseCondition("n<=5")).toEqual({ item: "n", op: "le", value: 5n });
    expect(parseCondition("n>-5")).toEqual({ item: "n", op: "gt", value: -5n });
    expect(parseCondition("n>=0")).toEqual({ item: "n", op: "ge", value: 0n });
  });

  it("splits at the first operator, so values may hold operators", () => {
    expect(parseCondition("url=a=b<c")).toEqual({ item: "url", op: "equals", value: text("a=b<c") });
    expect(parseCondition("lock?!")).toEqual({ item: "lock?", op: "missing" });
    expect(parseCondition("a.b/c-d?")).toEqual({ item: "a.b/c-d", op: "exists" });
  });

  it("refuses what it cannot read unambiguously, saying what a condition is", () => {
    expect(problem(() => parseCondition("count"))).toMatch(
      /"count" is not a condition: a condition is ITEM=VALUE/,
    );
    expect(problem(() => parseCondition("=5"))).toMatch(/names no item before =/);
    expect(problem(() => parseCondition("!"))).toMatch(/is not a condition/);
    expect(problem(() => parseCondition("a!=5"))).toMatch(/no "not equals" condition/);
    expect(problem(() => parseCondition("a==5"))).toMatch(/single "=", like a=5/);
    expect(problem(() => parseCondition("n<abc"))).toMatch(/the value after < must be an integer.*"abc"/);
    expect(problem(() => parseCondition("n<=1.5"))).toMatch(/after <= must be an integer/);
    expect(problem(() => parseCondition("count >= 3"))).toMatch(/without spaces, like count>=3/);
    expect(problem(() => parseCondition("count>= 3"))).toMatch(/after >= starts with a space/);
    expect(problem(() => parseCondition("color= blue"))).toMatch(
      /after = starts with a space.*\(a text value that starts with a space: color=str: blue\)/,
    );
    expect(parseCondition("color=str: blue")).toEqual({
      item: "color",
      op: "equals",
      value: new TextEncoder().encode(" blue"),
    });
    expect(problem(() => parseCondition("x=hex:0"))).toMatch(
      /in the condition "x=hex:0": "hex:0" is not hex/,
    );
  });

  it("prints conditions in the syntax it reads", () => {
    for (const t of ["color=blue", "count=3", "x=str:3", "lock!", "lock?", "n<5", "n<=5", "n>-5", "n>=0"])
      expect(formatCondition(parseCondition(t))).toBe(t);
  });
});
