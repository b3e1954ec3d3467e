// Peer server for the wscope benchmark suite: Bun.serve websockets + a Map-based tracker following
// the reference "WebSocket Stats API" (the same tracker as scripts/peers/node-ws/tracker.mjs).
//
//   node_modules/.bin/bun server.ts --port 8080 --admin-port 9090 [--host 127.0.0.1]
//   (or PORT / ADMIN_PORT / HOST in the environment)
//
// Main port: GET /ws (echo), GET /ws/chat (fan-out to every chat connection, the sender included,
// through the tracker as the reference's broadcast example), GET /health; a plain GET on a
// WebSocket route gets 426.
// Admin port: GET /api/stats (ConnectionStats with the full connection list), POST /api/admin
// ({"action": "get_stats" | "close_all" | "cleanup"}), GET /health.
// SIGINT/SIGTERM: close every connection with 1001 "Server shutting down", exit when they are gone
// (at most 1 s later).
//
// Bun's defaults are kept except the WebSocket idle timeout (120 s by default), turned off so that
// the idle benchmark's held connections are not closed by the server (the other peers have none).

import type { ServerWebSocket } from "bun";

type Data = { id: string; path: string };
type Info = {
  socket: ServerWebSocket<Data>;
  connectedAt: number;
  lastActivity: number;
  remoteAddress?: string;
  userAgent?: string;
  path: string;
};

// ServerWebSocket.readyState: 0 CONNECTING, 1 OPEN, 2 CLOSING, 3 CLOSED.
const STATE_NAMES = ["CONNECTING", "OPEN", "CLOSING", "CLOSED"] as const;

class ConnectionTracker {
  connections = new Map<string, Info>();
  totalConnectionsEver = 0;
  totalConnectionsClosed = 0;
  isShutDown = false;
  private cleanupTimer = setInterval(() => this.cleanupStaleConnections(), 30_000);

  register(socket: ServerWebSocket<Data>, remoteAddress: string | undefined, userAgent: string | undefined): void {
    const now = Date.now();
    this.connections.set(socket.data.id, {
      socket,
      connectedAt: now,
      lastActivity: now,
      remoteAddress,
      userAgent,
      path: socket.data.path,
    });
    this.totalConnectionsEver++;
  }

  touch(id: string): void {
    const info = this.connections.get(id);
    if (info !== undefined) info.lastActivity = Date.now();
  }

  unregister(id: string): void {
    if (this.connections.delete(id)) this.totalConnectionsClosed++;
  }

  getConnectionCount(): number {
    return this.connections.size;
  }

  getConnectionStats() {
    const now = Date.now();
    const byState = { CONNECTING: 0, OPEN: 0, CLOSING: 0, CLOSED: 0 };
    const connections: Array<Record<string, unknown>> = [];
    let ageSum = 0;
    let idleSum = 0;
    for (const [id, info] of this.connections) {
      const age = now - info.connectedAt;
      const idleTime = now - info.lastActivity;
      const state = STATE_NAMES[info.socket.readyState] ?? "CLOSED";
      byState[state]++;
      ageSum += age;
      idleSum += idleTime;
      connections.push({
        id,
        age,
        idleTime,
        state,
        remoteAddress: info.remoteAddress,
        userAgent: info.userAgent,
      });
    }
    const n = this.connections.size;
    return {
      totalConnections: n,
      totalConnectionsEver: this.totalConnectionsEver,
      totalConnectionsClosed: this.totalConnectionsClosed,
      averageAge: n > 0 ? ageSum / n : 0,
      averageIdleTime: n > 0 ? idleSum / n : 0,
      connectionsByState: byState,
      connections,
    };
  }

  closeAllConnections(code = 1000, reason = ""): void {
    for (const info of this.connections.values()) {
      const s = info.socket.readyState;
      if (s === 0 || s === 1) {
        try {
          info.socket.close(code, reason);
        } catch {
          /* already gone */
        }
      }
    }
  }

  cleanupStaleConnections(): number {
    let cleaned = 0;
    for (const [id, info] of this.connections) {
      if (info.socket.readyState === 3) {
        this.connections.delete(id);
        this.totalConnectionsClosed++;
        cleaned++;
      }
    }
    return cleaned;
  }

  shutdown(): void {
    this.closeAllConnections(1001, "Server shutting down");
    clearInterval(this.cleanupTimer);
    this.isShutDown = true;
  }
}

function parseArgs(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf("=");
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else out[a.slice(2)] = argv[++i];
  }
  return out;
}

