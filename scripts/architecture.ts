/**
 * The import rules of docs/ARCHITECTURE.md ("Layers"), checked over the source tree: which
 * folder may import which, imports across folders only through a folder's index.ts, no cycles
 * between folders, and no wall time, timers, Math.random or node:* in deterministic folders.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";

export const allowedImports: Readonly<Record<string, readonly string[]>> = {
  core: [],
  paxos: ["core"],
  cell: ["paxos", "core"],
  placement: ["core"],
  discovery: ["core"],
  // The storage port describes what it stores: the replica's durable records (types only).
  storage: ["core", "paxos"],
  transport: ["core"],
  server: ["cell", "paxos", "storage", "transport", "discovery", "core"],
  control: ["placement", "discovery", "client", "core"],
  client: ["transport", "discovery", "cell", "core"],
  sim: [
    "core",
    "paxos",
    "cell",
    "placement",
    "discovery",
    "storage",
    "transport",
    "server",
    "control",
    "client",
  ],
  cli: [
    "core",
    "paxos",
    "cell",
    "placement",
    "discovery",
    "storage",
    "transport",
    "server",
    "control",
    "client",
    "sim",
    "web",
  ],
  web: [
    "core",
    "paxos",
    "cell",
    "placement",
    "discovery",
    "storage",
    "transport",
    "server",
    "control",
    "client",
  ],
};

export const deterministicFolders = ["paxos", "cell", "placement", "server", "discovery", "sim"];

const forbiddenInDeterministic: readonly [RegExp, string][] = [
  [/\bDate\.now\s*\(|\bnew Date\s*\(/, "reads wall time"],
  [/\bMath\.random\s*\(/, "uses Math.random"],
  [/\b(setTimeout|setInterval|setImmediate)\s*\(/, "uses a timer"],
  [/\bperformance\.now\s*\(|\bprocess\.hrtime/, "reads a clock"],
  [/from\s+["']node:/, "imports node:*"],
];

export interface SourceFile {
  /** Path relative to src/, with forward slashes. */
  readonly path: string;
  readonly text: string;
}

export function listSources(root: string): SourceFile[] {
  const out: SourceFile[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (name.endsWith(".ts"))
        out.push({ path: relative(root, full).split(sep).join("/"), text: readFileSync(full, "utf8") });
    }
  };
  walk(root);
  return out.sort((a, b) => a.path.localeCompare(b.path));
}

function folderOf(path: string): string {
  return path.includes("/") ? (path.split("/")[0] as string) : "";
}

export function checkArchitecture(files: readonly SourceFile[]): string[] {
  const problems: string[] = [];
  const edges = new Map<string, Set<string>>();
  for (const file of files) {
    const isTest = file.path.endsWith(".test.ts");
    const from = folderOf(file.path);
    const importPattern = /(?:import|export)\s+(?:type\s+)?(?:[^"';]*?\s+from\s+)?["']([^"']+)["']/g;
    for (const match of file.text.matchAll(importPattern)) {
      const specifier = match[1] as string;
      if (!specifier.startsWith(".")) continue;
      const target = relative(resolve("/src"), resolve("/src", dirname(file.path), specifier))
        .split(sep)
        .join("/");
      const to = folderOf(target);
      if (to === from || from === "") continue;
      if (isTest) continue; // tests may reach anything
      const allowed = allowedImports[from];
      if (allowed === undefined) {
        problems.push(`${file.path}: folder ${from} is not in the layer table`);
        continue;
      }
      if (!allowed.includes(to)) problems.push(`${file.path}: ${from} may not import ${to} (${specifier})`);
      if (!target.endsWith("/index.ts") && to !== "") {
        problems.push(`${file.path}: imports ${target} directly; import ${to}/index.ts instead`);
      }
      let set = edges.get(from);
      if (set === undefined) {
        set = new Set();
        edges.set(from, set);
      }
      set.add(to);
    }
    if (!isTest && deterministicFolders.includes(from)) {
      const code = file.text.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
      for (const [pattern, what] of forbiddenInDeterministic) {
        if (pattern.test(code))
          problems.push(`${file.path}: deterministic folder ${from} ${what}; take it through a port`);
      }
    }
  }
  // No cycles between folders.
  const state = new Map<string, "visiting" | "done">();
  const visit = (folder: string, path: string[]): void => {
    if (state.get(folder) === "done") return;
    if (state.get(folder) === "visiting") {
      problems.push(`import cycle between folders: ${[...path, folder].join(" -> ")}`);
      return;
    }
    state.set(folder, "visiting");
    for (const next of edges.get(folder) ?? []) visit(next, [...path, folder]);
    state.set(folder, "done");
  };
  for (const folder of edges.keys()) visit(folder, []);
  return problems;
}
