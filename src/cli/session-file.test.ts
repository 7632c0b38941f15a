import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ResumedSession } from "../client/index.ts";
import {
  claimSessions,
  claimStaleMs,
  colonySessionDirectory,
  sessionSlotCellsMax,
  sessionSlotsMax,
  stateDirectory,
} from "./session-file.ts";

function session(cellKey: string, id: number, seq = 1): ResumedSession {
  return { cellKey, id, seq, fresh: false };
}

describe("the CLI's sessions kept between runs", () => {
  let state: string;
  let env: NodeJS.ProcessEnv;
  const colonyFile = "/somewhere/colony.json";

  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), "physalia-sessions-"));
    env = { PHYSALIA_STATE_DIR: state };
  });
  afterEach(() => rmSync(state, { recursive: true, force: true }));

  it("live under PHYSALIA_STATE_DIR, XDG_STATE_HOME or the home directory, and nowhere when turned off", () => {
    expect(stateDirectory({ PHYSALIA_STATE_DIR: "/s", XDG_STATE_HOME: "/x", HOME: "/h" })).toBe("/s");
    expect(stateDirectory({ PHYSALIA_STATE_DIR: "", HOME: "/h" })).toBeNull();
    expect(stateDirectory({ XDG_STATE_HOME: "/x", HOME: "/h" })).toBe("/x/physalia");
    expect(stateDirectory({ HOME: "/h" })).toBe("/h/.local/state/physalia");
    expect(stateDirectory({})).toBeNull();
    expect(claimSessions(colonyFile, { PHYSALIA_STATE_DIR: "" })).toBeNull();
  });

  it("hand a run's sessions to the next run, and to no other run meanwhile", () => {
    const first = claimSessions(colonyFile, env);
    expect(first?.sessionsOf("vol-1")).toEqual([]);
    first?.release("vol-1", [session("vol-1", 11, 3)]);

    const second = claimSessions(colonyFile, env);
    expect(second?.sessionsOf("vol-1")).toEqual([session("vol-1", 11, 3)]);
    // While the second run holds them, a third run at the same time gets none of them.
    const third = claimSessions(colonyFile, env);
    expect(third?.sessionsOf("vol-1")).toEqual([]);
    third?.release("vol-1", [session("vol-1", 22)]);
    second?.release("vol-1", [session("vol-1", 11, 4)]);

    // Both are kept, each in a slot of its own, and each goes to one run.
    const a = claimSessions(colonyFile, env);
    const b = claimSessions(colonyFile, env);
    const c = claimSessions(colonyFile, env);
    const ids = [a, b, c].flatMap((claim) => claim?.sessionsOf("vol-1") ?? []).map((s) => s.id);
    expect(ids.sort()).toEqual([11, 22]);
  });

  it("are not taken up from a copy of their directory, which the original may go on using", () => {
    claimSessions(colonyFile, env)?.release("vol-1", [session("vol-1", 11, 3)]);
    const copy = mkdtempSync(join(tmpdir(), "physalia-sessions-copy-"));
    try {
      cpSync(state, copy, { recursive: true });
      expect(claimSessions(colonyFile, { PHYSALIA_STATE_DIR: copy })?.sessionsOf("vol-1")).toEqual([]);
      // The original still has them.
      expect(claimSessions(colonyFile, env)?.sessionsOf("vol-1")).toEqual([session("vol-1", 11, 3)]);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it("give up at once on a directory that cannot be made, however it fails", () => {
    const started = performance.now();
    // Under /proc, Node's recursive mkdir would retry forever.
    expect(claimSessions(colonyFile, { PHYSALIA_STATE_DIR: "/proc/self/physalia-state" })).toBeNull();
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it("keep another colony's sessions apart", () => {
    claimSessions(colonyFile, env)?.release("vol-1", [session("vol-1", 11)]);
    expect(claimSessions("/elsewhere/colony.json", env)?.sessionsOf("vol-1")).toEqual([]);
    expect(colonySessionDirectory(state, colonyFile)).not.toBe(
      colonySessionDirectory(state, "/elsewhere/colony.json"),
    );
  });

  it("keep the other cells' sessions and forget the least recently used cells past the limit", () => {
    for (let i = 0; i < sessionSlotCellsMax + 5; i++) {
      claimSessions(colonyFile, env)?.release(`cell-${i}`, [session(`cell-${i}`, i + 1)]);
    }
    const claim = claimSessions(colonyFile, env);
    expect(claim?.sessionsOf("cell-0")).toEqual([]);
    expect(claim?.sessionsOf("cell-5")).toEqual([session("cell-5", 6)]);
    expect(claim?.sessionsOf(`cell-${sessionSlotCellsMax + 4}`)).toHaveLength(1);
    // A run that used none of a cell's sessions leaves the cell out.
    claim?.release("cell-5", []);
    expect(claimSessions(colonyFile, env)?.sessionsOf("cell-5")).toEqual([]);
  });

  it("ignore a slot file that is not one they wrote, and replace it", () => {
    claimSessions(colonyFile, env)?.release("vol-1", [session("vol-1", 11)]);
    const dir = colonySessionDirectory(state, colonyFile);
    for (const text of [
      "{not json",
      '{"version":1,"cells":[{"cellKey":"vol-1","sessions":[{"id":0}]}]}',
      "[]",
    ]) {
      writeFileSync(join(dir, "slot-0.json"), text);
      const claim = claimSessions(colonyFile, env);
      expect(claim?.sessionsOf("vol-1")).toEqual([]);
      claim?.release("vol-1", [session("vol-1", 33)]);
      expect(JSON.parse(readFileSync(join(dir, "slot-0.json"), "utf8")).cells).toEqual([
        { cellKey: "vol-1", sessions: [{ id: 33, seq: 1, fresh: false }] },
      ]);
    }
  });

  it("use at most the slots they have, and clear the claims of runs that ended without putting them back", () => {
    // As many runs at once as there are slots, each leaving a session.
    const claims = Array.from({ length: sessionSlotsMax }, () => claimSessions(colonyFile, env));
    claims.forEach((claim, i) => {
      claim?.release("vol-1", [session("vol-1", i + 1)]);
    });
    expect(claims.every((claim) => claim !== null)).toBe(true);
    // Every slot claimed by runs that were then killed.
    const held = Array.from({ length: sessionSlotsMax }, () => claimSessions(colonyFile, env));
    expect(held.flatMap((claim) => claim?.sessionsOf("vol-1") ?? [])).toHaveLength(sessionSlotsMax);
    const dir = colonySessionDirectory(state, colonyFile);
    // One more run finds no slot: it goes on without sessions, and what it leaves is dropped.
    const extra = claimSessions(colonyFile, env);
    expect(extra?.sessionsOf("vol-1")).toEqual([]);
    extra?.release("vol-1", [session("vol-1", 99)]);
    expect(readdirSync(dir).filter((name) => name.startsWith("slot-"))).toHaveLength(0);
    expect(readdirSync(dir).filter((name) => name.startsWith("claimed-"))).toHaveLength(sessionSlotsMax);
    // Claims younger than claimStaleMs stay; older ones go at the next run that finds no slot.
    const old = new Date(Date.now() - claimStaleMs - 1000);
    for (const name of readdirSync(dir).slice(0, 3)) utimesSync(join(dir, name), old, old);
    claimSessions(colonyFile, env);
    expect(readdirSync(dir).filter((name) => name.startsWith("claimed-"))).toHaveLength(sessionSlotsMax - 3);
  });
});
