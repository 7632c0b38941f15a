/**
 * JSON logs: one object per line on stderr, with the time, the level, the server and a message.
 * Fields are flat and bounded so a log line never carries a cell's data.
 */
export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFields = Readonly<Record<string, string | number | boolean | null>>;

export interface Logger {
  log(level: LogLevel, message: string, fields?: LogFields): void;
}

const levelRank: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };
const fieldTextBytesMax = 512;

export function jsonLogger(
  context: LogFields,
  options: { level?: LogLevel; write?: (line: string) => void } = {},
): Logger {
  const threshold = levelRank[options.level ?? "info"];
  const write = options.write ?? ((line: string) => process.stderr.write(line));
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
