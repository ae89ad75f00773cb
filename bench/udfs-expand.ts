// A data-expanding UDF for the writer-bound benchmark: 4 KB of pseudo-random bytes per row (like a
// thumbnail), with some CPU work per row (like decoding and encoding an image).
const BYTES = 4096;

export const thumbnail = {
  inputs: ["id"],
  dataType: "binary",
  version: "thumb-1",
  fn: (id: bigint) => {
    let s = Number(id % 4294967296n) | 1;
    const out = new Uint8Array(BYTES);
    const rounds = Number(process.env.LANCET_BENCH_UDF_ROUNDS ?? "6");
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < BYTES; i++) {
        s ^= s << 13;
        s ^= s >>> 17;
        s ^= s << 5;
        out[i] = (out[i]! + s) & 0xff;
      }
    }
    return out;
  },
};
