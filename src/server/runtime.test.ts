import { describe, expect, it } from "vitest";
import { missingServerNodeFlags, serverNodeFlags } from "./runtime.ts";

describe("missingServerNodeFlags", () => {
  it("finds every flag missing from a plain `node` start", () => {
    expect(missingServerNodeFlags([])).toEqual([...serverNodeFlags]);
  });

  it("finds none when the process has them all, on its command line or in NODE_OPTIONS", () => {
    expect(missingServerNodeFlags([...serverNodeFlags])).toEqual([]);
    expect(missingServerNodeFlags([], serverNodeFlags.join(" "))).toEqual([]);
    const [first, ...rest] = serverNodeFlags;
    expect(missingServerNodeFlags(rest, ` ${first}  `)).toEqual([]);
  });

  it("counts a flag given with another value, or spelled with underscores, as given", () => {
    const others = serverNodeFlags.filter((flag) => !flag.startsWith("--max-semi-space-size"));
    expect(missingServerNodeFlags(["--max_semi_space_size=32", ...others])).toEqual([]);
  });

  it("names only what is missing", () => {
    const [first, ...rest] = serverNodeFlags;
    expect(missingServerNodeFlags(rest)).toEqual([first]);
    expect(missingServerNodeFlags(["--inspect", "--max-old-space-size=4096"], "--trace-gc")).toEqual([
      ...serverNodeFlags,
    ]);
  });
});
