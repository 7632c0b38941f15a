import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readColonyConnection, readColonyKeyFile } from "./connect.ts";
import { FileTooLargeError, readBoundedText } from "./read-bounded.ts";

const dir = mkdtempSync(join(tmpdir(), "physalia-read-bounded-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("reading a file with a bound on its size", () => {
  it("reads a file up to the bound, and refuses one a byte over it", () => {
    const file = join(dir, "text");
    writeFileSync(file, "héllo");
    expect(readBoundedText(file, 6)).toBe("héllo");
    expect(() => readBoundedText(file, 5)).toThrow(FileTooLargeError);
    expect(() => readBoundedText(file, 5)).toThrow(`${file} is over 5 bytes`);
    writeFileSync(file, "x".repeat(200_000));
    expect(readBoundedText(file, 200_000)).toHaveLength(200_000);
    expect(() => readBoundedText(join(dir, "missing"), 10)).toThrow(/ENOENT/);
  });

  it("refuses bytes that are not UTF-8, naming the first, rather than replace them", () => {
    const file = join(dir, "latin1");
    writeFileSync(file, Buffer.from([0x64, 0x61, 0x74, 0x61, 0x3a, 0x20, 0x64, 0xff, 0x0a]));
    expect(() => readBoundedText(file, 100)).toThrow(/not UTF-8 text \(byte 7 is not\): save it as UTF-8/);
    // A character cut at the end, and one after valid multi-byte characters.
    writeFileSync(file, Buffer.concat([Buffer.from("héllo "), Buffer.from([0xe2, 0x82])]));
    expect(() => readBoundedText(file, 100)).toThrow(/it ends inside a character/);
    writeFileSync(file, Buffer.concat([Buffer.from("€€ "), Buffer.from([0xc3, 0x28])]));
    expect(() => readBoundedText(file, 100)).toThrow(/byte 7 is not/);
    writeFileSync(file, Buffer.concat([Buffer.from("é"), Buffer.from([0x80])]));
    expect(() => readBoundedText(file, 100)).toThrow(/byte 2 is not/);
    // A byte-order mark is not content.
    writeFileSync(file, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("{}")]));
    expect(readBoundedText(file, 100)).toBe("{}");
  });

  it.runIf(existsSync("/dev/zero"))(
    "refuses a device that never ends at the bound, for connection and key files",
    () => {
      expect(() => readBoundedText("/dev/zero", 1000)).toThrow(FileTooLargeError);
      expect(() => readColonyConnection("/dev/zero")).toThrow(
        /connection file \/dev\/zero: .*is over 16777216 bytes/,
      );
      expect(() => readColonyKeyFile("/dev/zero")).toThrow(/key file \/dev\/zero: .*is over 4096 bytes/);
    },
  );
});
