import { createHmac } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  colonyKeysProblem,
  decodeFrame,
  encodeFrame,
  encodeHello,
  type Frame,
  FrameSplitter,
  frameKey,
  frameVersion,
} from "./frame.ts";
import { type TransportLimits, transportLimits } from "./limits.ts";

const keyBytes = Buffer.alloc(32, 7);
const key = frameKey(keyBytes);
const otherKey = frameKey(Buffer.alloc(32, 8));

const sample: Frame = {
  sender: "127.0.0.1:7000",
  sequence: 42,
  messages: [new Uint8Array([1, 2, 3]), new Uint8Array(0), new Uint8Array(300).fill(9)],
};

/** Replace the tag with a correct one, so a test reaches the check it means to reach. */
function retag(bytes: Uint8Array, tagKey = keyBytes): Buffer {
  const out = Buffer.from(bytes);
  const tagStart = out.length - 32;
  createHmac("sha256", tagKey).update(out.subarray(0, tagStart)).digest().copy(out, tagStart);
  return out;
}

/** Build a frame body by hand (prefix and tag added), for layouts encodeFrame refuses to build. */
function handFrame(body: number[], tagKey = keyBytes): Buffer {
  const out = Buffer.alloc(4 + body.length + 32);
  out.writeUInt32BE(body.length + 32, 0);
  Buffer.from(body).copy(out, 4);
  return retag(out, tagKey);
}

function expectRejected(bytes: Uint8Array, reason: string, bounds: TransportLimits = transportLimits): void {
  const result = decodeFrame(key, bytes, bounds);
  expect(result.ok).toBe(false);
  if (!result.ok) expect(result.reason).toBe(reason);
}