const args = parseArgs(Bun.argv.slice(2));
const host = args.host ?? process.env.HOST ?? "127.0.0.1";
const port = Number(args.port ?? process.env.PORT ?? 8080);
const adminPort = Number(args["admin-port"] ?? process.env.ADMIN_PORT ?? 9090);
const instanceId = process.env.INSTANCE_ID ?? `bun-${process.pid}`;
const tracker = new ConnectionTracker();
const startedAt = Date.now();

function health() {
  const n = tracker.getConnectionCount();
  const now = Date.now();
  let ageSum = 0;
  for (const info of tracker.connections.values()) ageSum += now - info.connectedAt;
  return {
    status: tracker.isShutDown ? "shutting_down" : "healthy",
    activeConnections: n,
    averageAge: n > 0 ? Math.round(ageSum / n / 1000) : 0,
    uptime: (Date.now() - startedAt) / 1000,
    instanceId,
  };
}

function clientAddress(req: Request, peer: string | undefined): string | undefined {
  const xff = req.headers.get("x-forwarded-for");
  if (xff) return xff.split(",")[0].trim();
  const real = req.headers.get("x-real-ip");
  if (real) return real;
  return peer;
}

// Remote address and user agent are only known in fetch(); carried to open() through these.
const pending = new Map<string, { remoteAddress?: string; userAgent?: string }>();

const server = Bun.serve<Data, {}>({
  hostname: host,
  port,
  fetch(req, server) {
    const path = new URL(req.url).pathname;
    if (path === "/health") return Response.json(health());
    if (path === "/ws" || path === "/ws/chat") {
      if (tracker.isShutDown) return new Response("shutting down", { status: 503 });
      const id = crypto.randomUUID();
      pending.set(id, {
        remoteAddress: clientAddress(req, server.requestIP(req)?.address),
        userAgent: req.headers.get("user-agent") ?? undefined,
      });
      if (server.upgrade(req, { data: { id, path } })) return undefined;
      pending.delete(id);
      return new Response("Upgrade required", { status: 426 });
    }
    return new Response("not found", { status: 404 });
  },
  websocket: {
    idleTimeout: 0,
    open(ws) {
      const meta = pending.get(ws.data.id);
      pending.delete(ws.data.id);
      tracker.register(ws, meta?.remoteAddress, meta?.userAgent);
    },
    message(ws, message) {
      const id = ws.data.id;
      tracker.touch(id); // in
      if (ws.data.path === "/ws") {
        ws.send(message);
        tracker.touch(id); // out
      } else {
        for (const [otherId, info] of tracker.connections) {
          if (info.path === "/ws/chat" && info.socket.readyState === 1) {
            info.socket.send(message);
            tracker.touch(otherId);
          }
        }
      }
    },
    close(ws) {
      tracker.unregister(ws.data.id);
    },
  },
});

const admin = Bun.serve({
  hostname: host,
  port: adminPort,
  async fetch(req) {
    const path = new URL(req.url).pathname;
    if (req.method === "GET" && path === "/api/stats") return Response.json(tracker.getConnectionStats());
    if (req.method === "GET" && path === "/health") return Response.json(health());
    if (req.method === "POST" && path === "/api/admin") {
      let msg: { action?: string; code?: number; reason?: string };
      try {
        msg = await req.json();
      } catch {
        return Response.json({ error: "bad JSON" }, { status: 400 });
      }
      switch (msg?.action) {
        case "get_stats":
          return Response.json(tracker.getConnectionStats());
        case "close_all":
          tracker.closeAllConnections(msg.code ?? 1000, msg.reason ?? "");
          return Response.json({ success: true });
        case "cleanup":
          return Response.json({ cleaned: tracker.cleanupStaleConnections() });
        default:
          return Response.json({ error: "unknown action" }, { status: 400 });
      }
    }
    return new Response("not found", { status: 404 });
  },
});

console.error(`bun listening on ${host}:${server.port}, admin ${host}:${admin.port}`);

let shuttingDown = false;
function shutdown(signal: string): void {
  if (shuttingDown) return;
  shuttingDown = true;
  console.error(`bun: ${signal}, closing ${tracker.getConnectionCount()} connections with 1001`);
  tracker.shutdown();
  const started = Date.now();
  const timer = setInterval(() => {
    if (tracker.getConnectionCount() === 0 || Date.now() - started > 1000) {
      clearInterval(timer);
      server.stop(true);
      admin.stop(true);
      process.exit(0);
    }
  }, 20);
}
process.on("SIGINT", () => shutdown("SIGINT"));
process.on("SIGTERM", () => shutdown("SIGTERM"));
