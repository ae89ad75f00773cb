import assert from "node:assert/strict";
import * as path from "node:path";
import { describe, test } from "node:test";
import { isBackfillError } from "../../src/errors.ts";
import { isObjectStoreUri, LocalStore, parseStorageOption, redactStorageOptions, resolveStorageOptions, S3Store, storeFor } from "../../src/storage/object-store.ts";

describe("resolveStorageOptions", () => {
  const cases: { name: string; given?: Record<string, string>; env: NodeJS.ProcessEnv; want: Record<string, string> }[] = [
    { name: "nothing set", env: {}, want: {} },
    {
      name: "the AWS environment",
      env: { AWS_ENDPOINT_URL: "http://127.0.0.1:9000", AWS_REGION: "eu-west-1", AWS_ACCESS_KEY_ID: "AK", AWS_SECRET_ACCESS_KEY: "SK", AWS_SESSION_TOKEN: "ST" },
      want: { endpoint: "http://127.0.0.1:9000", region: "eu-west-1", access_key_id: "AK", secret_access_key: "SK", session_token: "ST", allow_http: "true", virtual_hosted_style_request: "false" },
    },
    {
      name: "AWS_ENDPOINT_URL_S3 before AWS_ENDPOINT_URL, AWS_REGION before AWS_DEFAULT_REGION",
      env: { AWS_ENDPOINT_URL_S3: "https://s3.example", AWS_ENDPOINT_URL: "https://other.example", AWS_DEFAULT_REGION: "us-west-2", AWS_REGION: "eu-central-1" },
      want: { endpoint: "https://s3.example", region: "eu-central-1", virtual_hosted_style_request: "false" },
    },
    { name: "AWS_DEFAULT_REGION alone", env: { AWS_DEFAULT_REGION: "us-west-2" }, want: { region: "us-west-2" } },
    { name: "an empty variable is unset", env: { AWS_REGION: "", AWS_DEFAULT_REGION: "us-west-2" }, want: { region: "us-west-2" } },
    {
      name: "explicit options override the environment; aws_ prefix and case normalised",
      given: { aws_region: "ap-south-1", AWS_SECRET_ACCESS_KEY: "given-secret", Endpoint: "http://localhost:1" },
      env: { AWS_REGION: "eu-west-1", AWS_SECRET_ACCESS_KEY: "env-secret", AWS_ENDPOINT_URL: "https://ignored" },
      want: { region: "ap-south-1", secret_access_key: "given-secret", endpoint: "http://localhost:1", allow_http: "true", virtual_hosted_style_request: "false" },
    },
    {
      name: "allow_http and virtual_hosted_style_request given win",
      given: { endpoint: "http://h:1", allow_http: "false", aws_virtual_hosted_style_request: "true" },
      env: {},
      want: { endpoint: "http://h:1", allow_http: "false", virtual_hosted_style_request: "true" },
    },
    { name: "https endpoint: no allow_http", given: { endpoint: "https://h" }, env: {}, want: { endpoint: "https://h", virtual_hosted_style_request: "false" } },
    { name: "other options pass through", given: { timeout: "30s" }, env: {}, want: { timeout: "30s" } },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const got = resolveStorageOptions(c.given, c.env);
      assert.deepEqual({ ...got }, c.want);
      assert.ok(Object.isFrozen(got));
    });
  }
});

describe("redactStorageOptions", () => {
  test("secrets become ***, the rest stays", () => {
    const o = {
      endpoint: "http://127.0.0.1:9000",
      region: "us-east-1",
      access_key_id: "AKIA",
      aws_access_key_id: "AKIA2",
      secret_access_key: "S3CR3T",
      aws_secret_access_key: "S3CR3T2",
      session_token: "TOK",
      password: "pw",
      api_key: "k",
      client_secret: "cs",
      sas_token: "st",
      allow_http: "true",
    };
    assert.deepEqual(redactStorageOptions(o), {
      endpoint: "http://127.0.0.1:9000",
      region: "us-east-1",
      access_key_id: "AKIA",
      aws_access_key_id: "AKIA2",
      secret_access_key: "***",
      aws_secret_access_key: "***",
      session_token: "***",
      password: "***",
      api_key: "***",
      client_secret: "***",
      sas_token: "***",
      allow_http: "true",
    });
  });
  test("credentials inside a URL are hidden", () => {
    assert.deepEqual(redactStorageOptions({ endpoint: "http://user:pw@h:1/x" }), { endpoint: "http://***@h:1/x" });
  });
  test("the input is not changed", () => {
    const o = { secret_access_key: "S" };
    redactStorageOptions(o);
    assert.equal(o.secret_access_key, "S");
  });
});

