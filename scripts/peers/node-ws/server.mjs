// Peer server for the wscope benchmark suite: Node 20 + ws 8 + a Map-based tracker following the
// reference "WebSocket Stats API" (see tracker.mjs).
//
//   node server.mjs --port 8080 --admin-port 9090 [--host 127.0.0.1]
//   (or PORT / ADMIN_PORT / HOST in the environment)
//
// Main port: GET /ws (echo), GET /ws/chat (fan-out to every chat connection, the sender included),
// GET /health; a plain GET on a WebSocket route gets 426.
// Admin port: GET /api/stats (ConnectionStats with the full connection list), POST /api/admin
// ({"action": "get_stats" | "close_all" | "cleanup"}), GET /health.
// SIGINT/SIGTERM: close every connection with 1001 "Server shutting down", exit when they are gone
// (at most 1 s later).

import http from 'node:http'
import { WebSocketServer } from 'ws'
import { ConnectionTracker } from './tracker.mjs'

const args = parseArgs(process.argv.slice(2))
const host = args.host ?? process.env.HOST ?? '127.0.0.1'
const port = Number(args.port ?? process.env.PORT ?? 8080)
const adminPort = Number(args['admin-port'] ?? process.env.ADMIN_PORT ?? 9090)
const instanceId = process.env.INSTANCE_ID ?? `node-ws-${process.pid}`

const tracker = new ConnectionTracker()
const wss = new WebSocketServer({ noServer: true })
const WS_PATHS = new Set(['/ws', '/ws/chat'])

function health () {
  const stats = tracker.getConnectionCount()
  let ageSum = 0
  const now = Date.now()
  for (const info of tracker.connections.values()) ageSum += now - info.connectedAt
  return {
    status: tracker.isShutDown ? 'shutting_down' : 'healthy',
    activeConnections: stats,
    averageAge: stats > 0 ? Math.round(ageSum / stats / 1000) : 0,
    uptime: process.uptime(),
    instanceId
  }
}

function sendJson (res, status, body) {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

function pathOf (url) {
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q)
}

const server = http.createServer((req, res) => {
  const path = pathOf(req.url)
  if (req.method === 'GET' && path === '/health') return sendJson(res, 200, health())
  if (WS_PATHS.has(path)) {
    res.writeHead(426, { 'content-type': 'text/plain' })
    return res.end('Upgrade required')
  }
  res.writeHead(404)
  res.end()
})

server.on('upgrade', (req, socket, head) => {
  const path = pathOf(req.url)
  if (!WS_PATHS.has(path) || tracker.isShutDown) {
    socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n')
    return
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const id = tracker.register(ws, req, path)
    ws.on('error', () => {})
    ws.on('close', () => tracker.unregister(id))
    if (path === '/ws') {
      ws.on('message', (data, isBinary) => {
        tracker.touch(id) // in
        ws.send(data, { binary: isBinary })
        tracker.touch(id) // out
      })
    } else {
      ws.on('message', (data, isBinary) => {
        tracker.touch(id)
        // Fan out through the tracker's active connections, as the reference's broadcast example.
        for (const [otherId, info] of tracker.connections) {
          if (info.path === '/ws/chat' && info.socket.readyState === 1) {
            info.socket.send(data, { binary: isBinary })
            tracker.touch(otherId)
          }
        }
      })
    }
  })
})

const admin = http.createServer((req, res) => {
  const path = pathOf(req.url)
  if (req.method === 'GET' && path === '/api/stats') return sendJson(res, 200, tracker.getConnectionStats())
  if (req.method === 'GET' && path === '/health') return sendJson(res, 200, health())
  if (req.method === 'POST' && path === '/api/admin') {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk) => { body += chunk })
    req.on('end', () => {
      let msg
      try { msg = JSON.parse(body) } catch { return sendJson(res, 400, { error: 'bad JSON' }) }
      switch (msg?.action) {
        case 'get_stats': return sendJson(res, 200, tracker.getConnectionStats())
        case 'close_all':
          tracker.closeAllConnections(msg.code ?? 1000, msg.reason ?? '')
          return sendJson(res, 200, { success: true })
        case 'cleanup': return sendJson(res, 200, { cleaned: tracker.cleanupStaleConnections() })
        default: return sendJson(res, 400, { error: 'unknown action' })
      }
    })
    return
  }
  res.writeHead(404)
  res.end()
})

let shuttingDown = false
function shutdown (signal) {
  if (shuttingDown) return
  shuttingDown = true
  console.error(`node-ws: ${signal}, closing ${tracker.getConnectionCount()} connections with 1001`)
  server.close()
  admin.close()
  tracker.shutdown()
  const started = Date.now()
  const timer = setInterval(() => {
    if (tracker.getConnectionCount() === 0 || Date.now() - started > 1000) {
      clearInterval(timer)
      process.exit(0)
    }
  }, 20)
}
process.on('SIGINT', () => shutdown('SIGINT'))
process.on('SIGTERM', () => shutdown('SIGTERM'))

server.listen(port, host, 4096, () => {
  admin.listen(adminPort, host, () => {
    console.error(`node-ws listening on ${host}:${server.address().port}, admin ${host}:${admin.address().port}`)
  })
})

function parseArgs (argv) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`)
    const eq = a.indexOf('=')
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1)
    else out[a.slice(2)] = argv[++i]
  }
  return out
}
