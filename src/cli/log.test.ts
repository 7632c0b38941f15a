import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { appendLineWriter, jsonLogger } from "./log.ts";

describe("log files", () => {
  it("drop a line a full disk refuses, rather than fail the server that logs it", () => {
    // /dev/full refuses every write with ENOSPC, as a full file system does.
    const log = appendLineWriter("/dev/full");
    const logger = jsonLogger({ server: "s1" }, { write: (line) => log.write(line) });
    expect(() => logger.log("warn", "the disk is nearly full")).not.toThrow();
    expect(() => logger.log("error", "checkpoint failed")).not.toThrow();
    expect(log.dropped).toBe(2);
    log.close();
  });

  it("append whole JSON lines, and drop what comes after close", () => {
    const directory = mkdtempSync(join(tmpdir(), "physalia-log-"));
    try {
      const path = join(directory, "s1.log");
      const log = appendLineWriter(path);
      const logger = jsonLogger({ server: "s1" }, { write: (line) => log.write(line) });
      logger.log("info", "server started", { port: 7101 });
      log.close();
      logger.log("info", "after close");
      const lines = readFileSync(path, "utf8").trim().split("\n");
      expect(lines.map((line) => JSON.parse(line).msg)).toEqual(["server started"]);
      expect(JSON.parse(lines[0] as string)).toMatchObject({ level: "info", server: "s1", port: 7101 });
      expect(log.dropped).toBe(1);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
