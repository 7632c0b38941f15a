import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ColonyFileError, colonyKeyEnv, ensureKeyFile, keyFileExposure, loadColonyKeys } from "./colony.ts";

const dir = mkdtempSync(join(tmpdir(), "physalia-key-file-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const a = "ab".repeat(32);
const b = "cd".repeat(32);

describe("the colony key file", () => {
  it("is created readable by its owner only, and then not reported", () => {
    const file = join(dir, "made", "colony.key");
    ensureKeyFile(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(keyFileExposure(file)).toBeNull();
  });

  it("is reported when its group or others may read or change it, with the command that fixes it", () => {
    const file = join(dir, "open.key");
    writeFileSync(file, `${a}\n`);
    for (const mode of [0o644, 0o640, 0o604, 0o620, 0o666]) {
      chmodSync(file, mode);
      expect(keyFileExposure(file)).toMatch(
        new RegExp(`mode ${mode.toString(8)}\\): .* \\(chmod 600 ${file.replace(/[.]/g, "\\.")}\\)$`),
      );
    }
    chmodSync(file, 0o400);
    expect(keyFileExposure(file)).toBeNull();
    expect(keyFileExposure(join(dir, "missing.key"))).toBeNull();
  });

  it("gives both keys of a rotation, from the file or from the environment, which wins", () => {
    const file = join(dir, "two.key");
    writeFileSync(file, `${a}\n${b}\n`, { mode: 0o600 });
    const fromFile = loadColonyKeys(file, {});
    expect(fromFile.signing.toString("hex")).toBe(a);
    expect(fromFile.alsoAccepted.map((k) => k.toString("hex"))).toEqual([b]);
    const fromEnv = loadColonyKeys(file, { [colonyKeyEnv]: `${b},${a}` });
    expect(fromEnv.signing.toString("hex")).toBe(b);
    expect(fromEnv.alsoAccepted.map((k) => k.toString("hex"))).toEqual([a]);
    expect(() => loadColonyKeys(file, { [colonyKeyEnv]: `${a},${b},${a}` })).toThrow(ColonyFileError);
  });
});
