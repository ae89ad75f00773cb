/**
 * A real redis-server for distributed-mode tests: started on a free loopback port in a temporary
 * directory, without persistence, stopped by its PID (never by name), optionally with a password
 * (`requirepass`). Tests skip themselves when
 * Debian's redis-server is not installed (`.ci/run` installs it).
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { Redis } from "ioredis";

export function redisAvailable(): boolean {
  try {
    execFileSync("redis-server", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Why distributed tests that start their own redis-server are skipped here, or false when they run. */
export const skipRedis: string | false = redisAvailable() ? false : "redis-server is not installed (apt-get install -y redis-server; .ci/run does it)";

/**
 * {@link skipRedis}, for a suite that starts its own redis-server. Where LANCET_TEST_REDIS_URL is set
 * (CI sets it) a missing redis-server is a gap, not a skip: this also adds a failing test that says so,
 * so the run fails instead of reporting the suite as skipped.
 */
export function requireRedisServer(): string | false {
  if (skipRedis && process.env.LANCET_TEST_REDIS_URL) {
    test("redis-server is installed (LANCET_TEST_REDIS_URL is set, so the distributed tests must run)", () => {
      throw new Error("redis-server is not installed, but LANCET_TEST_REDIS_URL is set: the distributed tests that start their own server cannot run; install it (apt-get install -y redis-server; .ci/run does it)");
    });
  }
  return skipRedis;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a ? a.port : 0));
    });
  });
}

export interface RedisServerOptions {
  /** Clients must authenticate with this password (`--requirepass`); `url` carries it. */
  readonly password?: string;
}

export class RedisServer {
  readonly port: number;
  readonly dir: string;
  readonly password: string | undefined;
  private pid: number | undefined;

  private constructor(port: number, dir: string, password: string | undefined) {
    this.port = port;
    this.dir = dir;
    this.password = password;
  }

  /** `redis://127.0.0.1:PORT`, or `redis://:PASSWORD@127.0.0.1:PORT` with a password. */
  get url(): string {
    return this.password === undefined ? `redis://127.0.0.1:${this.port}` : `redis://:${encodeURIComponent(this.password)}@127.0.0.1:${this.port}`;
  }

  /** Starts a server on a free port (or `port`, to restart on the same one). */
  static async start(port?: number, options: RedisServerOptions = {}): Promise<RedisServer> {
    const s = new RedisServer(port ?? (await freePort()), mkdtempSync(path.join(tmpdir(), "lancet-redis-")), options.password);
    await s.launch();
    return s;
  }

  private async launch(): Promise<void> {
    const pidfile = path.join(this.dir, "redis.pid");
    rmSync(pidfile, { force: true });
    const child = spawn(
      "redis-server",
      [
        "--bind", "127.0.0.1", "--port", String(this.port), "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction", "--dir", this.dir, "--daemonize", "yes", "--pidfile", pidfile,
        ...(this.password === undefined ? [] : ["--requirepass", this.password]),
      ],
      { stdio: "ignore" },
    );
    await new Promise((r) => child.once("exit", r));
    const client = new Redis({ host: "127.0.0.1", port: this.port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, ...(this.password === undefined ? {} : { password: this.password }) });
    client.on("error", () => {});
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await client.connect();
        await client.ping();
        break;
      } catch {
        if (Date.now() > deadline) throw new Error(`redis-server did not answer on port ${this.port} within 10 s`);
        client.disconnect();
        await sleep(100);
      }
    }
    client.disconnect();
    for (let i = 0; i < 50 && this.pid === undefined; i++) {
      try {
        this.pid = Number(readFileSync(pidfile, "utf8").trim());
      } catch {
        await sleep(50);
      }
    }
    if (!this.pid) throw new Error("redis-server wrote no pidfile");
  }

  /** Kills the server (SIGKILL: everything in memory is lost, as in a crash) and waits for it to go. */
  async kill(): Promise<void> {
    const pid = this.pid;
    this.pid = undefined;
    if (!pid) return;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      return;
    }
    for (let i = 0; i < 100; i++) {
      try {
        process.kill(pid, 0);
        await sleep(50);
      } catch {
        return;
      }
    }
  }

  /** Starts it again on the same port (empty: no persistence). */
  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
