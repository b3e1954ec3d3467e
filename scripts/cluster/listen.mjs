// Chat listeners that count what arrives, for the cross-instance throughput run:
//   node --experimental-websocket scripts/cluster/listen.mjs URL CONNECTIONS SECONDS
// Opens CONNECTIONS WebSockets to URL (loopback only), prints "ready" on stderr once all are
// open, counts every message for at most SECONDS (or until 2 s pass with nothing new after the
// first arrival), then prints one JSON line: messages per listener, first and last arrival
// (ms since ready) and the rate per listener over that span.
const [url, conns = "1", secs = "60"] = process.argv.slice(2);
if (!/^ws:\/\/(127\.\d+\.\d+\.\d+|localhost)(:\d+)?\//.test(url ?? "")) {
  console.error("usage: listen.mjs ws://127.0.0.1:PORT/ws/chat [CONNECTIONS] [SECONDS] (loopback only)");
  process.exit(2);
}
const n = Number(conns);
const counts = new Array(n).fill(0);
let first = null;
let last = null;
let opened = 0;
let t0 = 0;
const sockets = [];
let openTimer;
const done = () => {
  for (const ws of sockets) ws.close();
  const total = counts.reduce((a, b) => a + b, 0);
  const spanMs = first === null ? 0 : last - first;
  console.log(JSON.stringify({
    url, listeners: n, perListener: counts, total,
    firstMs: first, lastMs: last,
    perListenerPerSec: spanMs > 0 ? Math.round((total / n) / (spanMs / 1000)) : null,
  }));
  process.exit(0);
};
for (let i = 0; i < n; i++) {
  const ws = new WebSocket(url);
  sockets.push(ws);
  ws.onopen = () => {
    if (++opened === n) {
      t0 = performance.now();
      clearTimeout(openTimer);
      console.error("ready");
      setTimeout(done, Number(secs) * 1000);
      setInterval(() => {
        if (last !== null && performance.now() - t0 - last > 2000) done();
      }, 200);
    }
  };
  ws.onmessage = () => {
    const now = performance.now() - t0;
    if (first === null) first = now;
    last = now;
    counts[i]++;
  };
  ws.onerror = (e) => { console.error(`listener ${i}: ${e.message ?? "error"}`); process.exit(1); };
}
openTimer = setTimeout(() => {
  console.error("not all listeners opened within 10 s");
  process.exit(1);
}, 10000);
