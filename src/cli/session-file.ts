/**
 * The CLI's client sessions, kept between runs. Every write opens a session in its cell, and a
 * cell remembers at most 128 sessions, each for 60 s after its last use (docs/PROTOCOL.md, 15.5):
 * a script that ran `physalia add` in a loop, each run with a new session, would find the cell
 * full after 128 runs in a minute. Each run therefore takes up the sessions an earlier run left.
 *
 * A session must never serve two clients at once (the second command under one `(session, seq)`
 * is answered the first one's result). The sessions of a colony sit in at most `slotsMax` slot
 * files; a run claims one by renaming it to a name of its own, which only one process can do, and
 * puts it back under its slot's name when it ends. A run that is killed leaves its claimed file,
 * removed once it is stale; its sessions are simply not taken up again. Every failure here costs
 * only the reuse: the run goes on with new sessions, as without this file.
 *
 * Where: `$PHYSALIA_STATE_DIR`, or `$XDG_STATE_HOME/physalia`, or `~/.local/state/physalia`;
 * `PHYSALIA_STATE_DIR` set to nothing turns the reuse off. Under it, `sessions/` holds a
 * directory per connection file (named by a hash of its real path), readable by its owner only.
 */
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { type ResumedSession, resumedSessionsProblem } from "../client/index.ts";
import { limits } from "../core/index.ts";
import { makeDirectory } from "../storage/index.ts";

/** Slot files per colony: the runs that may take up sessions at once. */
export const sessionSlotsMax = 16;
/** Cells one slot remembers sessions of; the least recently used is forgotten past this. */
export const sessionSlotCellsMax = 64;
/** Larger slot files are ignored (64 cells of 16 sessions fit several times over). */
const slotBytesMax = 256 * 1024;
/** A claimed file this old belongs to a run that ended without putting it back. */
export const claimStaleMs = 10 * 60 * 1000;

const formatVersion = 1;

interface SlotFile {
  readonly version: number;
  /** originOf() of the directory the file was written in. */
  readonly origin: string;
  readonly cells: readonly {
    readonly cellKey: string;
    readonly sessions: readonly Omit<ResumedSession, "cellKey">[];
  }[];
}

/** The sessions a run took up, and where they go back. */
export interface SessionClaim {
  /** The sessions of this cell to go on with. */
  sessionsOf(cellKey: string): ResumedSession[];
  /** Puts the claim back with these sessions as the cell's (the others unchanged). Never throws. */
  release(cellKey: string, sessions: readonly ResumedSession[]): void;
}

/** The directory of the CLI's state, or null when the reuse is off or no home is known. */
export function stateDirectory(env: NodeJS.ProcessEnv): string | null {
  const explicit = env.PHYSALIA_STATE_DIR;
  if (explicit !== undefined) return explicit === "" ? null : resolve(explicit);
  if (env.XDG_STATE_HOME !== undefined && env.XDG_STATE_HOME !== "")
    return join(resolve(env.XDG_STATE_HOME), "physalia");
  if (env.HOME !== undefined && env.HOME !== "")
    return join(resolve(env.HOME), ".local", "state", "physalia");
  return null;
}

/** The directory of one colony's slots: by the connection file's real path. */
export function colonySessionDirectory(stateDir: string, colonyFile: string): string {
  let path: string;
  try {
    path = realpathSync(colonyFile);
  } catch {
    path = resolve(colonyFile);
  }
  const name = createHash("sha256").update(path).digest("hex").slice(0, 32);
  return join(stateDir, "sessions", name);
}

/** Claims a slot of the colony's sessions, or an empty one; null when the reuse is off or fails. */
export function claimSessions(colonyFile: string, env: NodeJS.ProcessEnv): SessionClaim | null {
  const stateDir = stateDirectory(env);
  if (stateDir === null) return null;
  try {
    const dir = colonySessionDirectory(stateDir, colonyFile);
    // Not Node's recursive mkdir, which spins forever where a directory cannot be made (/proc).
    makeDirectory(dir);
    chmodSync(dir, 0o700);
    const origin = originOf(dir);
    for (let slot = 0; slot < sessionSlotsMax; slot++) {
      const held = join(dir, claimedName(slot));
      try {
        renameSync(join(dir, slotName(slot)), held);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw error;
      }
      // A rename keeps the file's times: mark the claim as new, or it would look stale.
      const now = new Date();
      utimesSync(held, now, now);
      return new Claim(dir, origin, slot, held, readSlot(held, origin));
    }
    removeStaleClaims(dir);
    return new Claim(dir, origin, null, null, []);
  } catch {
    return null;
  }
}

