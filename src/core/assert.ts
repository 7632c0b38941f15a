/**
 * Assertions stay on in production. A failed assertion is a bug in this program, never an
 * expected outcome: expected outcomes are returned as tagged unions.
 */
export class InvariantError extends Error {
  override name = "InvariantError";
}

export function assert(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) {
    throw new InvariantError(typeof message === "function" ? message() : message);
  }
}

export function assertNever(value: never, what = "value"): never {
  throw new InvariantError(`unexpected ${what}: ${JSON.stringify(value, bigintReplacer)}`);
}

function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? `${value}n` : value;
}
