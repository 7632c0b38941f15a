import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { readServerConfig, readTopology } from "./colony.ts";
import { readTransactionFile } from "./txn-file.ts";

describe("the files the command line reads", () => {
  it.runIf(existsSync("/dev/zero"))(
    "refuse a device that never ends with a message, rather than read it until memory runs out",
    () => {
      expect(() => readServerConfig("/dev/zero")).toThrow(/\/dev\/zero: .*is over 16777216 bytes/);
      expect(() => readTopology("/dev/zero")).toThrow(/\/dev\/zero: .*is over 16777216 bytes/);
      expect(() => readTransactionFile("/dev/zero")).toThrow(
        /\/dev\/zero is over \d+ bytes; a transaction is far smaller/,
      );
    },
  );
});