describe("frame codec", () => {
  it("round-trips a frame and a hello", () => {
    const bytes = encodeFrame(key, sample);
    expect(bytes.readUInt32BE(0)).toBe(bytes.length - 4);
    const result = decodeFrame(key, bytes);
    expect(result).toEqual({ ok: true, frame: sample, otherKey: false });
    const hello = decodeFrame(key, encodeHello(key, "client:abcd"));
    expect(hello).toEqual({
      ok: true,
      frame: { sender: "client:abcd", sequence: 0, messages: [] },
      otherKey: false,
    });
  });

  it("decodes messages as plain views of the frame (no copy), whose slice is a copy", () => {
    const bytes = encodeFrame(key, sample);
    const result = decodeFrame(key, bytes);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const view = result.frame.messages[0] as Uint8Array;
    // Not a Buffer: a Buffer's slice would be another view, and a decoder's copies would not be.
    expect(Object.getPrototypeOf(view)).toBe(Uint8Array.prototype);
    expect(view.buffer).toBe(bytes.buffer);
    const copy = view.slice();
    bytes.fill(0);
    expect(Array.from(view)).toEqual([0, 0, 0]);
    expect(Array.from(copy)).toEqual([1, 2, 3]);
  });

  it("tags with HMAC-SHA256 under the colony key, for keys shorter and longer than a block", () => {
    for (const length of [32, 63, 64, 65, 200]) {
      const bytesOfKey = Buffer.alloc(length);
      for (let i = 0; i < length; i++) bytesOfKey[i] = (i * 37 + length) & 0xff;
      const k = frameKey(bytesOfKey);
      // Small and large frames: the key's buffers grow for the large one and stay right after.
      for (const size of [0, 5000, 20]) {
        const frame: Frame = { sender: "a:1", sequence: 7, messages: [new Uint8Array(size).fill(length)] };
        const bytes = encodeFrame(k, frame);
        const tagStart = bytes.length - 32;
        const reference = createHmac("sha256", bytesOfKey).update(bytes.subarray(0, tagStart)).digest();
        expect(Buffer.from(bytes.subarray(tagStart)).equals(reference)).toBe(true);
        expect(decodeFrame(k, bytes)).toEqual({ ok: true, frame, otherKey: false });
        expect(decodeFrame(k, retag(bytes, bytesOfKey))).toEqual({ ok: true, frame, otherKey: false });
      }
    }
  });

  it("refuses a colony key shorter than 32 bytes with a message saying what to do", () => {
    expect(() => frameKey(Buffer.alloc(31))).toThrow(/31 bytes; it must be at least 32/);
  });

  it("during a rotation, tags with the first key and accepts frames under either", () => {
    const oldBytes = Buffer.alloc(32, 7);
    const newBytes = Buffer.alloc(32, 8);
    const both = frameKey(newBytes, [oldBytes]);
    const oldOnly = frameKey(oldBytes);
    const newOnly = frameKey(newBytes);
    // Sent under the first key: the new key alone verifies it, the old alone does not.
    const sent = encodeFrame(both, sample);
    expect(decodeFrame(newOnly, sent)).toEqual({ ok: true, frame: sample, otherKey: false });
    expect(decodeFrame(oldOnly, sent)).toMatchObject({ ok: false, reason: "unauthenticated" });
    // Received under either key, and which one said.
    expect(decodeFrame(both, encodeFrame(newOnly, sample))).toEqual({
      ok: true,
      frame: sample,
      otherKey: false,
    });
    expect(decodeFrame(both, encodeFrame(oldOnly, sample))).toEqual({
      ok: true,
      frame: sample,
      otherKey: true,
    });
    // A third key is refused, and so is a frame under either key with a bit flipped.
    expect(decodeFrame(both, encodeFrame(frameKey(Buffer.alloc(32, 9)), sample))).toMatchObject({
      ok: false,
      reason: "unauthenticated",
    });
    const flipped = Buffer.from(encodeFrame(oldOnly, sample));
    flipped[10] = (flipped[10] as number) ^ 1;
    expect(decodeFrame(both, flipped)).toMatchObject({ ok: false, reason: "unauthenticated" });
    // After a large frame under the old key, both keys' buffers still verify small ones.
    const large: Frame = { sender: "a:1", sequence: 3, messages: [new Uint8Array(9000).fill(1)] };
    expect(decodeFrame(both, encodeFrame(oldOnly, large))).toEqual({
      ok: true,
      frame: large,
      otherKey: true,
    });
    expect(decodeFrame(both, encodeFrame(newOnly, sample))).toEqual({
      ok: true,
      frame: sample,
      otherKey: false,
    });
  });

  it("holds at most two distinct keys, each a colony key", () => {
    const k = (fill: number, length = 32) => Buffer.alloc(length, fill);
    expect(colonyKeysProblem([k(1)])).toBeNull();
    expect(colonyKeysProblem([k(1), k(2)])).toBeNull();
    expect(colonyKeysProblem([])).toMatch(/no colony key/);
    expect(colonyKeysProblem([k(1), k(2), k(3)])).toMatch(/3 colony keys; an endpoint holds at most 2/);
    expect(colonyKeysProblem([k(1), k(1)])).toMatch(/the same colony key is given twice/);
    expect(colonyKeysProblem([k(1), k(2, 16)])).toMatch(/key 2: the colony key is 16 bytes/);
    expect(() => frameKey(k(1), [k(1)])).toThrow(RangeError);
    expect(() => frameKey(k(1), [k(2), k(3)])).toThrow(/at most 2/);
  });

  it("rejects a tag made with another key, and any flipped bit", () => {
    const bytes = encodeFrame(key, sample);
    expectRejected(encodeFrame(otherKey, sample), "unauthenticated");
    for (const at of [5, 10, bytes.length - 40, bytes.length - 1]) {
      const flipped = Buffer.from(bytes);
      flipped[at] = (flipped[at] as number) ^ 0x01;
      const result = decodeFrame(key, flipped);
      expect(result.ok).toBe(false);
    }
    const tagFlipped = Buffer.from(bytes);
    tagFlipped[bytes.length - 1] = (tagFlipped[bytes.length - 1] as number) ^ 0x80;
    expectRejected(tagFlipped, "unauthenticated");
  });

  it("rejects oversized frames, addresses, counts and messages", () => {
    const small = { ...transportLimits, frameBytesMax: 200, messageBytesMax: 64, frameMessagesMax: 3 };
    const big = encodeFrame(key, { sender: "a:1", sequence: 1, messages: [new Uint8Array(100)] });
    expectRejected(big, "oversized", { ...transportLimits, frameBytesMax: big.length - 1 });
    // A message over the bound (the frame itself is within bounds).
    expectRejected(
      encodeFrame(key, { sender: "a:1", sequence: 1, messages: [new Uint8Array(65)] }),
      "oversized",
      small,
    );
    // A count over the bound.
    const fourMessages = encodeFrame(key, {
      sender: "a:1",
      sequence: 1,
      messages: [[1], [2], [3], [4]].map((m) => new Uint8Array(m)),
    });
    expectRejected(fourMessages, "oversized", small);
    // An address over the bound.
    const longSender = encodeFrame(
      key,
      { sender: "x".repeat(300), sequence: 1, messages: [] },
      {
        ...transportLimits,
        addressBytesMax: 300,
      },
    );
    expectRejected(longSender, "oversized");
  });

  it("checks the bounds before the tag: an oversized frame with a bad tag is oversized", () => {
    const bytes = encodeFrame(otherKey, { sender: "a:1", sequence: 1, messages: [new Uint8Array(65)] });
    expectRejected(bytes, "oversized", { ...transportLimits, messageBytesMax: 64 });
  });

  it("rejects malformed layouts", () => {
    const bytes = encodeFrame(key, sample);
    // Shorter than any frame.
    expectRejected(bytes.subarray(0, 20), "malformed");
    // The prefix disagrees with the length.
    expectRejected(Buffer.concat([bytes, Buffer.from([0])]), "malformed");
    // Trailing bytes between the messages and the tag (count says 0, one byte left).
    expectRejected(handFrame([frameVersion, 1, 0x61, 1, 0, 0xff]), "malformed");
    // A count larger than the bytes that follow.
    expectRejected(handFrame([frameVersion, 1, 0x61, 1, 5, 0]), "malformed");
    // A message length past the end.
    expectRejected(handFrame([frameVersion, 1, 0x61, 1, 1, 9, 1]), "malformed");
    // A non-canonical varint (sequence 0 written in two bytes).
    expectRejected(handFrame([frameVersion, 1, 0x61, 0x80, 0x00, 0]), "malformed");
    // A truncated address.
    expectRejected(handFrame([frameVersion, 9, 0x61]), "malformed");
    // An address that is not UTF-8 (only detectable once authenticated).
    expectRejected(handFrame([frameVersion, 1, 0xff, 1, 0]), "malformed");
    // A layout that is fine decodes (the hand builder itself is right).
    expect(decodeFrame(key, handFrame([frameVersion, 1, 0x61, 1, 1, 2, 7, 8]))).toEqual({
      ok: true,
      frame: { sender: "a", sequence: 1, messages: [new Uint8Array([7, 8])] },
      otherKey: false,
    });
  });

  it("rejects an unknown version", () => {
    expectRejected(handFrame([frameVersion + 1, 1, 0x61, 1, 0]), "unsupported-version");
  });
});

