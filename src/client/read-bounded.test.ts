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
