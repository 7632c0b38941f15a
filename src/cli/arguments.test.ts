import { describe, expect, it } from "vitest";
import { argumentEncodingProblem, rawArguments } from "./arguments.ts";

const utf8 = (text: string) => new TextEncoder().encode(text);

describe("arguments as the shell gave them", () => {
  it("refuse one whose bytes are not UTF-8, naming it and its first bad byte", () => {
    // Node.js's decoding of `k\xff`: the bad byte became U+FFFD.
    const args = ["put", "c1", "k\uFFFD", "A"];
    const raw = [
      utf8("node"),
      utf8("--flag"),
      utf8("main.js"),
      utf8("put"),
      utf8("c1"),
      Uint8Array.of(0x6b, 0xff),
      utf8("A"),
    ];
    expect(argumentEncodingProblem(args, raw)).toBe(
      "argument 3 is not UTF-8 text (its byte 1 is 0xff): keys and text values are UTF-8; give other bytes as a value in hex:... or b64:...",
    );
  });

  it("take U+FFFD that was given as itself, and arguments that are unknown as bytes", () => {
    const args = ["put", "c1", "k\uFFFD", "A"];
    const raw = [utf8("node"), utf8("main.js"), ...args.map(utf8)];
    expect(argumentEncodingProblem(args, raw)).toBeNull();
    expect(argumentEncodingProblem(args, null)).toBeNull();
    expect(argumentEncodingProblem(args, [utf8("x")])).toBeNull();
  });

  it("read this process's arguments as bytes, ending with the decoded ones", () => {
    const raw = rawArguments();
    if (raw === null) return; // not Linux: nothing to check
    const last = raw.slice(-(process.argv.length - 1)).map((b) => new TextDecoder().decode(b));
    expect(last).toEqual(process.argv.slice(1));
  });
});
