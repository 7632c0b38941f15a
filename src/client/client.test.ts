import { describe, expect, it } from "vitest";
import { bytes, Scenario } from "../sim/scenario.ts";
import { InvalidRequestError } from "./errors.ts";

describe("client", () => {
  it("rejects a request over a limit at once, naming the problem, without sending it", async () => {
    const s = new Scenario().cell("vol-1");
    const client = s.newClient();
    const sentBefore = s.world.network.framesSent;
    const cell = client.client.cell("vol-1");
    await expect(cell.put("k".repeat(300), bytes("v"))).rejects.toThrow(InvalidRequestError);
    await expect(cell.put("k".repeat(300), bytes("v"))).rejects.toThrow(/300 bytes exceeds the limit of 256/);
    await expect(cell.transact({ conditions: [], reads: [], writes: [] })).rejects.toThrow(
      /no conditions, no reads and no writes/,
    );
    await expect(cell.put("x", 5 as unknown as bigint)).rejects.toThrow(/Uint8Array, bigint or boolean/);
    expect(s.world.network.framesSent).toBe(sentBefore);
  });

  it("the promise API works end to end over the simulated colony", async () => {
    const s = new Scenario().cell("vol-1");
    const cell = s.newClient().client.cell("vol-1");
    const put = cell.put("x", bytes("hello"));
    const added = cell.add("n", 5n);
    s.run(200);
    await put;
    expect(await added).toBe(5n);
    const got = cell.get("x");
    const lease = cell.acquireLease("leader", "me", 1000);
    s.run(200);
    expect(new TextDecoder().decode((await got) as Uint8Array)).toBe("hello");
    expect((await lease).status).toBe("granted");
  });
});
