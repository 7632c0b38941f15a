/**
 * JSON logs: one object per line on stderr, with the time, the level, the server and a message.
 * Fields are flat and bounded so a log line never carries a cell's data.
 */
import { closeSync, openSync, writeSync } from "node:fs";

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFields = Readonly<Record<string, string | number | boolean | null>>;

export interface Logger {
  log(level: LogLevel, message: string, fields?: LogFields): void;
}

const levelRank: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };
const fieldTextBytesMax = 512;

/**
 * Writes log lines to a file descriptor synchronously, dropping a line that cannot be written
 * (a full disk, a closed pipe) rather than failing the caller: a log that cannot be written must
 * not stop a server, and once the disk has room again the next lines are written. A pipe that
 * is full for the moment takes the line through `fallback` (a stream that buffers it).
 */
export interface LineWriter {
  write(line: string): void;
  /** Lines that could not be written. */
  readonly dropped: number;
  /** Closes the descriptor (when the writer opened it); lines written after are dropped. */
  close(): void;
}

export function fdLineWriter(
  fd: number,
  options: { fallback?: (line: string) => void; owned?: boolean } = {},
): LineWriter {
  let open = true;
  let dropped = 0;
  return {
    write(line) {
      if (!open) {
        dropped += 1;
        return;
      }
      try {
        writeSync(fd, line);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "EAGAIN" && options.fallback !== undefined)
          options.fallback(line);
        else dropped += 1;
      }
    },
    get dropped() {
      return dropped;
    },
    close() {
      if (!open) return;
      open = false;
      if (options.owned === true) closeSync(fd);
    },
  };
}

/** A log file opened for appending, written by fdLineWriter. */
export function appendLineWriter(path: string): LineWriter {
  return fdLineWriter(openSync(path, "a"), { owned: true });
}

let stderrWriter: ((line: string) => void) | null = null;

/** Standard error as fdLineWriter writes it; its stream's own errors are ignored (lines dropped). */
function writeStderr(line: string): void {
  if (stderrWriter === null) {
    process.stderr.on("error", () => {});
    const writer = fdLineWriter(2, { fallback: (text) => process.stderr.write(text) });
    stderrWriter = (text) => writer.write(text);
  }
  stderrWriter(line);
}

export function jsonLogger(
  context: LogFields,
  options: { level?: LogLevel; write?: (line: string) => void } = {},
): Logger {
  const threshold = levelRank[options.level ?? "info"];
  const write = options.write ?? writeStderr;
  return {
    log(level, message, fields = {}) {
      if (levelRank[level] < threshold) return;
      const record: Record<string, unknown> = {
        time: new Date().toISOString(),
        level,
        ...context,
        msg: message,
      };
      for (const [key, value] of Object.entries(fields))
        record[key] =
          typeof value === "string" && value.length > fieldTextBytesMax
            ? `${value.slice(0, fieldTextBytesMax)}...`
            : value;
      write(`${JSON.stringify(record)}\n`);
    },
  };
}
