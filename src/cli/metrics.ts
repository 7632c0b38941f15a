/**
 * The Prometheus text format (version 0.0.4) for a server's /metrics. Series are per server,
 * never per cell: a colony has millions of cells.
 */
export type MetricKind = "counter" | "gauge" | "histogram";

export interface Metric {
  readonly name: string;
  readonly help: string;
  readonly kind: MetricKind;
  readonly samples: readonly {
    /** Appended to the metric's name (a histogram's `_bucket`, `_sum`, `_count`). */
    readonly suffix?: string;
    readonly labels?: Readonly<Record<string, string>>;
    readonly value: number;
  }[];
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}

export function formatMetrics(metrics: readonly Metric[]): string {
  const lines: string[] = [];
  for (const metric of metrics) {
    lines.push(`# HELP ${metric.name} ${metric.help.replace(/\n/g, " ")}`);
    lines.push(`# TYPE ${metric.name} ${metric.kind}`);
    for (const sample of metric.samples) {
      const labels = Object.entries(sample.labels ?? {});
      const labelText =
        labels.length === 0 ? "" : `{${labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`;
      lines.push(`${metric.name}${sample.suffix ?? ""}${labelText} ${formatValue(sample.value)}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

export function counter(name: string, help: string, value: number): Metric {
  return { name, help, kind: "counter", samples: [{ value }] };
}

/** One counter with a sample per value of one label, in the order given. */
export function labeledCounter(
  name: string,
  help: string,
  label: string,
  values: Readonly<Record<string, number>>,
): Metric {
  const samples = Object.entries(values).map(([key, value]) => ({ labels: { [label]: key }, value }));
  return { name, help, kind: "counter", samples };
}

export function gauge(name: string, help: string, value: number): Metric {
  return { name, help, kind: "gauge", samples: [{ value }] };
}

/**
 * A histogram from per-bucket counts: counts[i] observations at most upperBounds[i] and above
 * the bound before; one more count for those above every bound. Buckets are cumulative on output.
 */
export function histogram(
  name: string,
  help: string,
  upperBounds: readonly number[],
  counts: readonly number[],
  sum: number,
): Metric {
  if (counts.length !== upperBounds.length + 1)
    throw new Error(`histogram ${name}: ${counts.length} counts for ${upperBounds.length} bounds`);
  const samples: Metric["samples"][number][] = [];
  let cumulative = 0;
  upperBounds.forEach((bound, i) => {
    cumulative += counts[i] as number;
    samples.push({ suffix: "_bucket", labels: { le: String(bound) }, value: cumulative });
  });
  cumulative += counts[upperBounds.length] as number;
  samples.push({ suffix: "_bucket", labels: { le: "+Inf" }, value: cumulative });
  samples.push({ suffix: "_sum", value: sum });
  samples.push({ suffix: "_count", value: cumulative });
  return { name, help, kind: "histogram", samples };
}

/** A histogram of durations counted in milliseconds (a DurationHistogram's), written in seconds. */
export function secondsHistogram(
  name: string,
  help: string,
  boundsMs: readonly number[],
  durations: { readonly counts: readonly number[]; readonly sumMs: number },
): Metric {
  return histogram(
    name,
    help,
    boundsMs.map((ms) => ms / 1000),
    durations.counts,
    durations.sumMs / 1000,
  );
}
