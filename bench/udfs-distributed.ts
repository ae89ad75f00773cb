// UDFs for bench/distributed.ts. Plain objects: each is bundled and bound by the benchmark.
// The knob is read from the environment at call time, inside the worker processes (the benchmark
// passes it with the backfill's `env` option, which reaches embedded and queue workers alike), so
// changing it does not change the bundle's content hash.

/**
 * A CPU-bound scalar UDF, one call per row: `LANCET_BENCH_SPIN_ROUNDS` xorshift rounds (default
 * 150,000 ≈ 250 µs of integer math on the benchmark machine). Fixed work, not a time-based spin, so
 * a process that loses its core to another one takes longer, as real compute would.
 */
export const spin = {
  inputs: ["id"],
  dataType: "int32",
  fn: (id: bigint): number => {
    const rounds = Number(process.env.LANCET_BENCH_SPIN_ROUNDS ?? "150000");
    let s = Number(id % 2147483647n) | 1;
    for (let i = 0; i < rounds; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
    }
    return s;
  },
};
