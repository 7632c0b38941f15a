import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { commandCodec } from "../cell/index.ts";
import { EnvironmentDamagedError, LmdbStorage, openEnvironment } from "./lmdb.ts";
import { environmentFileProblem } from "./lmdb-header.ts";

const root = mkdtempSync(join(tmpdir(), "physalia-lmdb-header-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** An environment written to and closed: its data.mdb, with a few hundred pages in use. */
async function writtenEnvironment(): Promise<string> {
  const directory = join(root, "source");
  const env = openEnvironment(directory);
  await env.meta.transaction(() => {
    for (let i = 0; i < 2000; i++) env.meta.put(Buffer.from(`key-${i}`), Buffer.alloc(100, i));
  });
  await env.root.close();
  return join(directory, "data.mdb");
}

let count = 0;
/** A fresh directory holding a copy of `source`, changed by `damage`. */
function copyWith(source: string, damage: (file: string) => void): string {
  const directory = join(root, `copy-${count++}`);
  mkdirSync(directory, { recursive: true });
  const file = join(directory, "data.mdb");
  copyFileSync(source, file);
  damage(file);
  return directory;
}

describe("the lmdb data file's header, looked at before lmdb maps the file", () => {
  it("passes an intact file, a missing one and an empty one", async () => {
    const source = await writtenEnvironment();
    expect(statSync(source).size).toBeGreaterThan(100_000);
    expect(environmentFileProblem(copyWith(source, () => {}))).toBeNull();
    expect(environmentFileProblem(join(root, "nowhere"))).toBeNull();
    expect(environmentFileProblem(copyWith(source, (file) => truncateSync(file, 0)))).toBeNull();
  });

  it("names a directory where the data file should be", () => {
    const directory = mkdtempSync(join(root, "dir-"));
    mkdirSync(join(directory, "data.mdb"));
    expect(environmentFileProblem(directory)).toMatch(/data\.mdb is not a file/);
  });

  it("names a file without a header, and one cut short of the pages its header names", async () => {
    const source = await writtenEnvironment();
    const size = statSync(source).size;
    const cases: [(file: string) => void, RegExp][] = [
      [(file) => truncateSync(file, 100), /\(100 bytes\) does not start with an lmdb header/],
      [(file) => writeFileSync(file, Buffer.alloc(size)), /does not start with an lmdb header/],
      [(file) => writeFileSync(file, Buffer.alloc(size, 0x5a)), /does not start with an lmdb header/],
      [
        (file) => truncateSync(file, size - 1024),
        new RegExp(
          `is ${size - 1024} bytes, but its header names pages up to byte ${size}: the file was cut short`,
        ),
      ],
      [
        (file) => truncateSync(file, 9000),
        /is 9000 bytes, but its header names pages up to byte \d+: the file was cut short/,
      ],
    ];
    for (const [damage, expected] of cases) {
      const directory = copyWith(source, damage);
      expect(environmentFileProblem(directory)).toMatch(expected);
      // Opening the storage refuses it with advice, where lmdb would have crashed the process.
      expect(() => LmdbStorage.open({ path: directory, codec: commandCodec })).toThrow(
        EnvironmentDamagedError,
      );
      expect(() => LmdbStorage.open({ path: directory, codec: commandCodec })).toThrow(
        /replace its nodes with new incarnations/,
      );
    }
  });
});
