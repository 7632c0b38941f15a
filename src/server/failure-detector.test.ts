import { describe, expect, it } from "vitest";
import { limits } from "../core/index.ts";
import { FailureDetector } from "./failure-detector.ts";

describe("failure detector", () => {
  it("trusts peers at start, suspects silence, and clears on the next message", () => {
    const detector = new FailureDetector("s1", 0);
    expect(detector.isAlive("s2", limits.suspectAfterMs - 1)).toBe(true);
    expect(detector.isAlive("s2", limits.suspectAfterMs)).toBe(false);
    const later = limits.suspectAfterMs * 2;
    detector.heard("s2", later);
    expect(detector.isAlive("s2", later + limits.suspectAfterMs - 1)).toBe(true);
    expect(detector.suspected(["s2", "s3"], later)).toEqual(["s3"]);
    expect(detector.isAlive("s1", 1e9)).toBe(true);
  });
});