/** A splitter past its connection's hello, taking frames up to frameBytesMax. */
function admittedSplitter(): FrameSplitter {
  const splitter = new FrameSplitter();
  splitter.admitFrames();
  return splitter;
}

describe("frame splitter", () => {
  it("yields whole frames however the stream is cut", () => {
    const frames = [
      encodeFrame(key, sample),
      encodeHello(key, "b:2"),
      encodeFrame(key, { ...sample, sequence: 43 }),
    ];
    const stream = Buffer.concat(frames);
    for (const cut of [1, 2, 3, 5, 7, 64, stream.length]) {
      const splitter = admittedSplitter();
      const out: Uint8Array[] = [];
      for (let at = 0; at < stream.length; at += cut) {
        const result = splitter.push(stream.subarray(at, at + cut));
        expect(result.ok).toBe(true);
        if (result.ok) out.push(...result.frames);
      }
      expect(out.map((f) => Buffer.from(f).toString("hex"))).toEqual(frames.map((f) => f.toString("hex")));
      expect(splitter.buffered).toBe(0);
    }
  });

  it("rejects an oversized length prefix as soon as its four bytes arrive, and stays failed", () => {
    const splitter = new FrameSplitter();
    expect(splitter.push(Buffer.from([0xff, 0xff])).ok).toBe(true);
    const result = splitter.push(Buffer.from([0xff, 0xff]));
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.reason).toBe("oversized");
    expect(splitter.buffered).toBe(0);
    expect(splitter.push(encodeHello(key, "a:1")).ok).toBe(false);
  });

  it("holds a connection to one hello-sized frame until its hello is admitted", () => {
    const hello = encodeHello(key, "a".repeat(transportLimits.addressBytesMax));
    const big = encodeFrame(key, { sender: "a:1", sequence: 1, messages: [new Uint8Array(5_000)] });
    // The largest hello passes; what follows it waits, whatever its size, until admitFrames().
    const splitter = new FrameSplitter();
    const first = splitter.push(Buffer.concat([hello, big]));
    expect(first.ok && first.frames.length).toBe(1);
    expect(splitter.buffered).toBe(big.length);
    splitter.admitFrames();
    const rest = splitter.push(Buffer.alloc(0));
    expect(rest.ok && rest.frames.map((f) => f.length)).toEqual([big.length]);
    // Before any hello, a prefix longer than the largest hello is refused at its fourth byte.
    const early = new FrameSplitter();
    const refused = early.push(big.subarray(0, 4));
    expect(refused.ok).toBe(false);
    if (!refused.ok) expect(refused.detail).toMatch(/the bound of a hello/);
    expect(early.buffered).toBe(0);
  });

  it("takes linear time for a frame fed one byte at a time", () => {
    const big = encodeFrame(key, { sender: "a:1", sequence: 1, messages: [new Uint8Array(200_000).fill(3)] });
    const splitter = admittedSplitter();
    let frames = 0;
    const startMs = performance.now();
    for (let at = 0; at < big.length; at++) {
      const result = splitter.push(big.subarray(at, at + 1));
      if (result.ok) frames += result.frames.length;
    }
    expect(frames).toBe(1);
    // Quadratic copying would move ~2e10 bytes here; linear work is well under a second.
    expect(performance.now() - startMs).toBeLessThan(5_000);
  });
});

