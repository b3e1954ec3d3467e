// A connection tracker following the reference "WebSocket Stats API" (zastro-websockets-node):
// a Map of connection id -> { socket, connectedAt, lastActivity, remoteAddress, userAgent, path },
// the activity timestamp updated on every message in and out, ConnectionStats computed on demand,
// stale entries swept every 30 seconds, SIGINT/SIGTERM close everything with 1001.
//
// Shared in spirit by the Bun peer (scripts/peers/bun/server.ts keeps its own copy, typed).

import { randomUUID } from 'node:crypto'

// WebSocket readyState values (the same in `ws` and in browsers).
const STATE_NAMES = ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']

export class ConnectionTracker {
  constructor () {
    /** @type {Map<string, {socket: any, connectedAt: number, lastActivity: number, remoteAddress?: string, userAgent?: string, path: string}>} */
    this.connections = new Map()
    this.totalConnectionsEver = 0
    this.totalConnectionsClosed = 0
    this.isShutDown = false
    this.cleanupTimer = setInterval(() => this.cleanupStaleConnections(), 30_000)
    this.cleanupTimer.unref()
  }

  /** Registers a socket; returns its id. */
  register (socket, req, path) {
    const id = randomUUID()
    const now = Date.now()
    this.connections.set(id, {
      socket,
      connectedAt: now,
      lastActivity: now,
      remoteAddress: clientAddress(req),
      userAgent: req.headers['user-agent'],
      path
    })
    this.totalConnectionsEver++
    return id
  }

  /** Marks activity (a message in or out). */
  touch (id) {
    const info = this.connections.get(id)
    if (info !== undefined) info.lastActivity = Date.now()
  }

  /** Removes a closed connection. */
  unregister (id) {
    if (this.connections.delete(id)) this.totalConnectionsClosed++
  }

  getConnectionCount () {
    return this.connections.size
  }

  /** Active sockets (the reference returns a Set of WebSocket instances). */
  getActiveConnections () {
    const out = new Set()
    for (const info of this.connections.values()) {
      if (info.socket.readyState === 1) out.add(info.socket)
    }
    return out
  }

  getConnectionStats () {
    const now = Date.now()
    const byState = { CONNECTING: 0, OPEN: 0, CLOSING: 0, CLOSED: 0 }
    const connections = []
    let ageSum = 0
    let idleSum = 0
    for (const [id, info] of this.connections) {
      const age = now - info.connectedAt
      const idleTime = now - info.lastActivity
      const state = STATE_NAMES[info.socket.readyState] ?? 'CLOSED'
      byState[state]++
      ageSum += age
      idleSum += idleTime
      connections.push({
        id,
        age,
        idleTime,
        state,
        remoteAddress: info.remoteAddress,
        userAgent: info.userAgent
      })
    }
    const n = this.connections.size
    return {
      totalConnections: n,
      totalConnectionsEver: this.totalConnectionsEver,
      totalConnectionsClosed: this.totalConnectionsClosed,
      averageAge: n > 0 ? ageSum / n : 0,
      averageIdleTime: n > 0 ? idleSum / n : 0,
      connectionsByState: byState,
      connections
    }
  }

  closeAllConnections (code = 1000, reason = '') {
    for (const info of this.connections.values()) {
      if (info.socket.readyState === 0 || info.socket.readyState === 1) {
        try { info.socket.close(code, reason) } catch { /* already gone */ }
      }
    }
  }

  cleanupStaleConnections () {
    let cleaned = 0
    for (const [id, info] of this.connections) {
      if (info.socket.readyState === 3) {
        this.connections.delete(id)
        this.totalConnectionsClosed++
        cleaned++
      }
    }
    return cleaned
  }

  shutdown () {
    this.closeAllConnections(1001, 'Server shutting down')
    clearInterval(this.cleanupTimer)
    this.isShutDown = true
  }
}

/** The client address: X-Forwarded-For / X-Real-IP when present (as the reference), else the TCP peer. */
function clientAddress (req) {
  const xff = req.headers['x-forwarded-for']
  if (typeof xff === 'string' && xff.length > 0) return xff.split(',')[0].trim()
  const real = req.headers['x-real-ip']
  if (typeof real === 'string' && real.length > 0) return real
  return req.socket.remoteAddress
}
