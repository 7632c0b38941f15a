/**
 * Checks over a world's client history: per-cell linearizability (Wing-Gong/Porcupine style,
 * against an independent model of the cell), and no acknowledged write lost (its command is in
 * the chosen log at the slot it was acknowledged with).
 */

import type { Transaction, TxnResult } from "../cell/index.ts";
import type { CellKey } from "../core/index.ts";
import { cellModel } from "./cell-model.ts";
import { checkLinearizable, type HistoryOperation } from "./linearizability.ts";
import type { HistoryEntry, SimWorld } from "./world.ts";

export interface HistoryCheck {
  readonly violations: string[];
  readonly linearizable: boolean;
  /** Cells whose history the search could not decide within its step budget. */
  readonly undecidedCells: number;
}

/** The operation as the checker sees it, or null if it certainly took no effect (or is eventual). */
function asOperation(entry: HistoryEntry): HistoryOperation<{ txn: Transaction }, TxnResult> | null {
  if (entry.consistency === "eventual") return null;
  const base = { id: entry.id, client: entry.client, input: { txn: entry.txn }, callMs: entry.callMs };
  if (entry.returnMs !== null && entry.output !== undefined) {
    return { ...base, returnMs: entry.returnMs, output: entry.output };
  }
  // A write whose outcome is unknown (or still pending) may take effect at any time after its call.
  if (entry.consistency === "write" && (entry.failure === null || entry.failure === "outcome_unknown")) {
    return { ...base, returnMs: null, output: undefined };
  }
  return null;
}

export function checkHistory(world: SimWorld, options: { maxSteps?: number } = {}): HistoryCheck {
  const byCell = new Map<CellKey, HistoryEntry[]>();
  for (const entry of world.history) {
    let list = byCell.get(entry.cellKey);
    if (list === undefined) {
      list = [];
      byCell.set(entry.cellKey, list);
    }
    list.push(entry);
  }
  const violations: string[] = [];
  let linearizable = true;
  let undecidedCells = 0;
  for (const [cellKey, entries] of byCell) {
    const history = entries.map(asOperation).filter((op) => op !== null);
    const result = checkLinearizable(history, cellModel(), { maxSteps: options.maxSteps ?? 2_000_000 });
    if (result.status === "violation") {
      linearizable = false;
      violations.push(`cell ${cellKey} is not linearizable: ${result.explanation}`);
    } else if (result.status === "unknown") {
      undecidedCells += 1;
    }
    const chosen = world.chosenLog(cellKey);
    for (const entry of entries) {
      if (entry.consistency !== "write" || entry.output === undefined) continue;
      if (entry.command === null || entry.index === null) continue;
      const marker = `${entry.command.session}.${entry.command.seq}:`;
      if (!(chosen.get(entry.index)?.includes(marker) ?? false)) {
        violations.push(
          `cell ${cellKey}: write ${marker} acknowledged at slot ${entry.index} is not in the chosen log`,
        );
      }
    }
  }
  return { violations, linearizable, undecidedCells };
}
