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
