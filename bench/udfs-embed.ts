// A batched 384-dim "embedding" UDF for bench/scatter.ts: cheap to compute, large to write.
export const embed384 = {
  inputs: ["id"],
  dataType: "fixed_size_list<float32>[384]",
  batch: true,
  fn: (ids: { length: number; get(i: number): bigint }) => {
    const n = ids.length;
    const out: Float32Array[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const v = new Float32Array(384);
      const s = Number(ids.get(i)) % 1000;
      for (let k = 0; k < 384; k++) v[k] = (s + k) / 1000;
      out[i] = v;
    }
    return out;
  },
};
