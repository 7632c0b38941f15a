import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  claimDataDirectory,
  DataDirectoryIdentityError,
  identityFileName,
  readDataIdentity,
  refuseOthersDirectory,
} from "./data-identity.ts";

describe("a data directory's identity", () => {
  const dirs: string[] = [];
  const fresh = () => {
    const dir = mkdtempSync(join(tmpdir(), "physalia-identity-"));
    dirs.push(dir);
    return dir;
  };
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  const neverAsked = () => {
    throw new Error("the stored nodes are not asked when the file names the server");
  };

  it("is written on the first claim and holds the server after that", () => {
    const dir = fresh();
    expect(readDataIdentity(dir)).toBeNull();
    claimDataDirectory(dir, "s1", () => null);
    expect(readFileSync(join(dir, identityFileName), "utf8")).toBe("s1\n");
    expect(readDataIdentity(dir)).toBe("s1");
    claimDataDirectory(dir, "s1", neverAsked);
    refuseOthersDirectory(dir, "s1");
  });

  it("refuses another server, naming both, and leaves the file as it was", () => {
    const dir = fresh();
    claimDataDirectory(dir, "s1", () => null);
    expect(() => refuseOthersDirectory(dir, "s2")).toThrow(
      /belongs to server s1, and this server is s2: .*Point `data` at s2's own directory, or start s1 with this one/,
    );
    expect(() => claimDataDirectory(dir, "s2", neverAsked)).toThrow(DataDirectoryIdentityError);
    expect(readDataIdentity(dir)).toBe("s1");
  });

  it("without a file, takes the server of a stored node, and writes nothing for another", () => {
    const dir = fresh();
    expect(() => claimDataDirectory(dir, "s2", () => "s1")).toThrow(
      /belongs to server s1, and this server is s2/,
    );
    expect(readDataIdentity(dir)).toBeNull();
    refuseOthersDirectory(dir, "s2"); // only the file is read: nothing to refuse by
    claimDataDirectory(dir, "s1", () => "s1");
    expect(readDataIdentity(dir)).toBe("s1");
  });

  it("refuses a damaged file with what it holds and what to do, instead of guessing", () => {
    const dir = fresh();
    for (const text of ["", "\n", "s1 s2\n"]) {
      writeFileSync(join(dir, identityFileName), text);
      expect(() => refuseOthersDirectory(dir, "s1"), JSON.stringify(text)).toThrow(
        /should hold the id of the server this data directory belongs to, .*write that server's id in it/,
      );
    }
    writeFileSync(join(dir, identityFileName), "s".repeat(5000));
    expect(() => readDataIdentity(dir)).toThrow(/cannot read .*server-id.*not a file of at most 1024 bytes/);
    rmSync(join(dir, identityFileName));
    mkdirSync(join(dir, identityFileName));
    expect(() => claimDataDirectory(dir, "s1", () => null)).toThrow(/not a file of at most 1024 bytes/);
  });
});
