// The upstream wscope proxy's tests relay to: a Node.js server on the npm package `ws`, written
// as a Node user would, with nothing of wscope's. It listens on 127.0.0.1 (port 0 unless given)
// and prints `listening PORT` on stdout.
//
// WebSocket paths:
//   /echo        echoes every message; "close-4001" makes it close with 4001 "bye from node";
//                the subprotocol chosen is "chat.v2" when offered, else the first offered
//   /private     refused with 401 "no session" unless the Cookie header has session=ok
//   /headers     sends the upgrade request's headers as one JSON message
//   /flood       sends 64 KiB messages as fast as its socket takes them, up to FLOOD_BYTES
//   /silent      accepts and never sends
//   /deaf        accepts and stops reading its socket (what a client sends piles up)
//   /pinger      pings every 50 ms; GET /pongs says how many pongs came back
// Every WebSocket close it receives is kept: GET /closes lists them (code, reason) as JSON.
// Plain HTTP: GET /hello, POST /body (echoes the body), GET /sse (two events, the second when
// GET /sse-next is called), anything else 404.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const FLOOD_BYTES = 256 * 1024 * 1024;
const closes = [];
let pongs = 0;
let sseWaiting = [];

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/hello') {
    res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': 'node' });
    res.end('hello from node');
  } else if (req.method === 'POST' && req.url === '/body') {
    res.writeHead(200, { 'content-type': req.headers['content-type'] || 'application/octet-stream' });
    req.pipe(res);
  } else if (req.method === 'GET' && req.url === '/closes') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(closes));
  } else if (req.method === 'GET' && req.url === '/pongs') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ pongs }));
  } else if (req.method === 'GET' && req.url === '/sse') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write('data: first\n\n');
    sseWaiting.push(res);
  } else if (req.method === 'GET' && req.url === '/sse-next') {
    for (const r of sseWaiting) r.end('data: second\n\n');
    sseWaiting = [];
    res.writeHead(204);
    res.end();
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not here');
  }
});

const wss = new WebSocketServer({
  noServer: true,
  handleProtocols: (protocols) => (protocols.has('chat.v2') ? 'chat.v2' : protocols.values().next().value || false),
});

server.on('upgrade', (req, socket, head) => {
  const path = req.url.split('?')[0];
  if (path === '/private' && !/(^|;\s*)session=ok(;|$)/.test(req.headers.cookie || '')) {
    socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nWWW-Authenticate: Cookie\r\nConnection: close\r\n\r\nno session');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => serve(ws, path, req));
});

function serve(ws, path, req) {
  ws.on('close', (code, reason) => closes.push({ path, code, reason: reason.toString() }));
  ws.on('error', () => {});
  if (path === '/headers') {
    ws.send(JSON.stringify(req.headers));
  } else if (path === '/flood') {
    const chunk = Buffer.alloc(64 * 1024, 120);
    let sent = 0;
    const more = () => {
      // Sends while the socket takes them (ws queues past the kernel's buffer: bufferedAmount).
      while (sent < FLOOD_BYTES && ws.readyState === ws.OPEN && ws.bufferedAmount < 1024 * 1024) {
        ws.send(chunk);
        sent += chunk.length;
      }
      if (sent < FLOOD_BYTES && ws.readyState === ws.OPEN) setTimeout(more, 5);
    };
    more();
  } else if (path === '/deaf') {
    ws.pause();
  } else if (path === '/pinger') {
    ws.on('pong', () => { pongs += 1; });
    const timer = setInterval(() => ws.ping(), 50);
    ws.on('close', () => clearInterval(timer));
  } else if (path === '/echo' || path === '/private') {
    ws.on('message', (data, isBinary) => {
      if (!isBinary && data.toString() === 'close-4001') {
        ws.close(4001, 'bye from node');
      } else {
        ws.send(data, { binary: isBinary });
      }
    });
  }
}

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
// Ends with its parent: the test closes stdin or kills it.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
