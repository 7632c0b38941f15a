import { describe, expect, it } from "vitest";
import { Options, UsageError } from "../scripts/bench/common.ts";
import { nodeFlags, profileFlags } from "../scripts/bench/workloads.ts";

describe("bench --node-flags", () => {
  it("passes flags through in order, after the profile flags", () => {
    expect(nodeFlags(undefined)).toEqual([]);
    expect(nodeFlags("  --trace-gc   --max-semi-space-size=32 ")).toEqual([
      "--trace-gc",
      "--max-semi-space-size=32",
    ]);
    const options = new Options(
      ["--profile-dir", "/tmp/p", "--node-flags=--trace-gc --max-semi-space-size=32"],
      [],
    );
    expect(profileFlags(options)).toEqual([
      "--cpu-prof",
      "--cpu-prof-dir",
      "/tmp/p",
      "--trace-gc",
      "--max-semi-space-size=32",
    ]);
  });

  it("refuses what is not a flag, naming it, as a usage error", () => {
    expect(() => nodeFlags("--trace-gc evil.js")).toThrow(/"evil\.js" is not a Node\.js flag/);
    expect(() => nodeFlags("-e")).toThrow(/"-e" is not a Node\.js flag/);
    expect(() => nodeFlags("--")).toThrow(/is not a Node\.js flag/);
    expect(() => nodeFlags("--eval=x y")).toThrow(UsageError);
  });
});

describe("bench options", () => {
  it("reads --name VALUE and --name=VALUE, and a value may start with -- only in the second form", () => {
    const options = new Options(["--seconds", "5", "--clients=256", "--json"], ["json"]);
    expect(options.number("seconds", 1)).toBe(5);
    expect(options.number("clients", 1)).toBe(256);
    expect(options.flag("json")).toBe(true);
    options.finish();
    expect(() => new Options(["--node-flags", "--trace-gc"], [])).toThrow(
      /--node-flags needs a value.*--node-flags=VALUE/,
    );
    expect(() => new Options(["--json=yes"], ["json"])).toThrow(/--json takes no value/);
  });

  it("calls an option nothing reads a typo", () => {
    const options = new Options(["--secnds", "5"], []);
    options.number("seconds", 1);
    expect(() => options.finish()).toThrow(/no option --secnds/);
  });
});
