import { describe, expect, it } from "vitest";
import { limits } from "../core/index.ts";
import { FailureDetector } from "./failure-detector.ts";

describe("failure detector", () => {
  it("trusts peers at start, suspects silence, and clears on the next message", () => {
    const detector = new FailureDetector("s1", 0);
    expect(detector.isAlive("s2", limits.suspectAfterMs - 1)).toBe(true);
    expect(detector.isAlive("s2", limits.suspectAfterMs)).toBe(false);
    detector.heard("s2", 1000);
    expect(detector.isAlive("s2", 1000 + limits.suspectAfterMs - 1)).toBe(true);
    expect(detector.suspected(["s2", "s3"], 1000)).toEqual(["s3"]);
    expect(detector.isAlive("s1", 1e9)).toBe(true);
  });
});
