/** The benchmark's UDF: y = x * 2, batched (one call per checkpoint batch, Float64Array out). */
export const double = {
  inputs: ["x"],
  dataType: "float64",
  batch: true,
  fn: (x: { toArray(): ArrayLike<number> }): Float64Array => {
    const src = x.toArray();
    const out = new Float64Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = src[i]! * 2;
    return out;
  },
};

/**
 * A UDF that does real per-row work, a stand-in for a small model: 6,000 steps of the logistic map
 * from x (≈ 10 µs of arithmetic per row on the benchmark machine; the benchmarks print the measured
 * cost). Deterministic, batched, Float64Array out.
 */
export const work = {
  inputs: ["x"],
  dataType: "float64",
  batch: true,
  fn: (x: { toArray(): ArrayLike<number> }): Float64Array => {
    const src = x.toArray();
    const out = new Float64Array(src.length);
    for (let i = 0; i < src.length; i++) {
      let v = 0.1 + (Math.abs(src[i]!) % 1000) / 1250;
      for (let k = 0; k < 6000; k++) v = 3.9 * v * (1 - v);
      out[i] = v;
    }
    return out;
  },
};