describe("hostile input (property)", () => {
  it("random bytes never throw and never yield an authenticated frame", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 12 }),
        fc.boolean(),
        (chunks, plausiblePrefix) => {
          const splitter = new FrameSplitter();
          if (plausiblePrefix && chunks.length > 0) {
            // Give some inputs a length prefix that fits, so the decoder sees them too.
            const total = chunks.reduce((n, c) => n + c.length, 0);
            const prefix = Buffer.alloc(4);
            prefix.writeUInt32BE(total);
            chunks.unshift(prefix);
          }
          for (const chunk of chunks) {
            const split = splitter.push(chunk);
            if (!split.ok) break;
            for (const frame of split.frames) expect(decodeFrame(key, frame).ok).toBe(false);
          }
          const whole = Buffer.concat(chunks);
          expect(decodeFrame(key, whole).ok).toBe(false);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("random mutations of a real frame never authenticate", () => {
    const bytes = encodeFrame(key, sample);
    fc.assert(
      fc.property(fc.nat({ max: bytes.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, mask) => {
        const mutated = Buffer.from(bytes);
        mutated[at] = (mutated[at] as number) ^ mask;
        expect(decodeFrame(key, mutated).ok).toBe(false);
      }),
      { numRuns: 500 },
    );
  });

  it("random frames round-trip through the splitter cut at random points", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            sender: fc.string({ maxLength: 40 }),
            sequence: fc.nat(),
            messages: fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 8 }),
          }),
          { minLength: 1, maxLength: 6 },
        ),
        fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 10 }),
        (frames, cuts) => {
          const stream = Buffer.concat(frames.map((f) => encodeFrame(key, f)));
          const splitter = admittedSplitter();
          const decoded: Frame[] = [];
          let at = 0;
          for (let i = 0; at < stream.length; i++) {
            const step = cuts[i % cuts.length] as number;
            const result = splitter.push(stream.subarray(at, at + step));
            at += step;
            expect(result.ok).toBe(true);
            if (!result.ok) return;
            for (const frame of result.frames) {
              const d = decodeFrame(key, frame);
              expect(d.ok).toBe(true);
              if (d.ok) decoded.push(d.frame);
            }
          }
          expect(decoded).toEqual(frames);
        },
      ),
      { numRuns: 200 },
    );
  });
});
