// UDFs for bench/suite.ts. Plain objects: each is bundled and bound by the suite.
// Knobs are read from the environment at call time, inside the worker processes (which inherit the
// suite's environment), so changing them does not change the bundle's content hash.

import { openSync, writeSync } from "node:fs";

/** Integer math (xorshift rounds) for one seed; ~25,000 rounds ≈ 50 µs on the benchmark machine. */
function burn(seed: number, rounds: number): number {
  let s = seed | 1;
  for (let i = 0; i < rounds; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
  }
  return s;
}

let calls = 0;
let countFd: number | undefined;

/**
 * P2 and P6: a CPU-bound scalar UDF, one call per row, `LANCET_BENCH_BURN_ROUNDS` xorshift rounds per
 * row (default 25,000 ≈ 50 µs). With `LANCET_BENCH_COUNT_DIR` set, each worker process keeps the
 * number of calls it made in `<dir>/<pid>` (rewritten in place after every call), so P6 can count the
 * rows a killed run computed.
 */
export const cpuBurn = {
  inputs: ["id"],
  dataType: "int32",
  fn: (id: bigint): number => {
    const v = burn(Number(id % 2147483647n), Number(process.env.LANCET_BENCH_BURN_ROUNDS ?? "25000"));
    const dir = process.env.LANCET_BENCH_COUNT_DIR;
    if (dir !== undefined) {
      countFd ??= openSync(`${dir}/${process.pid}`, "w");
      writeSync(countFd, String(++calls).padStart(16), 0);
    }
    return v;
  },
};

/**
 * P3: an async UDF that calls the suite's local HTTP server (`LANCET_BENCH_URL`, loopback only) once
 * per row and returns the number it answers. A non-200 answer (the server's request cap) fails the row.
 */
export const httpLookup = {
  inputs: ["id"],
  dataType: "int32",
  timeoutMs: 30_000,
  fn: async (id: bigint): Promise<number> => {
    const url = process.env.LANCET_BENCH_URL;
    if (url === undefined || !url.startsWith("http://127.0.0.1:")) throw new Error(`LANCET_BENCH_URL must be a loopback URL (got ${String(url)})`);
    const res = await fetch(`${url}/?id=${id}`);
    const body = await res.text();
    if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${body}`);
    return Number(body);
  },
};

const KB = 1024;

/**
 * P5: a batched binary UDF returning 1 KB per row (pseudo-random bytes seeded by the id), built as
 * views of one buffer per batch.
 */
export const kilobyte = {
  inputs: ["id"],
  dataType: "binary",
  batch: true,
  fn: (ids: { length: number; get(i: number): bigint | null }): Uint8Array[] => {
    const n = ids.length;
    const buf = new Uint8Array(n * KB);
    const words = new Int32Array(buf.buffer);
    const out = new Array<Uint8Array>(n);
    for (let r = 0; r < n; r++) {
      // An odd seed per id (2·id + 1): distinct for every id, so no two rows are alike and nothing compresses.
      let s = (Number((ids.get(r) ?? 0n) % 1073741824n) * 2 + 1) | 0;
      for (let w = (r * KB) / 4, end = w + KB / 4; w < end; w++) {
        s ^= s << 13;
        s ^= s >>> 17;
        s ^= s << 5;
        words[w] = s;
      }
      out[r] = buf.subarray(r * KB, (r + 1) * KB);
    }
    return out;
  },
};
