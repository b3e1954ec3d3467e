// Smoke test for any peer (not a benchmark): checks /ws echo (text and binary), /ws/chat fan-out,
// /health and, when an admin port is given, /api/stats while the sockets are open.
//
//   node smoke-client.mjs --port 8080 [--admin-port 9090] [--host 127.0.0.1]
//
// Exits 0 when every check passes, 1 otherwise; gives up after 10 s.

import WebSocket from 'ws'

const args = {}
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1]
const host = args.host ?? '127.0.0.1'
const port = Number(args.port ?? 8080)
const adminPort = args['admin-port'] ? Number(args['admin-port']) : undefined
const base = `ws://${host}:${port}`

setTimeout(() => { console.error('smoke: timed out'); process.exit(1) }, 10_000).unref()

function open (path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + path, { headers: { 'user-agent': 'wscope-smoke/1' } })
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })
}

function next (ws) {
  return new Promise((resolve) => ws.once('message', (data, isBinary) => resolve({ data, isBinary })))
}

function check (cond, what) {
  if (!cond) { console.error(`smoke: FAIL ${what}`); process.exit(1) }
  console.log(`smoke: ok   ${what}`)
}

const healthRes = await fetch(`http://${host}:${port}/health`)
check(healthRes.ok, `GET /health -> ${healthRes.status}`)
const plain = await fetch(`http://${host}:${port}/ws`)
// The untracked baseline (axum defaults) answers 400; only the tracked peers promise 426.
if (adminPort !== undefined) check(plain.status === 426, `plain GET /ws -> ${plain.status} (426 expected)`)
else console.log(`smoke: note plain GET /ws -> ${plain.status}`)

const echo = await open('/ws')
let p = next(echo)
echo.send('hello')
let m = await p
check(!m.isBinary && m.data.toString() === 'hello', 'text echo')
p = next(echo)
echo.send(Buffer.from([1, 2, 3]))
m = await p
check(m.isBinary && Buffer.compare(m.data, Buffer.from([1, 2, 3])) === 0, 'binary echo')

const a = await open('/ws/chat')
const b = await open('/ws/chat')
const pa = next(a)
const pb = next(b)
a.send('to all')
const [ma, mb] = await Promise.all([pa, pb])
check(ma.data.toString() === 'to all' && mb.data.toString() === 'to all', 'chat fan-out to both members (sender included)')

if (adminPort !== undefined) {
  const res = await fetch(`http://${host}:${adminPort}/api/stats`)
  const stats = await res.json()
  check(res.ok && stats.totalConnections >= 3, `GET /api/stats totalConnections=${stats.totalConnections}`)
  const c = stats.connections?.[0]
  check(c && ['id', 'age', 'idleTime', 'state', 'remoteAddress', 'userAgent'].every((k) => k in c),
    `connection fields ${JSON.stringify(c)}`)
  check(stats.connectionsByState && 'OPEN' in stats.connectionsByState, 'connectionsByState')
}

for (const ws of [echo, a, b]) ws.close(1000)
console.log('smoke: all checks passed')
process.exit(0)
