import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminToken, loadColonyKey } from "../src/cli/colony.ts";
import { jsonLogger } from "../src/cli/log.ts";
import { type RunningColony, up } from "../src/cli/up.ts";
import { PhysaliaClient } from "../src/index.ts";
import { createCells, localTopology } from "./support/colony.ts";

const text = (value: string) => new TextEncoder().encode(value);

describe("a local colony on real disks and sockets, in one process", () => {
  let dir: string;
  let colony: RunningColony;
  let client: PhysaliaClient;
  let topology: Awaited<ReturnType<typeof localTopology>>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "physalia-colony-"));
    topology = await localTopology(9);
    colony = await up(
      { topology, data: dir, processes: false, env: {} },
      jsonLogger({}, { write: () => {} }),
    );
    await createCells(topology, loadColonyKey(join(dir, "colony.key"), {}), ["vol-1", "vol-2"]);
    client = await PhysaliaClient.connect({ colony: colony.connectionFile });
  }, 30_000);

  afterAll(async () => {
    await client?.close();
    await colony?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("commits and reads back typed items", async () => {
    const cell = client.cell("vol-1");
    await cell.put("config", text("replicas=3"));
    expect(await cell.get("config")).toEqual(text("replicas=3"));
    expect(await cell.add("counter", 5n)).toBe(5n);
    expect(await cell.add("counter", -2n)).toBe(3n);
    await cell.put("enabled", true);
    expect(await cell.get("enabled")).toBe(true);
    await cell.delete("enabled");
    expect(await cell.get("enabled")).toBeNull();
    expect(await client.cell("vol-2").get("config")).toBeNull();
  });

  it("stores every member's state in its server's lmdb directory and serves admin endpoints", async () => {
    const connection = JSON.parse(readFileSync(colony.connectionFile, "utf8"));
    expect(connection.servers).toHaveLength(9);
    const s1 = topology.servers[0];
    const health = await fetch(`http://${s1?.host}:${s1?.adminPort}/healthz`);
    expect(health.status).toBe(200);
    const metrics = await (await fetch(`http://${s1?.host}:${s1?.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/^# TYPE physalia_resident_nodes gauge$/m);
    expect(metrics).toMatch(/^physalia_storage_batches_written_total \d+$/m);
    expect(metrics).toMatch(/^# TYPE physalia_storage_checkpoint_seconds histogram$/m);
    expect(metrics).toMatch(/^physalia_storage_checkpoint_seconds_bucket\{le="\+Inf"\} \d+$/m);
    expect(metrics).toMatch(/^physalia_storage_checkpoint_seconds_count \d+$/m);
    expect(metrics).toMatch(/^physalia_paxos_messages_out_total\{kind="commit_notice"\} \d+$/m);
    // How late the server's timers ran. Its heartbeat tick runs every 300 ms: the colony may have
    // started less than that ago (a fast machine), so wait for a first one, within a few ticks.
    expect(metrics).toMatch(/^# TYPE physalia_timer_lateness_seconds histogram$/m);
    const ticksOf = (text: string) =>
      Number(/^physalia_timer_lateness_seconds_count (\d+)$/m.exec(text)?.[1]);
    let ticks = ticksOf(metrics);
    for (let i = 0; i < 20 && !(ticks > 0); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      ticks = ticksOf(await (await fetch(`http://${s1?.host}:${s1?.adminPort}/metrics`)).text());
    }
    expect(ticks).toBeGreaterThan(0);
    // The writes of the test before went through accepts and their answers.
    let accepts = 0;
    let accepted = 0;
    // Both cells elected a leader: the first request to each started a campaign that won.
    let campaigns = 0;
    let won = 0;
    for (const s of topology.servers) {
      const text = await (await fetch(`http://${s.host}:${s.adminPort}/metrics`)).text();
      accepts += Number(/^physalia_paxos_messages_out_total\{kind="accept"\} (\d+)$/m.exec(text)?.[1]);
      accepted += Number(/^physalia_paxos_messages_out_total\{kind="accepted"\} (\d+)$/m.exec(text)?.[1]);
      for (const cause of ["no_leader", "leader_suspected", "takeover", "after_backoff", "transfer"]) {
        const pattern = new RegExp(`^physalia_campaigns_total\\{cause="${cause}"\\} (\\d+)$`, "m");
        campaigns += Number(pattern.exec(text)?.[1]);
      }
      won += Number(/^physalia_leaderships_won_total (\d+)$/m.exec(text)?.[1]);
    }
    expect(accepts).toBeGreaterThanOrEqual(6);
    expect(accepted).toBeGreaterThanOrEqual(3);
    expect(won).toBeGreaterThanOrEqual(2);
    expect(campaigns).toBeGreaterThanOrEqual(won);
    let hosted = 0;
    for (const s of topology.servers) {
      const status = (await (await fetch(`http://${s.host}:${s.adminPort}/status`)).json()) as {
        hostedNodes: number;
      };
      hosted += status.hostedNodes;
    }
    expect(hosted).toBe(14);
  });

  it("counts hosted nodes for /status at most once a second, however often it is asked", async () => {
    const checkpoints = async (): Promise<number> => {
      let sum = 0;
      for (const s of topology.servers) {
        const text = await (await fetch(`http://${s.host}:${s.adminPort}/metrics`)).text();
        sum += Number(/^physalia_storage_checkpoints_total (\d+)$/m.exec(text)?.[1]);
      }
      return sum;
    };
    const before = await checkpoints();
    const started = performance.now();
    // Each write leaves changes for lmdb on the cell's 7 servers; an exact count then makes
    // lmdb catch up first, so a /status that counted every time would checkpoint 7 times a round.
    const rounds = 12;
    for (let i = 0; i < rounds; i++) {
      await client.cell("vol-1").put("polled", text(`${i}`));
      for (const s of topology.servers) await fetch(`http://${s.host}:${s.adminPort}/status`);
    }
    const seconds = (performance.now() - started) / 1000;
    const taken = (await checkpoints()) - before;
    // Per server: one count a second, and a checkpoint of its own every 2 s, plus one of each.
    expect(taken).toBeLessThanOrEqual(topology.servers.length * (Math.ceil(seconds) * 1.5 + 2));
    expect(taken).toBeLessThan(7 * rounds);
  });

  it("refuses cell creation without the admin token, and bad bodies with a reason", async () => {
    const s1 = topology.servers[0];
    const url = `http://${s1?.host}:${s1?.adminPort}/cells`;
    const unauthorized = await fetch(url, { method: "POST", body: "{}" });
    expect(unauthorized.status).toBe(401);
    const headers = { authorization: `Bearer ${adminToken(loadColonyKey(join(dir, "colony.key"), {}))}` };
    const post = async (body: unknown): Promise<{ status: number; error: string }> => {
      const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
      return { status: response.status, error: ((await response.json()) as { error: string }).error };
    };
    const member = (serverId: string | undefined, incarnation: unknown) => ({ serverId, incarnation });
    const [a, b] = [topology.servers[0]?.id, topology.servers[1]?.id];
    const cases: [unknown, RegExp][] = [
      [{ cellKey: 7, members: [member(a, 1)] }, /cellKey must be a string/],
      [{ cellKey: "bad-1", members: [] }, /members must be a list of 1 to/],
      [{ cellKey: "bad-1", members: [member("nowhere", 1)] }, /unknown member/],
      [{ cellKey: "bad-1", members: [member(a, "1")] }, /must be a number/],
      [{ cellKey: "bad-1", members: [member(a, 2 ** 53)] }, /incarnations are integers from 1 to/],
      [{ cellKey: "bad-1", members: [member(a, 0.5)] }, /incarnations are integers from 1 to/],
      [{ cellKey: "bad-1", members: [member(a, 1), member(a, 2)] }, /two members on one server/],
      [{ cellKey: "bad-1", members: [member(a, 1), member(b, 1)] }, /two members with one incarnation/],
      // One bad cell refuses the request before any of its cells is made.
      [
        {
          cells: [
            { cellKey: "good-1", members: [member(a, 1)] },
            { cellKey: "bad-1", members: [member(a, 0)] },
          ],
        },
        /^cell 1: incarnations are integers/,
      ],
    ];
    for (const [body, error] of cases) {
      const answer = await post(body);
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect(answer.error).toMatch(error);
    }
    const longAfter = await fetch(`${url}?after=${"k".repeat(2_000)}`);
    expect(longAfter.status).toBe(400);
    expect(((await longAfter.json()) as { error: string }).error).toMatch(/^after: cell key of 2000 bytes/);
    const listed = (await (await fetch(url)).json()) as { cells: unknown[] };
    expect(listed.cells.length).toBeGreaterThan(0);
    expect(JSON.stringify(listed.cells)).not.toContain("good-1");
    // A path it has, asked with another method, says which methods it takes; an unknown path is 404.
    const base = `http://${s1?.host}:${s1?.adminPort}`;
    const wrongMethod = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get("allow")).toBe("GET");
    expect(((await wrongMethod.json()) as { error: string }).error).toBe("/metrics takes GET, not POST");
    const deleteCells = await fetch(url, { method: "DELETE" });
    expect(deleteCells.status).toBe(405);
    expect(deleteCells.headers.get("allow")).toBe("GET, POST");
    expect((await fetch(`${base}/nowhere`)).status).toBe(404);
    // The server took none of it amiss: it still answers and serves its cells.
    expect((await fetch(`http://${s1?.host}:${s1?.adminPort}/healthz`)).status).toBe(200);
    expect(await client.cell("vol-1").get("config")).toEqual(text("replicas=3"));
  });
});
