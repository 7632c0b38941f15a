/**
 * Network partitions between real server processes. A lab runs inside a private network
 * namespace of its own (`unshare --net`): nothing in it can reach the host's network, nothing
 * outside sees its traffic, and the namespace, its loopback and its packet filter vanish with the
 * last process in it. Servers listen on addresses of their own (127.0.0.11, 127.0.0.12, ...) and
 * dial their peers from them, so an nftables rule naming two addresses cuts one direction
 * between two servers; clients connect from 127.0.0.1 and are not cut unless a rule names it.
 *
 * Needs Linux, root (for the namespace and the filter) and `nft`, which `ensureNftables` installs
 * from Debian's archive when it is missing (apt-get update, then apt-get install -y nftables).
 *
 * The same way, `runInPrivateMounts` runs a script in a private mount namespace (`unshare
 * --mount`), where it can give a server a small disk of its own (a tmpfs) to fill.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { isIP } from "node:net";

/** Set in the environment of a process started by `privateNetworkCommand`. */
export const labEnvironmentVariable = "PHYSALIA_NETWORK_LAB";

const table = "physalia_lab";
const chain = "cut";

/** Why partitions cannot be made here, or null when they can. */
export function partitionsUnavailable(): string | null {
  if (process.platform !== "linux") return `network namespaces need Linux, not ${process.platform}`;
  if (process.getuid?.() !== 0) return "a private network namespace and its packet filter need root";
  if (spawnSync("unshare", ["--version"]).status !== 0) return "`unshare` (util-linux) is not installed";
  if (spawnSync("ip", ["-V"]).status !== 0) return "`ip` (iproute2) is not installed";
  // Root in a container may still lack the right to make a namespace.
  const probe = spawnSync("unshare", ["--net", "--", "true"], { encoding: "utf8" });
  if (probe.status !== 0)
    return `cannot create a network namespace: ${(probe.stderr ?? "").trim() || `exit ${probe.status}`}`;
  return null;
}

function hasNft(): boolean {
  return spawnSync("nft", ["--version"]).status === 0;
}

/**
 * Installs Debian's nftables when `nft` is missing. Returns whether it installed it; throws,
 * naming what failed, when it could not.
 */
