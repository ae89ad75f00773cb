/**
 * A small fault-injecting HTTP proxy in front of the test S3 server (no toxiproxy here): it listens on
 * 127.0.0.1, forwards every request byte for byte (method, path, raw headers including Host and
 * If-None-Match, so SigV4 signatures stay valid; bodies streamed both ways) unless an injected fault
 * matches it. Point an S3 client (or LanceDB's `endpoint` storage option) at `endpoint`.
 *
 * Faults, each applied to the next `count` matching requests (default 1), in injection order:
 * - `slowdown`: reply 503 with an S3 `<Error><Code>SlowDown</Code>` body, without forwarding;
 * - `reset`: destroy the client's socket without a reply;
 * - `timeout`: hold the request `ms` milliseconds, then forward it; without `ms` (or `Infinity`),
 *   never reply (the socket stays open until the client gives up or the proxy closes);
 * - `truncate`: forward, then send the status, the original headers (Content-Length included) and
 *   only the first half of the body, and close the connection.
 * `match` restricts a fault to one method and/or to requests whose decoded path contains `key`.
 */
import * as http from "node:http";
import type { AddressInfo, Socket } from "node:net";

export interface FaultMatch {
  method?: string;
  /** a substring of the request's decoded path (`/bucket/key`) */
  key?: string;
}

export type Fault = (
  | { kind: "slowdown" }
  | { kind: "reset" }
  | { kind: "timeout"; ms?: number }
  | { kind: "truncate" }
) & { match?: FaultMatch };

export interface S3Proxy {
  /** `http://127.0.0.1:PORT` */
  readonly endpoint: string;
  /** Applies FAULT to the next COUNT (default 1) matching requests. */
  inject(fault: Fault, count?: number): void;
  /** Drops every pending fault. */
  clear(): void;
  /** Destroys the client connections of the requests a `timeout` fault is holding now (the client sees a reset); returns how many. */
  dropHeld(): number;
  /** Requests received so far (faulted ones included). */
  readonly requests: number;
  /** One line per request a fault was applied to, in order: `KIND METHOD /bucket/key`. */
  readonly faulted: readonly string[];
  close(): Promise<void>;
}

interface Rule {
  fault: Fault;
  left: number;
}

function slowDownBody(resource: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><Resource>${resource.replace(/[<>&]/g, "")}</Resource><RequestId>lancet-proxy</RequestId></Error>`;
}

export async function startS3Proxy(target: string /* http://127.0.0.1:PORT */): Promise<S3Proxy> {
  const upstream = new URL(target);
  if (upstream.protocol !== "http:") throw new Error(`startS3Proxy: only http:// targets (${target})`);
  const upstreamPort = Number(upstream.port || 80);
  const agent = new http.Agent({ keepAlive: true });
  let rules: Rule[] = [];
  let requests = 0;
  const faulted: string[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const held = new Set<http.IncomingMessage>();

  const take = (req: http.IncomingMessage): Fault | undefined => {
    let pathname = (req.url ?? "/").split("?")[0] ?? "/";
    try {
      pathname = decodeURIComponent(pathname);
    } catch {
      /* keep it raw */
    }
    for (const r of rules) {
      const m = r.fault.match;
      if (m?.method && m.method.toUpperCase() !== req.method) continue;
      if (m?.key !== undefined && !pathname.includes(m.key)) continue;
      r.left--;
      rules = rules.filter((x) => x.left > 0);
      faulted.push(`${r.fault.kind} ${req.method} ${pathname}`);
      return r.fault;
    }
    return undefined;
  };

  const forward = (req: http.IncomingMessage, res: http.ServerResponse, truncate: boolean): void => {
    const up = http.request({
      host: upstream.hostname,
      port: upstreamPort,
      method: req.method,
      path: req.url,
      headers: req.rawHeaders, // as sent: Host (signed by SigV4), If-None-Match, x-amz-*, ...
      setHost: false,
      agent,
    });
    up.on("error", () => req.socket.destroy());
    res.on("close", () => {
      if (!res.writableFinished) up.destroy();
    });
    up.on("response", (ur) => {
      if (!truncate) {
        res.writeHead(ur.statusCode ?? 502, ur.statusMessage, ur.rawHeaders);
        ur.pipe(res);
        ur.on("error", () => res.destroy());
        return;
      }
      const chunks: Buffer[] = [];
      ur.on("data", (c: Buffer) => chunks.push(c));
      ur.on("error", () => res.destroy());
      ur.on("end", () => {
        const body = Buffer.concat(chunks);
        // A declared Content-Length longer than what follows: the client sees a short read.
        const headers = ur.rawHeaders.slice();
        let hasLength = false;
        for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() === "content-length") hasLength = true;
        if (!hasLength) headers.push("Content-Length", String(body.length));
        res.writeHead(ur.statusCode ?? 502, ur.statusMessage, headers);
        res.flushHeaders();
        const cut = body.subarray(0, Math.floor(body.length / 2));
        const done = () => res.socket?.destroy();
        if (cut.length > 0) res.write(cut, () => setImmediate(done));
        else setImmediate(done);
      });
    });
    req.pipe(up);
  };

  const server = http.createServer((req, res) => {
    requests++;
    const fault = take(req);
    if (!fault) return forward(req, res, false);
    switch (fault.kind) {
      case "slowdown": {
        req.resume();
        const body = slowDownBody(req.url ?? "/");
        req.on("end", () => {
          res.writeHead(503, "Slow Down", { "Content-Type": "application/xml", "Content-Length": Buffer.byteLength(body), "x-amz-request-id": "lancet-proxy" });
          res.end(body);
        });
        return;
      }
      case "reset":
        req.socket.destroy();
        return;
      case "timeout": {
        const ms = fault.ms;
        held.add(req);
        req.socket.once("close", () => held.delete(req));
        if (ms === undefined || !Number.isFinite(ms)) return; // never replies; close() ends the socket
        req.pause();
        const t = setTimeout(() => {
          timers.delete(t);
          held.delete(req);
          if (!req.socket.destroyed) forward(req, res, false);
        }, ms);
        timers.add(t);
        return;
      }
      case "truncate":
        return forward(req, res, true);
    }
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("clientError", (_e, s) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    inject(fault: Fault, count = 1): void {
      if (count > 0) rules.push({ fault, left: count });
    },
    clear(): void {
      rules = [];
    },
    dropHeld(): number {
      const n = held.size;
      for (const req of held) req.socket.destroy();
      held.clear();
      return n;
    },
    get requests(): number {
      return requests;
    },
    get faulted(): readonly string[] {
      return faulted;
    },
    async close(): Promise<void> {
      rules = [];
      for (const t of timers) clearTimeout(t);
      timers.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      agent.destroy();
      await closed;
    },
  };
}