function slotName(slot: number): string {
  return `slot-${slot}.json`;
}

function claimedName(slot: number | "new"): string {
  return `claimed-${slot}-${process.pid}-${randomBytes(6).toString("hex")}.json`;
}

/**
 * Where the slot files are, as this boot of this machine knows the directory: its device and
 * inode and the kernel's boot id. A copy of the directory (a backup restored, a machine image
 * cloned) names another, so its sessions, which the original may go on using, are not taken up.
 */
function originOf(dir: string): string {
  const { dev, ino } = statSync(dir);
  let boot = "";
  try {
    boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    // Not Linux: the directory's identity alone.
  }
  return `${dev}:${ino}:${boot}`;
}

/** The slot's sessions; nothing when the file is not one this code wrote here (see originOf). */
function readSlot(path: string, origin: string): ResumedSession[] {
  try {
    if (statSync(path).size > slotBytesMax) return [];
    const parsed = JSON.parse(readFileSync(path, "utf8")) as SlotFile;
    if (parsed?.version !== formatVersion || !Array.isArray(parsed.cells)) return [];
    if (parsed.origin !== origin) return [];
    const sessions: ResumedSession[] = [];
    for (const cell of parsed.cells.slice(-sessionSlotCellsMax)) {
      if (!Array.isArray(cell?.sessions)) return [];
      for (const s of cell.sessions)
        sessions.push({ cellKey: cell.cellKey, id: s?.id, seq: s?.seq, fresh: s?.fresh });
    }
    return resumedSessionsProblem(sessions) === null ? sessions : [];
  } catch {
    return [];
  }
}

function removeStaleClaims(dir: string): void {
  const now = Date.now();
  for (const name of readdirSync(dir)) {
    if (!name.startsWith("claimed-")) continue;
    const path = join(dir, name);
    try {
      if (now - statSync(path).mtimeMs > claimStaleMs) unlinkSync(path);
    } catch {
      // Gone already, or not ours to remove: nothing is lost either way.
    }
  }
}

class Claim implements SessionClaim {
  constructor(
    private readonly dir: string,
    private readonly origin: string,
    private readonly slot: number | null,
    private readonly held: string | null,
    private readonly sessions: readonly ResumedSession[],
  ) {}

  sessionsOf(cellKey: string): ResumedSession[] {
    return this.sessions.filter((s) => s.cellKey === cellKey).slice(0, limits.clientSessionsPerCellMax);
  }

  release(cellKey: string, sessions: readonly ResumedSession[]): void {
    const held = this.held ?? join(this.dir, claimedName("new"));
    try {
      const slot = this.slot ?? this.freeSlot();
      if (slot === null) {
        if (this.held !== null) unlinkSync(this.held);
        return;
      }
      // The cells in order of use, this one last; sessions of one cell together.
      const cells = new Map<string, Omit<ResumedSession, "cellKey">[]>();
      for (const s of this.sessions) {
        if (s.cellKey === cellKey) continue;
        const list = cells.get(s.cellKey) ?? [];
        list.push({ id: s.id, seq: s.seq, fresh: s.fresh });
        cells.set(s.cellKey, list);
      }
      const own = sessions.filter((s) => s.cellKey === cellKey).slice(0, limits.clientSessionsPerCellMax);
      if (own.length > 0)
        cells.set(
          cellKey,
          own.map((s) => ({ id: s.id, seq: s.seq, fresh: s.fresh })),
        );
      const kept = [...cells]
        .slice(-sessionSlotCellsMax)
        .map(([key, list]) => ({ cellKey: key, sessions: list }));
      const file: SlotFile = { version: formatVersion, origin: this.origin, cells: kept };
      writeFileSync(held, JSON.stringify(file), { mode: 0o600 });
      renameSync(held, join(this.dir, slotName(slot)));
    } catch {
      try {
        unlinkSync(held);
      } catch {
        // Not written, or already gone.
      }
    }
  }

  /** A slot no file names, neither put back nor claimed; null when every slot is in use. */
  private freeSlot(): number | null {
    const names = readdirSync(this.dir);
    for (let slot = 0; slot < sessionSlotsMax; slot++) {
      const used = names.some((name) => name === slotName(slot) || name.startsWith(`claimed-${slot}-`));
      if (!used) return slot;
    }
    return null;
  }
}
