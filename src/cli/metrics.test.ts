import { describe, expect, it } from "vitest";
import { DurationHistogram } from "../core/index.ts";
import { counter, formatMetrics, histogram, labeledCounter, secondsHistogram } from "./metrics.ts";

describe("formatMetrics", () => {
  it("writes a histogram's buckets cumulatively, then +Inf, its sum and its count", () => {
    // 2 observations <= 0.01, 1 in (0.01, 0.1], none in (0.1, 1], 1 above 1.
    const text = formatMetrics([histogram("x_seconds", "help", [0.01, 0.1, 1], [2, 1, 0, 1], 1.75)]);
    expect(text).toBe(
      [
        "# HELP x_seconds help",
        "# TYPE x_seconds histogram",
        'x_seconds_bucket{le="0.01"} 2',
        'x_seconds_bucket{le="0.1"} 3',
        'x_seconds_bucket{le="1"} 3',
        'x_seconds_bucket{le="+Inf"} 4',
        "x_seconds_sum 1.75",
        "x_seconds_count 4",
        "",
      ].join("\n"),
    );
  });

  it("writes durations counted in milliseconds as a histogram in seconds, each in its bucket", () => {
    const durations = new DurationHistogram([10, 100]);
    // At a bound counts in that bucket; above the last bound, in +Inf.
    for (const ms of [0, 10, 10.5, 100, 250]) durations.record(ms);
    const text = formatMetrics([secondsHistogram("t_seconds", "help", [10, 100], durations.snapshot())]);
    expect(text).toContain('t_seconds_bucket{le="0.01"} 2\n');
    expect(text).toContain('t_seconds_bucket{le="0.1"} 4\n');
    expect(text).toContain('t_seconds_bucket{le="+Inf"} 5\n');
    expect(text).toContain("t_seconds_sum 0.3705\n");
    expect(text).toContain("t_seconds_count 5\n");
  });

  it("refuses counts that do not match the bounds (one more count than bounds)", () => {
    expect(() => histogram("x", "help", [1, 2], [1, 2], 0)).toThrow(/2 counts for 2 bounds/);
  });

  it("writes a labelled counter as one series per label value, in the order given", () => {
    expect(formatMetrics([labeledCounter("m_total", "help", "kind", { accept: 4, 'a"b': 0 })])).toBe(
      '# HELP m_total help\n# TYPE m_total counter\nm_total{kind="accept"} 4\nm_total{kind="a\\"b"} 0\n',
    );
  });

  it("writes a counter with its type and value", () => {
    expect(formatMetrics([counter("c_total", "a\\nb", 3)])).toBe(
      "# HELP c_total a\\nb\n# TYPE c_total counter\nc_total 3\n",
    );
  });
});
