/**
 * The SDK as another project uses it: `import { PhysaliaClient } from "physalia"` resolves to the
 * compiled package with its types. The README's example is extracted, type-checked under strict
 * settings against the published declarations, compiled and run against a colony.
 */
import { execFile, execFileSync } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadColonyKey } from "../src/cli/colony.ts";
import { jsonLogger } from "../src/cli/log.ts";
import { type RunningColony, up } from "../src/cli/up.ts";
import { createCells, localTopology } from "./support/colony.ts";

const root = join(import.meta.dirname, "..");
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");

function readmeExample(): string {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## The TypeScript SDK"));
  const match = /```ts\n([\s\S]*?)```/.exec(section);
  if (match === null) throw new Error("README.md has no ```ts example under 'The TypeScript SDK'");
  return match[1] as string;
}

describe("the SDK from another project", () => {
  let project: string;
  let colony: RunningColony;

  beforeAll(async () => {
    project = mkdtempSync(join(tmpdir(), "physalia-sdk-"));
    // The package as published (its package.json, compiled JavaScript and declarations), built
    // apart from the working tree's dist/ so that other tests using dist/ are not disturbed.
    const pkg = join(project, "node_modules", "physalia");
    mkdirSync(pkg, { recursive: true });
    execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json", "--outDir", join(pkg, "dist")], {
      cwd: root,
    });
    copyFileSync(join(root, "package.json"), join(pkg, "package.json"));
    symlinkSync(join(root, "node_modules"), join(pkg, "node_modules"), "dir");
    // A Node project has Node's types; the SDK's declarations use them (Buffer, node:crypto).
    mkdirSync(join(project, "node_modules", "@types"), { recursive: true });
    symlinkSync(
      join(root, "node_modules", "@types", "node"),
      join(project, "node_modules", "@types", "node"),
      "dir",
    );
    writeFileSync(
      join(project, "package.json"),
      JSON.stringify({ name: "sdk-user", type: "module", private: true }),
    );
    writeFileSync(
      join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          skipLibCheck: false,
          types: ["node"],
          outDir: "out",
        },
        include: ["example.ts"],
      }),
    );
    const topology = await localTopology(9);
    colony = await up(
      { topology, data: join(project, ".physalia"), processes: false, env: {} },
      jsonLogger({}, { write: () => {} }),
    );
    await createCells(topology, loadColonyKey(join(project, ".physalia", "colony.key"), {}), [
      "demo-volume-1",
    ]);
  }, 120_000);

  afterAll(async () => {
    await colony?.close();
    if (project !== undefined) rmSync(project, { recursive: true, force: true });
  });

  it("type-checks and runs the README example", async () => {
    writeFileSync(join(project, "example.ts"), readmeExample());
    execFileSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: project, encoding: "utf8" });
    // Asynchronously: the colony runs in this process and must keep answering.
    const { stdout } = await promisify(execFile)(process.execPath, [join(project, "out", "example.js")], {
      cwd: project,
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(stdout.trim()).toBe("4n committed");
  }, 60_000);

  it("lets a program end once its operations have, without close()", async () => {
    writeFileSync(
      join(project, "idle.mjs"),
      `import { PhysaliaClient } from "physalia";
const client = await PhysaliaClient.connect({ colony: ".physalia/colony.json" });
await client.cell("demo-volume-1").put("idle", 1n);
console.log(String(await client.cell("demo-volume-1").get("idle")));
`,
    );
    const started = Date.now();
    const { stdout } = await promisify(execFile)(process.execPath, [join(project, "idle.mjs")], {
      cwd: project,
      encoding: "utf8",
      timeout: 20_000,
    });
    expect(stdout).toBe("1\n");
    // Its open connections to the colony do not hold it: it ends with its last operation.
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 30_000);

  it("keeps a program running until its operation ends, even with every server down", async () => {
    // Ports nobody listens on: every connection is refused, so no socket keeps the process alive,
    // and the client's own timers do not (an idle client must not hold a program open).
    const { servers } = await localTopology(7);
    writeFileSync(
      join(project, "unreachable.mjs"),
      `import { ConnectError, PhysaliaClient } from "physalia";
const servers = ${JSON.stringify(servers.map((s) => ({ id: s.id, host: s.host, port: s.port, rack: s.rack, power: s.power })))};
try {
  await PhysaliaClient.connect({ servers, colonyKey: Buffer.alloc(32, 1), requestTimout: 50 });
} catch (error) {
  console.log(error instanceof ConnectError ? "ConnectError" : error.name);
}
const client = await PhysaliaClient.connect({ servers, colonyKey: Buffer.alloc(32, 1), requestTimeoutMs: 50 });
const [read, write] = await Promise.allSettled([client.cell("v1").get("a"), client.cell("v1").put("a", 1n)]);
console.log(read.status === "fulfilled" ? "answered" : read.reason.name);
console.log(write.status === "fulfilled" ? "answered" : write.reason.name);
await client.close();
`,
    );
    const run = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      execFile(
        process.execPath,
        [join(project, "unreachable.mjs")],
        { cwd: project, encoding: "utf8", timeout: 45_000 },
        (error, stdout) =>
          resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? -1), stdout }),
      );
    });
    // Without the hold, Node exits with 13 (a top-level await that never settled), printing nothing.
    // A misspelt option is refused with the exported ConnectError. A read that reached no server
    // applied nothing; a write may still reach one whose connection opens later (OPERATIONS.md 5).
    expect(run).toEqual({ code: 0, stdout: "ConnectError\nUnavailableError\nOutcomeUnknownError\n" });
  }, 60_000);

  it("rejects code that misuses the types", () => {
    writeFileSync(
      join(project, "example.ts"),
      'import { PhysaliaClient } from "physalia";\nconst c = await PhysaliaClient.connect({ colony: "x" });\nawait c.cell("k").put("item", 3);\n',
    );
    let failure = "";
    try {
      execFileSync(process.execPath, [tsc, "-p", "tsconfig.json", "--noEmit"], {
        cwd: project,
        encoding: "utf8",
      });
    } catch (error) {
      failure = String((error as { stdout?: string }).stdout);
    }
    // A JavaScript number is not a value: integers are bigints.
    expect(failure).toMatch(/Argument of type '3' is not assignable to parameter of type 'Value'/);
  });
});
