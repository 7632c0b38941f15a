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

  it("suspects a peer whose address refused a connection until it is heard from again", () => {
    const detector = new FailureDetector("s1", 0);
    // Never heard from (a colony starting): a refusal alone does not make it suspected.
    detector.refused("s2");
    expect(detector.isAlive("s2", 1)).toBe(true);
    detector.heard("s2", 10);
    detector.refused("s2");
    expect(detector.isAlive("s2", 11)).toBe(false);
    expect(detector.suspected(["s2", "s3"], 11)).toEqual(["s2"]);
    detector.heard("s2", 12);
    expect(detector.isAlive("s2", 13)).toBe(true);
    detector.refused("s1");
    expect(detector.isAlive("s1", 13)).toBe(true);
  });
});
