// One conformance suite, run against every CheckpointStore implementation.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { FileCheckpointStore, MemoryCheckpointStore, ObjectCheckpointStore, type CheckpointStore } from "../../src/checkpoint/store.ts";
import { LocalStore, storeFor } from "../../src/storage/object-store.ts";
import { freshBucket, requireS3, s3Server } from "../s3.ts";

type Impl = [string, () => Promise<{ store: CheckpointStore; cleanup(): void }>, (string | false)?];
const impls: Impl[] = [
  ["memory", async () => ({ store: new MemoryCheckpointStore(), cleanup() {} })],
  [
    "file",
    async () => {
      const dir = mkdtempSync(path.join(tmpdir(), "lancet-ckp-"));
      return { store: new FileCheckpointStore(dir), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
    },
  ],
  [
    "object store (local)",
    async () => {
      const dir = mkdtempSync(path.join(tmpdir(), "lancet-ckp-"));
      return { store: new ObjectCheckpointStore(new LocalStore(dir)), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
    },
  ],
  [
    "object store (S3)",
    async () => {
      const env = await s3Server();
      return { store: new ObjectCheckpointStore(storeFor(`s3://${await freshBucket(env)}/ckp`, env.storageOptions)), cleanup() {} };
    },
    requireS3(),
  ],
];

for (const [name, make, skip] of impls) {
  describe(`CheckpointStore conformance: ${name}`, { skip: skip ?? false }, () => {
    test("batches are stored, listed in row order, read back and deleted per key", async () => {
      const { store, cleanup } = await make();
      try {
        await store.putBatch("y/0-abc", { start: 100, end: 200 }, new Uint8Array([2]));
        await store.putBatch("y/0-abc", { start: 0, end: 100 }, new Uint8Array([1]));
        await store.putBatch("y/1-abc", { start: 0, end: 5 }, new Uint8Array([3]));
        assert.deepEqual(await store.listBatches("y/0-abc"), [{ start: 0, end: 100 }, { start: 100, end: 200 }]);
        assert.deepEqual([...(await store.getBatch("y/0-abc", { start: 100, end: 200 }))], [2]);
        await store.putBatch("y/0-abc", { start: 0, end: 100 }, new Uint8Array([9]));
        assert.deepEqual([...(await store.getBatch("y/0-abc", { start: 0, end: 100 }))], [9], "a rewrite replaces atomically");
        await store.deleteBatches("y/0-abc");
        assert.deepEqual(await store.listBatches("y/0-abc"), []);
        assert.equal((await store.listBatches("y/1-abc")).length, 1);
        assert.deepEqual(await store.listBatches("never/written"), []);
        await assert.rejects(store.putBatch("../escape", { start: 0, end: 1 }, new Uint8Array()), /invalid checkpoint key/);
      } finally {
        cleanup();
      }
    });

    test("markers are stored as JSON per namespace", async () => {
      const { store, cleanup } = await make();
      try {
        await store.putMarker("y/done", "0-aa", { fragmentId: 0 });
        await store.putMarker("y/done", "1-bb", { fragmentId: 1 });
        await store.putMarker("z/done", "0-cc", { fragmentId: 0 });
        assert.deepEqual((await store.listMarkers("y/done")).map((m) => m.name).sort(), ["0-aa", "1-bb"]);
        await store.deleteMarker("y/done", "0-aa");
        await store.deleteMarker("y/done", "never");
        assert.deepEqual(await store.listMarkers("y/done"), [{ name: "1-bb", value: { fragmentId: 1 } }]);
      } finally {
        cleanup();
      }
    });
  });
}

test("file store leaves no temporary files behind", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "lancet-ckp-"));
  try {
    const s = new FileCheckpointStore(dir);
    await s.putBatch("y/0-k", { start: 0, end: 1 }, new Uint8Array([1]));
    assert.deepEqual(readdirSync(path.join(dir, "batches", "y", "0-k")), ["0-1.arrow"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