export function ensureNftables(log: (line: string) => void): boolean {
  if (hasNft()) return false;
  log("nft is not installed: apt-get update, then apt-get install -y nftables (Debian's package)");
  const run = (args: string[]) => {
    const result = spawnSync("apt-get", args, {
      encoding: "utf8",
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
    if (result.status !== 0)
      throw new Error(
        `apt-get ${args.join(" ")} failed (${result.status}): ${(result.stderr ?? "").slice(-400)}`,
      );
  };
  run(["update"]);
  run(["install", "-y", "nftables"]);
  if (!hasNft()) throw new Error("apt-get installed nftables but no `nft` is on PATH");
  return true;
}

/** The command and arguments that run `node ...args` in a new, private network namespace. */
export function privateNetworkCommand(nodeArgs: readonly string[]): {
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
} {
  return {
    command: "unshare",
    args: ["--net", "--", process.execPath, ...nodeArgs],
    env: { ...process.env, [labEnvironmentVariable]: "1" },
  };
}

/** The address of the i-th server of a lab (0-based): 127.0.0.11, 127.0.0.12, ... */
export function labHost(i: number): string {
  if (!Number.isInteger(i) || i < 0 || i > 200) throw new RangeError(`no lab address for server ${i}`);
  return `127.0.0.${11 + i}`;
}

/** One direction cut: packets from any of `from` to any of `to` are dropped. */
export interface Cut {
  readonly from: readonly string[];
  readonly to: readonly string[];
}

/**
 * The packet filter of the lab's namespace: the cuts in force, replaced as a whole in one nft
 * transaction. Only usable inside a private namespace (`privateNetworkCommand`): it refuses to
 * touch the host's own filter.
 */
export class LabFirewall {
  private cuts: Cut[] = [];

  constructor() {
    if (process.env[labEnvironmentVariable] !== "1")
      throw new Error("LabFirewall runs only inside a private network namespace (privateNetworkCommand)");
    // A new namespace has its loopback down.
    execFileSync("ip", ["link", "set", "lo", "up"]);
    this.nft(
      `add table inet ${table}\n` +
        `add chain inet ${table} ${chain} { type filter hook output priority 0; policy accept; }\n`,
    );
  }

  get active(): readonly Cut[] {
    return this.cuts;
  }

  /** Adds a cut; returns it, for `restore`. */
  cut(from: readonly string[], to: readonly string[]): Cut {
    const cut = { from: [...from], to: [...to] };
    if (cut.from.length > 0 && cut.to.length > 0) this.apply([...this.cuts, cut]);
    return cut;
  }

  /** Both directions between two groups. */
  split(a: readonly string[], b: readonly string[]): Cut[] {
    const cuts = [
      { from: [...a], to: [...b] },
      { from: [...b], to: [...a] },
    ];
    this.apply([...this.cuts, ...cuts]);
    return cuts;
  }

  /** Lifts the given cuts, keeping the others. */
  restore(cuts: readonly Cut[]): void {
    this.apply(this.cuts.filter((cut) => !cuts.includes(cut)));
  }

  /** Lifts every cut. */
  heal(): void {
    this.apply([]);
  }

  private apply(cuts: Cut[]): void {
    for (const cut of cuts)
      for (const host of [...cut.from, ...cut.to])
        if (isIP(host) !== 4) throw new RangeError(`a cut names IPv4 addresses, not ${JSON.stringify(host)}`);
    const rules = cuts
      .filter((cut) => cut.from.length > 0 && cut.to.length > 0)
      .map(
        (cut) =>
          `add rule inet ${table} ${chain} ip saddr { ${cut.from.join(", ")} } ip daddr { ${cut.to.join(", ")} } drop\n`,
      );
    this.nft(`flush chain inet ${table} ${chain}\n${rules.join("")}`);
    this.cuts = cuts;
  }

  private nft(script: string): void {
    execFileSync("nft", ["-f", "-"], { input: script, stdio: ["pipe", "ignore", "pipe"] });
  }
}

/**
 * Runs `node ...nodeArgs` in a private network namespace and resolves with the JSON object its
 * last line of output holds. Rejects, with the end of its output, if it fails or prints none, or
 * after `timeoutMs` (SIGTERM: a script of this lab stops the servers it started, and the
 * namespace ends with its last process).
 */
export function runInPrivateNetwork<T>(
  nodeArgs: readonly string[],
  cwd: string,
  timeoutMs: number,
): Promise<T> {
  return runJsonCommand(
    privateNetworkCommand(nodeArgs),
    `${nodeArgs.join(" ")} in a private network`,
    cwd,
    timeoutMs,
  );
}

/**
 * Runs `node ...nodeArgs` in a private mount namespace (`unshare --mount`, mounts private to it:
 * what the script mounts vanishes with its last process and is never seen outside), resolving as
 * runInPrivateNetwork does.
 */
export function runInPrivateMounts<T>(
  nodeArgs: readonly string[],
  cwd: string,
  timeoutMs: number,
): Promise<T> {
  return runJsonCommand(
    {
      command: "unshare",
      args: ["--mount", "--propagation", "private", "--", process.execPath, ...nodeArgs],
      env: process.env,
    },
    `${nodeArgs.join(" ")} in a private mount namespace`,
    cwd,
    timeoutMs,
  );
}

/** Why a private mount namespace with a tmpfs cannot be made here, or null when it can. */
export function privateMountsUnavailable(): string | null {
  if (process.platform !== "linux") return `mount namespaces need Linux, not ${process.platform}`;
  if (process.getuid?.() !== 0) return "a private mount namespace and a tmpfs need root";
  if (spawnSync("unshare", ["--version"]).status !== 0) return "`unshare` (util-linux) is not installed";
  const probe = spawnSync(
    "unshare",
    ["--mount", "--propagation", "private", "--", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", "/mnt"],
    { encoding: "utf8" },
  );
  if (probe.status !== 0)
    return `cannot mount a tmpfs in a mount namespace: ${(probe.stderr ?? "").trim() || `exit ${probe.status}`}`;
  return null;
}

function runJsonCommand<T>(
  { command, args, env }: { command: string; args: string[]; env: NodeJS.ProcessEnv },
  what: string,
  cwd: string,
  timeoutMs: number,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      out = (out + chunk).slice(-200_000);
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      err = (err + chunk).slice(-4000);
    });
    const timer = setTimeout(() => process.kill(child.pid as number, "SIGTERM"), timeoutMs);
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      const last = out.trim().split("\n").pop() ?? "";
      if (code === 0 && last.startsWith("{")) resolve(JSON.parse(last) as T);
      else reject(new Error(`${what} exited with ${code ?? signal}: ${err}${out.slice(-1000)}`));
    });
  });
}
