/** UDFs for bench/blobs.ts: each returns its worker's peak RSS (KiB) so far. */
type Handle = { size: number; readRange(offset: number, length: number): Promise<Uint8Array> };

export const head4k = {
  inputs: ["b"],
  dataType: "utf8",
  fn: async (h: Handle | null) => {
    if (h !== null) await h.readRange(0, 4096);
    return String(process.resourceUsage().maxRSS);
  },
};

export const noBlob = { inputs: ["id"], dataType: "utf8", fn: () => String(process.resourceUsage().maxRSS) };
