/**
 * Arguments as the shell gave them. Node.js decodes each argument as UTF-8 and puts U+FFFD in
 * place of bytes that are not, so `k\xff` and `k\xfe` would both arrive as `k\uFFFD` and name one
 * item (or cell, or value). The bytes as given are in /proc/self/cmdline on Linux: an argument
 * holding U+FFFD is looked up there, and refused if its bytes are not UTF-8.
 */
import { readFileSync } from "node:fs";
import { firstInvalidUtf8 } from "../client/index.ts";

/** The process's arguments as bytes (program and node's options first), or null where unknown. */
export function rawArguments(): Uint8Array[] | null {
  try {
    const bytes = readFileSync("/proc/self/cmdline");
    const entries: Uint8Array[] = [];
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] === 0) {
        entries.push(bytes.subarray(start, i));
        start = i + 1;
      }
    }
    if (start < bytes.length) entries.push(bytes.subarray(start));
    return entries;
  } catch {
    return null;
  }
}

/**
 * Why an argument cannot be used, or null: the first of `args` (the command's arguments, as
 * decoded) that arrived as bytes that are not UTF-8. `raw` holds the process's arguments as bytes;
 * the command's are its last ones.
 */
export function argumentEncodingProblem(
  args: readonly string[],
  raw: readonly Uint8Array[] | null,
): string | null {
  if (raw === null || raw.length < args.length) return null;
  const offset = raw.length - args.length;
  for (const [i, arg] of args.entries()) {
    if (!arg.includes("\uFFFD")) continue;
    const bytes = raw[offset + i] as Uint8Array;
    const at = firstInvalidUtf8(bytes);
    if (at < bytes.length) {
      return (
        `argument ${i + 1} is not UTF-8 text (its byte ${at} is 0x${(bytes[at] as number).toString(16).padStart(2, "0")}): ` +
        "keys and text values are UTF-8; give other bytes as a value in hex:... or b64:..."
      );
    }
  }
  return null;
}
