import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { diskLowBytes, diskLowWarning, diskNearlyFullBytes, diskSpaceNote, freeBytes } from "./disk-space.ts";

const dir = mkdtempSync(join(tmpdir(), "physalia-disk-space-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("free space in storage failures' messages", () => {
  it("reads the file system's available bytes, and null where it cannot be asked", () => {
    const free = freeBytes(dir);
    expect(free).not.toBeNull();
    expect(free).toBeGreaterThan(0);
    expect(freeBytes(join(dir, "no-such-directory"))).toBeNull();
  });

  it("says the disk is full, with the bytes left and what to do, below the threshold", () => {
    const note = diskSpaceNote("/data/s1", { free: 4096 });
    expect(note).toBe(
      "; the disk is full (4096 bytes free on the file system holding /data/s1): free space there, then start the server again",
    );
    expect(diskSpaceNote("/data/s1", { free: diskNearlyFullBytes - 1, onlyWhenFull: true })).toContain(
      "the disk is full (64.0 MiB free",
    );
  });

  it("gives the free space alone above it, and nothing when only a full disk is asked about", () => {
    expect(diskSpaceNote("/data/s1", { free: 3 * 1024 ** 3 })).toBe(
      "; 3.0 GiB free on the file system holding /data/s1",
    );
    expect(diskSpaceNote("/data/s1", { free: diskNearlyFullBytes })).toBe(
      "; 64.0 MiB free on the file system holding /data/s1",
    );
    expect(diskSpaceNote("/data/s1", { free: diskNearlyFullBytes, onlyWhenFull: true })).toBe("");
  });

  it("adds nothing when the free space is unknown", () => {
    expect(diskSpaceNote("/data/s1", { free: null })).toBe("");
    expect(diskSpaceNote(join(dir, "no-such-directory"))).toBe("");
  });

  it("warns of a disk nearly full below its threshold, and not above it or when unknown", () => {
    expect(diskLowWarning("/data/s1", 100 * 1024 * 1024)).toBe(
      "the disk is nearly full: 100.0 MiB free on the file system holding /data/s1; " +
        "the server stops once it cannot make a write durable: free space there",
    );
    expect(diskLowWarning("/data/s1", diskLowBytes)).toBeNull();
    expect(diskLowWarning("/data/s1", null)).toBeNull();
  });
});
