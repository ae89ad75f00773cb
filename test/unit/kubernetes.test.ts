// The Kubernetes manifests in deploy/kubernetes and its object-storage variant (deploy/kubernetes/
// object-storage): every object is checked against its Kubernetes (or KEDA CRD) schema with
// kubernetes-models, fields the schema does not know are reported (as a strict API server would), and
// the manifests of each variant are cross-checked against each other and against how Lancet names its
// queues; the object-storage variant must differ from the other only in storage. No cluster is needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { Deployment, type IDeployment } from "kubernetes-models/apps/v1/Deployment";
import { Job, type IJob } from "kubernetes-models/batch/v1/Job";
import { ConfigMap, type IConfigMap } from "kubernetes-models/v1/ConfigMap";
import { PersistentVolumeClaim, type IPersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { Service, type IService } from "kubernetes-models/v1/Service";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IPodSpec } from "kubernetes-models/v1/PodSpec";
import { Secret, type ISecret } from "kubernetes-models/v1/Secret";
import { NetworkPolicy, type INetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { ScaledObject, type IScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication, type ITriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";

const DIR = fileURLToPath(new URL("../../deploy/kubernetes/", import.meta.url));
const OS_DIR = path.join(DIR, "object-storage");
const NAMESPACE = "lancet";
const LANCET_BIN = "/app/node_modules/.bin/lancet";

type Validatable = { validate(): void };
type Make = (data: object) => Validatable;

/** apiVersion/kind → model. A kind missing here fails the schema test. */
const MODELS = new Map<string, Make>([
  ["v1/ConfigMap", (d) => new ConfigMap(d as ConstructorParameters<typeof ConfigMap>[0])],
  ["v1/PersistentVolumeClaim", (d) => new PersistentVolumeClaim(d as ConstructorParameters<typeof PersistentVolumeClaim>[0])],
  ["v1/Service", (d) => new Service(d as ConstructorParameters<typeof Service>[0])],
  ["apps/v1/Deployment", (d) => new Deployment(d as ConstructorParameters<typeof Deployment>[0])],
  ["batch/v1/Job", (d) => new Job(d as ConstructorParameters<typeof Job>[0])],
  ["keda.sh/v1alpha1/ScaledObject", (d) => new ScaledObject(d as ConstructorParameters<typeof ScaledObject>[0])],
  ["keda.sh/v1alpha1/TriggerAuthentication", (d) => new TriggerAuthentication(d as ConstructorParameters<typeof TriggerAuthentication>[0])],
  ["v1/Secret", (d) => new Secret(d as ConstructorParameters<typeof Secret>[0])],
  ["networking.k8s.io/v1/NetworkPolicy", (d) => new NetworkPolicy(d as ConstructorParameters<typeof NetworkPolicy>[0])],
]);

interface Manifest {
  readonly file: string;
  readonly index: number;
  readonly obj: Record<string, unknown>;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

const yamlFiles = (dir: string): string[] => readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();

function parseFile(dir: string, file: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  parseAllDocuments(readFileSync(path.join(dir, file), "utf8")).forEach((doc, i) => {
    assert.deepEqual(doc.errors.map((e) => e.message), [], `${file} document ${i} is not valid YAML`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return; // an empty document, e.g. after a trailing ---
    assert.ok(isRecord(value), `${file} document ${i} is not a mapping`);
    out.push(value);
  });
  return out;
}

function loadManifests(dir: string): Manifest[] {
  const out: Manifest[] = [];
  for (const file of yamlFiles(dir)) {
    if (file === "kustomization.yaml") continue;
    parseFile(dir, file).forEach((obj, index) => out.push({ file, index, obj }));
  }
  return out;
}

const kindKey = (o: Record<string, unknown>): string => `${String(o.apiVersion)}/${String(o.kind)}`;
const where = (m: Manifest): string => `${m.file}#${m.index} (${String(m.obj.kind)} ${String((m.obj.metadata as { name?: unknown } | undefined)?.name)})`;


/** The schema errors of `data` as the model reports them ([] when valid). */
function schemaErrors(make: Make, data: object): { instancePath: string; message?: string }[] {
  try {
    make(data).validate();
    return [];
  } catch (e) {
    const errors = (e as { errors?: unknown }).errors;
    if (!Array.isArray(errors)) throw e;
    return errors as { instancePath: string; message?: string }[];
  }
}

/** The JSON pointer of a path, as Ajv writes it in instancePath. */
const pointer = (keys: readonly string[]): string => keys.map((k) => "/" + k.replaceAll("~", "~0").replaceAll("/", "~1")).join("");

/**
 * Fields the schema does not know. kubernetes-models ignores unknown properties (the schemas do not set
 * additionalProperties: false), so a typo such as `volumeMount` would pass validate(); a strict API server
 * rejects it. Each key is probed by replacing its value with a symbol, which no schema type accepts: a key
 * the schema knows then yields an error at its path, an unknown key yields none.
 */
function unknownFields(make: Make, root: Record<string, unknown>): string[] {
  const found: string[] = [];
  const probe = Symbol("probe");
  const visit = (node: unknown, at: string[]): void => {
    if (Array.isArray(node)) {
      node.forEach((v, i) => visit(v, [...at, String(i)]));
      return;
    }
    if (!isRecord(node)) return;
    for (const key of Object.keys(node)) {
      const keys = [...at, key];
      const copy = structuredClone(root);
      let parent: Record<string, unknown> | unknown[] = copy;
      for (const k of at) parent = (parent as Record<string, unknown>)[k] as Record<string, unknown> | unknown[];
      (parent as Record<string, unknown>)[key] = probe;
      const p = pointer(keys);
      if (schemaErrors(make, copy).some((e) => e.instancePath === p || e.instancePath.startsWith(p + "/"))) visit(node[key], keys);
      else found.push(p);
    }
  };
  visit(root, []);
  return found;
}

function flag(args: readonly string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

function parseResourcesFlag(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of text.split(",")) {
    const m = /^(cpu|gpu|memory)=(\d+(?:\.\d+)?)$/.exec(part.trim());
    assert.ok(m, `--resources part ${part} is not cpu=N, gpu=N or memory=MiB`);
    out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** A Kubernetes quantity in base units (cores, bytes, devices). */
function quantity(q: string | number | undefined): number | undefined {
  if (q === undefined) return undefined;
  if (typeof q === "number") return q;
  const m = /^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q);
  assert.ok(m, `unsupported quantity ${q}`);
  const factor: Record<string, number> = { "": 1, m: 1e-3, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * factor[m[2] ?? ""]!;
}

const podSpec = (d: IDeployment | IJob): IPodSpec => {
  const spec = d.spec?.template.spec;
  assert.ok(spec, `${d.metadata?.name} has no pod spec`);
  return spec;
};

/** The container that runs the lancet command. */
function lancetContainer(d: IDeployment | IJob): IContainer {
  const c = podSpec(d).containers.find((x) => x.command?.[0] === LANCET_BIN);
  assert.ok(c, `${d.metadata?.name} has no container running ${LANCET_BIN}`);
  return c;
}

/**
 * One deployment variant: a directory with a kustomization.yaml, the manifests it lists, the Secrets
 * created by hand and the per-backfill Job. The same cross-checks run on each.
 */
interface ManifestSet {
  /** Prefix of the test titles ("" for the shared-volume variant, whose titles predate the others). */
  readonly label: string;
  readonly dir: string;
  /** Tables and state on S3-compatible object storage (no volume) rather than on a shared volume. */
  readonly objectStorage: boolean;
  /** Files holding Secrets, created by hand and left out of kustomization.yaml. */
  readonly secretFiles: readonly string[];
  readonly manifests: Manifest[];
  readonly configMaps: IConfigMap[];
  readonly deployments: IDeployment[];
  readonly services: IService[];
  readonly pvcs: IPersistentVolumeClaim[];
  readonly jobs: IJob[];
  readonly scaledObjects: IScaledObject[];
  readonly triggerAuths: ITriggerAuthentication[];
  readonly secrets: ISecret[];
  readonly networkPolicies: INetworkPolicy[];
  readonly workers: IDeployment[];
}

function loadSet(label: string, dir: string, objectStorage: boolean, secretFiles: readonly string[]): ManifestSet {
  const manifests = loadManifests(dir);
  const ofKind = <T>(apiVersionKind: string): T[] => manifests.filter((m) => kindKey(m.obj) === apiVersionKind).map((m) => m.obj as T);
  const deployments = ofKind<IDeployment>("apps/v1/Deployment");
  return {
    label,
    dir,
    objectStorage,
    secretFiles,
    manifests,
    configMaps: ofKind<IConfigMap>("v1/ConfigMap"),
    deployments,
    services: ofKind<IService>("v1/Service"),
    pvcs: ofKind<IPersistentVolumeClaim>("v1/PersistentVolumeClaim"),
    jobs: ofKind<IJob>("batch/v1/Job"),
    scaledObjects: ofKind<IScaledObject>("keda.sh/v1alpha1/ScaledObject"),
    triggerAuths: ofKind<ITriggerAuthentication>("keda.sh/v1alpha1/TriggerAuthentication"),
    secrets: ofKind<ISecret>("v1/Secret"),
    networkPolicies: ofKind<INetworkPolicy>("networking.k8s.io/v1/NetworkPolicy"),
    workers: deployments.filter((d) => podSpec(d).containers.some((c) => c.command?.[0] === LANCET_BIN && c.args?.[0] === "worker")),
  };
}

/** The shared-volume variant (deploy/kubernetes) and the object-storage one (deploy/kubernetes/object-storage). */
const SHARED_VOLUME = loadSet("", DIR, false, ["secret.yaml"]);
const OBJECT_STORAGE = loadSet("object storage: ", OS_DIR, true, ["s3-secret.yaml", "secret.yaml"]);
const SETS = [SHARED_VOLUME, OBJECT_STORAGE];

const isGpu = (d: IDeployment): boolean => quantity(lancetContainer(d).resources?.limits?.["nvidia.com/gpu"]) !== undefined;

/** The value of a key of a Secret defined in the set (stringData or base64 data). */
function secretValueIn(S: ManifestSet, name: string, key: string): string {
  const secret = S.secrets.find((x) => x.metadata?.name === name);
  assert.ok(secret, `Secret ${name} is not defined`);
  const v = secret.stringData?.[key] ?? (secret.data?.[key] !== undefined ? Buffer.from(secret.data[key]!, "base64").toString() : undefined);
  assert.ok(v !== undefined, `Secret ${name} has no key ${key}`);
  return v;
}

/** Replaces $(VAR) the way the kubelet does it; unknown variables fail. */
function expand(text: string, env: Map<string, string>, what: string): string {
  return text.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_, v: string) => {
    const value = env.get(v);
    assert.ok(value !== undefined, `$(${v}) in ${what} is not defined by env or envFrom (before it)`);
    return value;
  });
}

/** The environment a container sees from envFrom ConfigMaps and env (values, Secret keys, $(VAR) of earlier entries). */
function envOfIn(S: ManifestSet, c: IContainer): Map<string, string> {
  const env = new Map<string, string>();
  for (const src of c.envFrom ?? []) {
    const name = src.configMapRef?.name;
    assert.ok(name, "envFrom supports configMapRef only here");
    const cm = S.configMaps.find((m) => m.metadata?.name === name);
    assert.ok(cm, `envFrom names ConfigMap ${name}, which is not defined`);
    for (const [k, v] of Object.entries(cm.data ?? {})) env.set(k, v);
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env.set(e.name, expand(e.value, env, `${c.name}'s env ${e.name}`));
    else if (e.valueFrom?.secretKeyRef) env.set(e.name, secretValueIn(S, e.valueFrom.secretKeyRef.name!, e.valueFrom.secretKeyRef.key));
  }
  return env;
}

/** command + args with $(VAR) expanded the way the kubelet does it; unknown variables fail. */
function expandedArgsIn(S: ManifestSet, c: IContainer): string[] {
  const env = envOfIn(S, c);
  return [...(c.command ?? []), ...(c.args ?? [])].map((a) => expand(a, env, `${c.name}'s arguments`));
}

function onlyContainer(d: IDeployment | undefined): IContainer {
  assert.ok(d, "Deployment lancet-redis");
  const c = podSpec(d).containers[0];
  assert.ok(c);
  return c;
}

/** The settings of KEDA's redis (list) scaler. */
const REDIS_TRIGGER_KEYS = new Set([
  "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "usernameFromEnv", "passwordFromEnv",
  "listName", "listLength", "activationListLength", "enableTLS", "unsafeSsl", "databaseIndex",
]);

/** Whether a NetworkPolicy peer's selector matches these labels (matchLabels and In/NotIn/Exists/DoesNotExist expressions). */
function selects(sel: { matchLabels?: Record<string, string>; matchExpressions?: { key: string; operator: string; values?: string[] }[] } | undefined, labels: Record<string, string>): boolean {
  if (!sel) return false;
  const byLabels = Object.entries(sel.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  const byExpr = (sel.matchExpressions ?? []).every((e) => {
    const has = e.key in labels;
    switch (e.operator) {
      case "In":
        return has && (e.values ?? []).includes(labels[e.key]!);
      case "NotIn":
        return !has || !(e.values ?? []).includes(labels[e.key]!);
      case "Exists":
        return has;
      case "DoesNotExist":
        return !has;
      default:
        assert.fail(`unknown selector operator ${e.operator}`);
    }
  });
  return byLabels && byExpr;
}


test("the validation can fail: schema errors and unknown fields are reported", () => {
  const make = MODELS.get("apps/v1/Deployment")!;
  const worker = SHARED_VOLUME.manifests.find((m) => kindKey(m.obj) === "apps/v1/Deployment" && m.file === "worker-cpu.yaml");
  assert.ok(worker);
  assert.deepEqual(schemaErrors(make, worker.obj), []);

  const badReplicas = structuredClone(worker.obj) as { spec: { replicas: unknown } };
  badReplicas.spec.replicas = "two";
  assert.throws(() => make(badReplicas).validate(), /spec\/replicas must be integer/);

  const noName = structuredClone(worker.obj) as unknown as IDeployment;
  delete (noName.spec!.template.spec!.containers[0] as Partial<IContainer>).name;
  assert.throws(() => make(noName).validate(), /containers\/0 must have required property name/);

  const badPort = structuredClone(worker.obj) as unknown as IDeployment;
  (badPort.spec!.template.spec!.containers[0]!.ports![0] as { containerPort: unknown }).containerPort = "9464";
  assert.throws(() => make(badPort).validate(), /containerPort must be integer/);

  const typo = structuredClone(worker.obj) as unknown as IDeployment;
  const c = typo.spec!.template.spec!.containers[0]! as IContainer & Record<string, unknown>;
  c.volumeMount = c.volumeMounts;
  delete c.volumeMounts;
  assert.doesNotThrow(() => make(typo).validate(), "kubernetes-models alone ignores unknown fields");
  assert.deepEqual(unknownFields(make, typo as unknown as Record<string, unknown>), ["/spec/template/spec/containers/0/volumeMount"]);

  const so = SHARED_VOLUME.manifests.find((m) => kindKey(m.obj) === "keda.sh/v1alpha1/ScaledObject");
  assert.ok(so);
  const badSo = structuredClone(so.obj) as unknown as { spec: { triggers: { metadata: Record<string, unknown> }[] } };
  badSo.spec.triggers[0]!.metadata.listLength = 8;
  assert.throws(() => MODELS.get("keda.sh/v1alpha1/ScaledObject")!(badSo).validate(), /listLength must be string/);
  const noTriggers = structuredClone(so.obj) as { spec: Record<string, unknown> };
  delete noTriggers.spec.triggers;
  assert.throws(() => MODELS.get("keda.sh/v1alpha1/ScaledObject")!(noTriggers).validate(), /spec must have required property triggers/);

  const np = SHARED_VOLUME.manifests.find((m) => kindKey(m.obj) === "networking.k8s.io/v1/NetworkPolicy");
  assert.ok(np);
  const badNp = structuredClone(np.obj) as { spec: Record<string, unknown> };
  badNp.spec.policyTypes = "Ingress";
  assert.throws(() => MODELS.get("networking.k8s.io/v1/NetworkPolicy")!(badNp).validate(), /policyTypes must be array/);
  const secret = SHARED_VOLUME.manifests.find((m) => kindKey(m.obj) === "v1/Secret");
  assert.ok(secret);
  const badSecret = structuredClone(secret.obj) as { stringData: Record<string, unknown> };
  badSecret.stringData.password = 42;
  assert.throws(() => MODELS.get("v1/Secret")!(badSecret).validate(), /password must be string/);
  const ta = SHARED_VOLUME.manifests.find((m) => kindKey(m.obj) === "keda.sh/v1alpha1/TriggerAuthentication");
  assert.ok(ta);
  const badTa = structuredClone(ta.obj) as { spec: { secretTargetRef: Record<string, unknown>[] } };
  delete badTa.spec.secretTargetRef[0]!.key;
  assert.throws(() => MODELS.get("keda.sh/v1alpha1/TriggerAuthentication")!(badTa).validate(), /must have required property key/);
});

for (const S of SETS) {
  const { manifests, configMaps, deployments, services, pvcs, jobs, scaledObjects, triggerAuths, networkPolicies, workers } = S;
  const DIR = S.dir;
  const yamlFilesHere = (): string[] => yamlFiles(DIR);
  const parseFileHere = (file: string): Record<string, unknown>[] => parseFile(DIR, file);
  const secretValue = (name: string, key: string): string => secretValueIn(S, name, key);
  const envOf = (c: IContainer): Map<string, string> => envOfIn(S, c);
  const expandedArgs = (c: IContainer): string[] => expandedArgsIn(S, c);

  test(S.label + "every manifest is of a known kind and valid against its schema, with no unknown fields", () => {
    assert.ok(manifests.length >= 9, `expected the Lancet manifests in ${DIR}, found ${manifests.length}`);
    for (const m of manifests) {
      const make = MODELS.get(kindKey(m.obj));
      assert.ok(make, `${where(m)}: no schema known for ${kindKey(m.obj)}; add its model to MODELS`);
      assert.deepEqual(schemaErrors(make, m.obj).map((e) => `${e.instancePath} ${e.message ?? ""}`), [], `${where(m)} does not match its schema`);
      assert.deepEqual(unknownFields(make, m.obj), [], `${where(m)} has fields its schema does not know (typos?)`);
      const meta = m.obj.metadata as { name?: string; namespace?: string };
      assert.match(meta.name ?? "", /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, `${where(m)}: name must be a DNS-1123 label`);
      assert.equal(meta.namespace, NAMESPACE, `${where(m)}: namespace`);
    }
    const names = manifests.map((m) => `${kindKey(m.obj)}/${(m.obj.metadata as { name: string }).name}`);
    assert.equal(new Set(names).size, names.length, "object names are unique per kind");
  });

  test(S.label + "kustomization.yaml lists every long-lived manifest; Jobs are created per backfill", () => {
    const [k, ...rest] = parseFileHere("kustomization.yaml");
    assert.equal(rest.length, 0);
    assert.ok(k);
    assert.equal(k.apiVersion, "kustomize.config.k8s.io/v1beta1");
    assert.equal(k.kind, "Kustomization");
    assert.equal(k.namespace, NAMESPACE);
    const resources = k.resources as string[];
    assert.ok(Array.isArray(resources));
    for (const r of resources) assert.ok(existsSync(path.join(DIR, r)), `kustomization.yaml lists ${r}, which does not exist`);
    assert.equal(new Set(resources).size, resources.length, "no duplicates");
    const jobFiles = new Set(manifests.filter((m) => m.obj.kind === "Job").map((m) => m.file));
    // The Secrets are created once by hand: re-applying the kustomization must not reset the password
    // (or, on object storage, the credentials) to a placeholder.
    const secretFiles = new Set(manifests.filter((m) => m.obj.kind === "Secret").map((m) => m.file));
    assert.deepEqual([...secretFiles].sort(), S.secretFiles);
    for (const f of secretFiles) assert.ok(manifests.filter((m) => m.file === f).every((m) => m.obj.kind === "Secret"), `${f} holds only the Secret`);
    assert.deepEqual(
      [...resources].sort(),
      yamlFilesHere().filter((f) => f !== "kustomization.yaml" && !jobFiles.has(f) && !secretFiles.has(f)),
      "every manifest except the per-backfill Job and the Secret is listed",
    );
    for (const f of jobFiles) {
      assert.ok(manifests.filter((m) => m.file === f).every((m) => m.obj.kind === "Job"), `${f} holds only Jobs, so leaving it out of kustomization.yaml leaves out nothing else`);
    }
    assert.deepEqual([...jobFiles], ["coordinator-job.yaml"]);
  });

  test(S.label + "kubectl kustomize builds the kustomization (when kubectl is installed)", (t) => {
    try {
      execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
    } catch {
      // .ci/run installs kubectl (Debian's kubernetes-client): in CI (CI set) a missing one fails; elsewhere the skip says why.
      if (process.env.CI) throw new Error("kubectl is not installed, but CI is set: .ci/run installs it (apt-get install -y kubernetes-client)");
      t.skip("kubectl is not installed (apt-get install -y kubernetes-client; .ci/run does it), so `kubectl kustomize deploy/kubernetes` is not checked");
      return;
    }
    const out = execFileSync("kubectl", ["kustomize", DIR], { encoding: "utf8" });
    const built = parseAllDocuments(out).map((d) => d.toJS() as Record<string, unknown>);
    const expected = manifests.filter((m) => m.obj.kind !== "Job" && m.obj.kind !== "Secret").map((m) => `${m.obj.kind}/${(m.obj.metadata as { name: string }).name}`);
    assert.deepEqual(built.map((o) => `${String(o.kind)}/${(o.metadata as { name: string }).name}`).sort(), expected.sort());
  });

  test(S.label + "Deployments select their own pods; the Redis Service selects the Redis pods on a named port", () => {
    for (const d of deployments) {
      const labels = d.spec?.template.metadata?.labels ?? {};
      for (const [k, v] of Object.entries(d.spec?.selector.matchLabels ?? {})) assert.equal(labels[k], v, `${d.metadata?.name}: selector ${k}=${v} does not match its pod labels`);
      assert.ok(Object.keys(d.spec?.selector.matchLabels ?? {}).length > 0);
    }
    for (const s of services) {
      const targets = deployments.filter((d) => Object.entries(s.spec?.selector ?? {}).every(([k, v]) => d.spec?.template.metadata?.labels?.[k] === v));
      assert.equal(targets.length, 1, `Service ${s.metadata?.name} selects exactly one Deployment's pods`);
      const ports = podSpec(targets[0]!).containers.flatMap((c) => c.ports ?? []);
      for (const p of s.spec?.ports ?? []) {
        const target = p.targetPort ?? p.port;
        assert.ok(ports.some((cp) => cp.name === target || cp.containerPort === target), `Service ${s.metadata?.name} port ${p.port} targets ${target}, which the pods do not expose`);
      }
    }
  });

  if (!S.objectStorage) test(S.label + "every pod mounts the shared claim at /data, and the database lives there", () => {
    const cfg = configMaps.find((c) => c.metadata?.name === "lancet-config");
    assert.ok(cfg?.data);
    const db = cfg.data.LANCET_DB;
    assert.ok(db);
    assert.equal(pvcs.length, 1);
    assert.ok(pvcs[0]!.spec?.accessModes?.includes("ReadWriteMany"), "the claim is shared by many pods on many nodes");
    for (const d of [...deployments, ...jobs]) {
      const spec = podSpec(d);
      for (const v of spec.volumes ?? []) {
        if (v.persistentVolumeClaim) assert.ok(pvcs.some((p) => p.metadata?.name === v.persistentVolumeClaim!.claimName), `${d.metadata?.name} uses claim ${v.persistentVolumeClaim.claimName}, which is not defined`);
      }
      for (const c of spec.containers) for (const vm of c.volumeMounts ?? []) assert.ok(spec.volumes?.some((v) => v.name === vm.name), `${d.metadata?.name}/${c.name} mounts undefined volume ${vm.name}`);
    }
    for (const d of [...workers, ...jobs]) {
      const c = lancetContainer(d);
      const mount = c.volumeMounts?.find((vm) => podSpec(d).volumes?.find((v) => v.name === vm.name)?.persistentVolumeClaim?.claimName === "lancet-data");
      assert.equal(mount?.mountPath, "/data", `${d.metadata?.name} mounts lancet-data at /data`);
      assert.ok(db.startsWith(mount.mountPath + "/"), `LANCET_DB ${db} is on the shared volume`);
      assert.equal(envOf(c).get("LANCET_DB"), db);
    }
  });

  if (S.objectStorage) {
    test(S.label + "no volume claim or volume: every pod opens the s3:// database with the ConfigMap's endpoint and the Secret's credentials", () => {
      assert.deepEqual(pvcs, [], "no PersistentVolumeClaim");
      const cfg = configMaps.find((c) => c.metadata?.name === "lancet-config");
      assert.ok(cfg?.data);
      const db = cfg.data.LANCET_DB;
      assert.match(db ?? "", /^s3:\/\/[a-z0-9][a-z0-9.-]+[a-z0-9]\/\S+$/, "LANCET_DB is s3://bucket/prefix");
      const endpoint = cfg.data.AWS_ENDPOINT_URL;
      assert.ok(endpoint && /^https?:$/.test(new URL(endpoint).protocol), "the endpoint is in the ConfigMap, an http(s) URL");
      assert.ok(cfg.data.AWS_REGION, "the region is in the ConfigMap");
      const CREDENTIALS = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
      const SECRET_NAME = /SECRET|PASSWORD|TOKEN|ACCESS_KEY/i;
      for (const cm of configMaps) for (const k of Object.keys(cm.data ?? {})) assert.ok(!SECRET_NAME.test(k), `ConfigMap ${cm.metadata?.name} holds ${k}: credentials belong in a Secret`);
      for (const d of [...deployments, ...jobs]) {
        const spec = podSpec(d);
        assert.deepEqual(spec.volumes ?? [], [], `${d.metadata?.name} has no volumes`);
        for (const c of spec.containers) {
          assert.deepEqual(c.volumeMounts ?? [], [], `${d.metadata?.name}/${c.name} mounts nothing`);
          // A literal value for a secret-looking variable would put the secret in the manifest.
          for (const e of c.env ?? []) if (SECRET_NAME.test(e.name)) assert.equal(e.value, undefined, `${d.metadata?.name}/${c.name}: ${e.name} is a literal value; read it from a Secret`);
          for (const src of c.envFrom ?? []) assert.equal(src.secretRef, undefined);
        }
      }
      for (const d of [...workers, ...jobs]) {
        const c = lancetContainer(d);
        const env = envOf(c);
        assert.equal(env.get("LANCET_DB"), db, `${d.metadata?.name} sees LANCET_DB`);
        assert.equal(env.get("AWS_ENDPOINT_URL"), endpoint, `${d.metadata?.name} sees the endpoint`);
        assert.equal(env.get("AWS_REGION"), cfg.data.AWS_REGION);
        for (const name of CREDENTIALS) {
          const e = c.env?.find((x) => x.name === name);
          assert.deepEqual(e?.valueFrom?.secretKeyRef, { name: "lancet-s3", key: name }, `${d.metadata?.name}: ${name} comes from the Secret lancet-s3 via secretKeyRef`);
          assert.equal(env.get(name), secretValue("lancet-s3", name));
        }
        assert.ok(!expandedArgs(c).some((a) => a.startsWith("--storage-option")), `${d.metadata?.name}: no storage options on the command line`);
      }
      // The template's values are placeholders, marked as such.
      for (const name of CREDENTIALS) assert.match(secretValue("lancet-s3", name), /^REPLACE-WITH-/);
      assert.match(readFileSync(path.join(DIR, "s3-secret.yaml"), "utf8"), /kubectl -n lancet create secret generic lancet-s3/);
    });

    test(S.label + "everything but storage is the same as in the shared-volume variant", () => {
      // Objects that do not touch storage are identical.
      const byKey = (set: ManifestSet, kind: string, name: string): Record<string, unknown> | undefined =>
        set.manifests.find((m) => kindKey(m.obj) === kind && (m.obj.metadata as { name?: string }).name === name)?.obj;
      const same = ["v1/Service/lancet-redis", "apps/v1/Deployment/lancet-redis", "networking.k8s.io/v1/NetworkPolicy/lancet-redis", "v1/Secret/lancet-redis",
        "keda.sh/v1alpha1/TriggerAuthentication/lancet-redis", "keda.sh/v1alpha1/ScaledObject/lancet-worker-cpu", "keda.sh/v1alpha1/ScaledObject/lancet-worker-gpu"];
      for (const key of same) {
        const kind = key.slice(0, key.lastIndexOf("/"));
        const name = key.slice(key.lastIndexOf("/") + 1);
        assert.ok(byKey(S, kind, name), `${key} is defined`);
        assert.deepEqual(byKey(S, kind, name), byKey(SHARED_VOLUME, kind, name), `${key} is the same as in ${SHARED_VOLUME.dir}`);
      }
      // The Lancet pods differ only in storage: no volume, the credentials, and the database in the arguments.
      const storageFree = (obj: Record<string, unknown>, set: ManifestSet): Record<string, unknown> => {
        const copy = structuredClone(obj) as unknown as IDeployment | IJob;
        const spec = copy.spec!.template.spec!;
        delete spec.volumes;
        for (const c of spec.containers) {
          delete c.volumeMounts;
          if (c.env) c.env = c.env.filter((e) => !e.name.startsWith("AWS_"));
          if (c.args) c.args = expandedArgsIn(set, c).slice(c.command?.length ?? 0).map((a, i, all) => (all[i - 1] === "--allow-db" || all[i - 1] === "--db" ? "<storage>" : a));
        }
        return copy as unknown as Record<string, unknown>;
      };
      const lancetPods = [...SHARED_VOLUME.workers, ...SHARED_VOLUME.jobs].map((d) => `${d.kind}/${d.metadata?.name}`);
      assert.deepEqual([...workers, ...jobs].map((d) => `${d.kind}/${d.metadata?.name}`).sort(), [...lancetPods].sort());
      for (const d of [...workers, ...jobs]) {
        const kind = `${d.apiVersion}/${d.kind}`;
        const theirs = byKey(SHARED_VOLUME, kind, d.metadata!.name!);
        assert.ok(theirs);
        assert.deepEqual(storageFree(d as unknown as Record<string, unknown>, S), storageFree(theirs, SHARED_VOLUME), `${d.metadata?.name} differs from the shared-volume one only in storage`);
      }
      const cfg = configMaps.find((c) => c.metadata?.name === "lancet-config")!;
      const theirCfg = SHARED_VOLUME.configMaps.find((c) => c.metadata?.name === "lancet-config")!;
      assert.equal(cfg.data?.LANCET_QUEUE, theirCfg.data?.LANCET_QUEUE);
      assert.deepEqual(Object.keys(cfg.data ?? {}).sort(), ["AWS_ENDPOINT_URL", "AWS_REGION", "LANCET_DB", "LANCET_QUEUE"]);
    });
  }

  test(S.label + "workers: one CPU and one GPU Deployment whose resources match what they advertise", () => {
    assert.deepEqual(workers.map((d) => d.metadata?.name).sort(), ["lancet-worker-cpu", "lancet-worker-gpu"]);
    for (const d of workers) {
      const c = lancetContainer(d);
      const args = c.args ?? [];
      const name = d.metadata?.name ?? "";
      const resourcesFlag = flag(args, "--resources");
      assert.ok(resourcesFlag, `${name} passes --resources`);
      const offered = parseResourcesFlag(resourcesFlag);
      const limits = c.resources?.limits ?? {};
      const requests = c.resources?.requests ?? {};
      const gpus = quantity(limits["nvidia.com/gpu"]);
      if (name.endsWith("-gpu")) {
        assert.ok(isGpu(d));
        assert.ok((offered.gpu ?? 0) > 0, `${name} advertises gpu in --resources`);
        assert.equal(offered.gpu, gpus, `${name}: --resources gpu equals its nvidia.com/gpu limit`);
        assert.equal(Number(flag(args, "--concurrency")), gpus, `${name}: one task per GPU`);
        const spec = podSpec(d);
        assert.ok(spec.tolerations?.some((t) => t.key === "nvidia.com/gpu" && t.effect === "NoSchedule"), `${name} tolerates the GPU taint`);
        assert.ok(Object.keys(spec.nodeSelector ?? {}).length > 0, `${name} selects GPU nodes`);
      } else {
        assert.ok(!isGpu(d) && gpus === undefined, `${name} requests no GPU`);
        assert.equal(offered.gpu, undefined, `${name} advertises no GPU`);
        assert.equal(quantity(requests["nvidia.com/gpu"]), undefined);
      }
      assert.equal(offered.cpu, quantity(requests.cpu), `${name}: --resources cpu equals the CPU request`);
      assert.equal(offered.memory, quantity(limits.memory)! / 2 ** 20, `${name}: --resources memory (MiB) equals the memory limit`);
      assert.ok(Number(flag(args, "--concurrency")) >= 1);
      assert.equal(d.spec?.replicas, 0, `${name} starts at zero; KEDA owns the replica count`);
      assert.ok((podSpec(d).terminationGracePeriodSeconds ?? 30) >= 300, `${name} gives running tasks time to finish on SIGTERM`);
    }
  });

  test(S.label + "the metrics port, probes and scrape annotations agree with --metrics-port", () => {
    for (const d of workers) {
      const c = lancetContainer(d);
      const port = Number(flag(c.args ?? [], "--metrics-port"));
      assert.ok(Number.isInteger(port) && port > 0, `${d.metadata?.name} passes --metrics-port`);
      const metrics = c.ports?.find((p) => p.name === "metrics");
      assert.equal(metrics?.containerPort, port, `${d.metadata?.name}: containerPort "metrics" equals --metrics-port`);
      for (const probe of [c.livenessProbe, c.readinessProbe]) {
        assert.equal(probe?.httpGet?.path, "/healthz");
        assert.ok(probe.httpGet.port === "metrics" || probe.httpGet.port === port, "probes hit the metrics port");
      }
      const ann = d.spec?.template.metadata?.annotations ?? {};
      assert.equal(ann["prometheus.io/scrape"], "true");
      assert.equal(ann["prometheus.io/port"], String(port));
      assert.equal(ann["prometheus.io/path"], "/metrics");
    }
  });

  test(S.label + "commands run the lancet bin directly (npx's sh -c wrapper would swallow SIGTERM)", () => {
    for (const d of [...workers, ...jobs]) {
      const c = lancetContainer(d);
      assert.deepEqual(c.command, [LANCET_BIN]);
      assert.ok(!(c.args ?? []).includes("npx"));
    }
  });

  test(S.label + "Redis: every Lancet pod's URL and the KEDA addresses point at the Redis Service, with the Secret's password", () => {
    const redis = services.find((s) => s.metadata?.name === "lancet-redis");
    assert.ok(redis, "Service lancet-redis");
    const ports = (redis.spec?.ports ?? []).map((p) => p.port);
    assert.ok(!("LANCET_REDIS_URL" in (configMaps.find((c) => c.metadata?.name === "lancet-config")!.data ?? {})), "the URL carries the password: not in a ConfigMap");
    const urls = [...workers, ...jobs].map((d) => envOf(lancetContainer(d)).get("LANCET_REDIS_URL"));
    assert.equal(new Set(urls).size, 1, "workers and coordinator share the Redis URL");
    assert.ok(urls[0], "LANCET_REDIS_URL is set on every Lancet pod");
    const url = new URL(urls[0]);
    assert.equal(url.protocol, "redis:");
    assert.equal(url.password, secretValue("lancet-redis", "password"), "the URL's password is the Secret's");
    for (const d of [...workers, ...jobs]) {
      const env = lancetContainer(d).env ?? [];
      const pw = env.find((e) => e.valueFrom?.secretKeyRef?.name === "lancet-redis");
      assert.ok(pw, `${d.metadata?.name} reads the password from the Secret, not from a literal`);
      assert.ok(env.find((e) => e.name === "LANCET_REDIS_URL")?.value?.includes(`$(${pw.name})`), `${d.metadata?.name} builds LANCET_REDIS_URL from it`);
    }
    assert.ok([redis.metadata?.name, `${redis.metadata?.name}.${NAMESPACE}.svc`, `${redis.metadata?.name}.${NAMESPACE}.svc.cluster.local`].includes(url.hostname), `LANCET_REDIS_URL host ${url.hostname} is the Service`);
    assert.ok(ports.includes(Number(url.port || 6379)));
    const valkey = onlyContainer(deployments.find((d) => d.metadata?.name === "lancet-redis"));
    assert.ok(valkey.args?.includes("noeviction"), "BullMQ needs maxmemory-policy noeviction");
    assert.equal(valkey.args?.[valkey.args.indexOf("--maxmemory-policy") + 1], "noeviction");
    assert.equal(expandedArgs(valkey)[expandedArgs(valkey).indexOf("--requirepass") + 1], secretValue("lancet-redis", "password"), "Redis requires the Secret's password");
    const probe = valkey.readinessProbe?.exec?.command?.join(" ") ?? "";
    assert.ok(/-a "\$REDIS_PASSWORD"/.test(probe) && envOf(valkey).get("REDIS_PASSWORD") !== undefined, "the readiness probe authenticates");
    for (const so of scaledObjects) {
      for (const t of so.spec?.triggers ?? []) {
        if (t.type !== "redis") continue;
        const address = t.metadata?.address;
        assert.ok(address, `${so.metadata?.name}: redis trigger has an address`);
        const [host, port] = address.split(":");
        // KEDA's operator runs in another namespace, so the host must name the Service's namespace.
        assert.equal(host, `${redis.metadata?.name}.${NAMESPACE}.svc`, `${so.metadata?.name}: address host is the Redis Service, namespace-qualified`);
        assert.ok(ports.includes(Number(port)), `${so.metadata?.name}: address port is a Service port`);
      }
    }
  });

  test(S.label + "KEDA scales each worker Deployment on the wait list of the queue it serves", () => {
    const targets = scaledObjects.map((so) => so.spec?.scaleTargetRef.name);
    assert.deepEqual([...targets].sort(), workers.map((d) => d.metadata?.name).sort(), "each worker Deployment has exactly one ScaledObject");
    for (const so of scaledObjects) {
      const ref = so.spec!.scaleTargetRef;
      assert.ok((ref.kind ?? "Deployment") === "Deployment" && (ref.apiVersion ?? "apps/v1") === "apps/v1");
      const d = deployments.find((x) => x.metadata?.name === ref.name);
      assert.ok(d, `${so.metadata?.name} targets Deployment ${ref.name}, which is not defined`);
      const c = lancetContainer(d);
      // The worker's base queue: --queue if given, else LANCET_QUEUE from its environment (as lancet worker reads it).
      const base = flag(expandedArgs(c), "--queue") ?? envOf(c).get("LANCET_QUEUE");
      assert.ok(base, `${ref.name} has a queue`);
      const queue = `${base}-${isGpu(d) ? "gpu" : "cpu"}`;
      const triggers = so.spec?.triggers ?? [];
      assert.equal(triggers.length, 1);
      const t = triggers[0]!;
      assert.equal(t.type, "redis");
      // Redis requires a password: the trigger authenticates with a TriggerAuthentication reading the Secret.
      const auth = triggerAuths.find((a) => a.metadata?.name === t.authenticationRef?.name);
      assert.ok(auth, `${so.metadata?.name}: its redis trigger names a TriggerAuthentication defined here`);
      assert.ok((t.authenticationRef?.kind ?? "TriggerAuthentication") === "TriggerAuthentication");
      const pw = auth.spec?.secretTargetRef?.find((r) => r.parameter === "password");
      assert.ok(pw, `${auth.metadata?.name} supplies the password parameter`);
      secretValue(pw.name, pw.key);
      assert.deepEqual([pw.name, pw.key], ["lancet-redis", "password"], "KEDA uses the same Secret key as Redis and the pods");
      // Trigger metadata is a free-form map in the CRD, so the schema cannot catch a misspelt key; KEDA would
      // reject it only when the ScaledObject is reconciled.
      for (const key of Object.keys(t.metadata ?? {})) assert.ok(REDIS_TRIGGER_KEYS.has(key), `${so.metadata?.name}: unknown redis trigger setting ${key}`);
      assert.equal(t.metadata?.listName, `bull:${queue}:wait`, `${so.metadata?.name} watches the wait list of ${queue}`);
      assert.ok(Number(t.metadata?.listLength) >= 1);
      assert.equal(t.metadata?.activationListLength, "1");
      assert.equal(so.spec?.minReplicaCount, 0);
      assert.ok((so.spec?.maxReplicaCount ?? 0) >= 1);
      assert.ok((so.spec?.cooldownPeriod ?? 0) > 0);
    }
  });

  test(S.label + "the coordinator Job runs a resumable backfill against the same Redis, queue and database", () => {
    assert.equal(jobs.length, 1);
    const job = jobs[0]!;
    const spec = podSpec(job);
    assert.equal(spec.restartPolicy, "Never");
    assert.ok((job.spec?.backoffLimit ?? 6) >= 1, "a re-run resumes from checkpoints");
    const c = lancetContainer(job);
    const args = expandedArgs(c);
    const cfg = configMaps.find((m) => m.metadata?.name === "lancet-config")!.data!;
    assert.equal(args[1], "backfill");
    assert.equal(flag(args, "--db"), cfg.LANCET_DB);
    // backfill reads LANCET_REDIS_URL / LANCET_QUEUE when --redis / --queue are not given: the password stays off the command line.
    assert.equal(flag(args, "--redis"), undefined);
    assert.equal(flag(args, "--queue") ?? envOf(c).get("LANCET_QUEUE"), cfg.LANCET_QUEUE);
    assert.ok(envOf(c).get("LANCET_REDIS_URL"));
    assert.ok(flag(args, "--table") && flag(args, "--column"));
    assert.ok(args.includes("--json"));
    for (const d of workers) {
      assert.equal(envOf(lancetContainer(d)).get("LANCET_REDIS_URL"), envOf(c).get("LANCET_REDIS_URL"), "workers and coordinator share the Redis URL");
      if (S.objectStorage) assert.equal(flag(expandedArgs(lancetContainer(d)), "--allow-db"), cfg.LANCET_DB, `${d.metadata?.name} serves only the database LANCET_DB (and those under it)`);
      else assert.equal(flag(lancetContainer(d).args ?? [], "--allow-db"), "/data", `${d.metadata?.name} serves only databases on the shared volume`);
    }
    assert.ok(c.image && workers.every((d) => lancetContainer(d).image === c.image), "coordinator and workers run the same image");
  });

  test(S.label + "NetworkPolicy: only Lancet's workers, coordinators and KEDA's operator reach Redis, on its port", () => {
    const redisPods = deployments.find((d) => d.metadata?.name === "lancet-redis")!.spec!.template.metadata!.labels!;
    const policies = networkPolicies.filter((p) => selects(p.spec?.podSelector, redisPods));
    assert.equal(policies.length, 1, "one NetworkPolicy selects the Redis pods");
    const np = policies[0]!;
    assert.deepEqual(np.spec?.policyTypes, ["Ingress"]);
    const rules = np.spec?.ingress ?? [];
    assert.equal(rules.length, 1);
    const rule = rules[0]!;
    const redisPort = onlyContainer(deployments.find((d) => d.metadata?.name === "lancet-redis")).ports?.find((p) => p.name === "redis")?.containerPort;
    assert.deepEqual(rule.ports?.map((p) => [p.protocol, p.port]), [["TCP", redisPort]], "only the Redis port");
    const peers = rule.from ?? [];
    assert.ok(peers.length > 0, "an empty from would allow everyone");
    for (const p of peers) assert.ok(p.podSelector !== undefined && p.ipBlock === undefined, "every peer is selected by pod labels (no ipBlock, no whole namespace)");
    // Same-namespace peers (no namespaceSelector) that match a pod template's labels.
    const allowedHere = (labels: Record<string, string>): boolean => peers.some((p) => p.namespaceSelector === undefined && selects(p.podSelector, labels));
    for (const d of [...workers, ...jobs]) {
      const labels = (d.spec?.template.metadata?.labels ?? {}) as Record<string, string>;
      assert.ok(allowedHere(labels), `${d.metadata?.name}'s pods may reach Redis`);
    }
    assert.ok(!allowedHere({ app: "something-else" }), "other pods of the namespace may not");
    assert.ok(!allowedHere({ "app.kubernetes.io/name": "lancet" }), "a pod that only claims to be Lancet, without a Lancet component, may not");
    const keda = peers.filter((p) => p.namespaceSelector !== undefined);
    assert.equal(keda.length, 1, "one peer in another namespace: KEDA's operator");
    assert.ok(selects(keda[0]!.namespaceSelector, { "kubernetes.io/metadata.name": "keda" }));
    assert.ok(selects(keda[0]!.podSelector, { "app.kubernetes.io/name": "keda-operator" }));
    assert.ok(!selects(keda[0]!.podSelector, { "app.kubernetes.io/name": "keda-admission-webhooks" }), "only the operator, not every KEDA pod");
  });
}