describe("parseStorageOption", () => {
  test("KEY=VALUE", () => {
    assert.deepEqual(parseStorageOption("endpoint=http://127.0.0.1:9000"), ["endpoint", "http://127.0.0.1:9000"]);
    assert.deepEqual(parseStorageOption("aws_secret_access_key=a=b=c"), ["aws_secret_access_key", "a=b=c"]);
    assert.deepEqual(parseStorageOption("allow_http="), ["allow_http", ""]);
  });
  for (const bad of ["endpoint", "=value", "", " =x", "a b=c"]) {
    test(`refuses ${JSON.stringify(bad)}`, () => {
      assert.throws(
        () => parseStorageOption(bad),
        (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && /--storage-option must be KEY=VALUE/.test((e as Error).message),
      );
    });
  }
  test("does not echo a value without =", () => {
    assert.throws(
      () => parseStorageOption("VERYSECRETVALUE"),
      (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && !(e as Error).message.includes("VERYSECRETVALUE"),
    );
  });
});

describe("storeFor / isObjectStoreUri", () => {
  test("isObjectStoreUri", () => {
    for (const s of ["s3://b", "s3://b/p", "gs://b/p", "az://c/p", "abfs://c@a.dfs.core.windows.net/p"]) assert.equal(isObjectStoreUri(s), true, s);
    for (const s of ["/tmp/x", "relative/dir", "file:///tmp/x", "C:\\data"]) assert.equal(isObjectStoreUri(s), false, s);
  });
  for (const uri of ["gs://x", "az://c/p", "abfs://c@a/p"]) {
    test(`storeFor(${JSON.stringify(uri)}) is refused`, () => {
      assert.throws(
        () => storeFor(uri),
        (e: unknown) => isBackfillError(e, "TABLE_UNSUPPORTED") && /s3:\/\/ only/.test((e as Error).message),
      );
    });
  }
  test("local paths and file:// uris", () => {
    const a = storeFor("/tmp/lancet-x/");
    assert.ok(a instanceof LocalStore);
    assert.equal(a.uri, "/tmp/lancet-x");
    assert.equal(storeFor("rel/dir").uri, path.resolve("rel/dir"));
    assert.equal(storeFor("file:///tmp/y").uri, "/tmp/y");
  });
  test("s3 uris", () => {
    const s = storeFor("s3://bucket/a/b/", { region: "us-east-1" });
    assert.ok(s instanceof S3Store);
    assert.equal(s.uri, "s3://bucket/a/b");
    assert.equal(storeFor("s3://bucket", {}).uri, "s3://bucket");
    assert.equal(s.child("c/").uri, "s3://bucket/a/b/c");
    assert.throws(() => storeFor("s3://", {}), (e: unknown) => isBackfillError(e, "CONFIG_INVALID"));
    assert.throws(() => storeFor("s3://b/../x", {}), (e: unknown) => isBackfillError(e, "CONFIG_INVALID"));
  });
  test("child of a local store", () => {
    const s = new LocalStore("/tmp/root");
    assert.equal(s.child("a/b").uri, "/tmp/root/a/b");
    assert.throws(() => s.child("../x"), (e: unknown) => isBackfillError(e, "CONFIG_INVALID"));
    assert.throws(() => s.child(""), (e: unknown) => isBackfillError(e, "CONFIG_INVALID"));
  });
});
