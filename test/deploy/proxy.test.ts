import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { EnvSchema } from '../../lib/ops/config.js'
import { freePort } from '../support/ports.js'
import { deleteRedisPrefix, find, type NginxDirective, nginxSeconds, parseNginx, portOpen, read, ROOT, toolRuns } from '../support/deploy-files.js'
import { post, requireService, serviceToken, sleep, SseClient, startServer, TEST_SECRET, token, WsClient } from '../support/helper.js'
import { buildServer, spawnServer } from '../support/server-process.js'

/**
 * deploy/nginx/nginx.conf and deploy/prometheus/*.yml, checked by the real tools:
 * `nginx -t` and `promtool check config` (Debian's nginx and prometheus packages, which
 * .ci/run installs), then a real nginx with the shipped config in front of two real
 * gateway replicas on Redis: WebSocket upgrade, SSE, publishing, and a rolling restart.
 */

const NGINX = ['nginx', '/usr/sbin/nginx'].find((bin) => toolRuns(bin, ['-v']))
const PROMTOOL = ['promtool', '/usr/bin/promtool'].find((bin) => toolRuns(bin, ['--version']))
const REDIS_URL = 'redis://127.0.0.1:6379'

const run = (command: string, args: string[]) => new Promise<{ code: number, output: string }>((resolve) => {
  execFile(command, args, { timeout: 30_000 }, (err, stdout, stderr) => {
    resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, output: stdout + stderr })
  })
})

/**
 * The shipped config, made runnable here: upstreams and the listen port point at local
 * ports (compose's service names do not resolve outside Docker), temp files live in `dir`.
 */
function localNginxConf (dir: string, listen: number, upstreams: number[]): string {
  let conf = read('deploy/nginx/nginx.conf')
  conf = conf.replace(/server gateway-(\d+):3000/g, (_m, n: string) => `server 127.0.0.1:${upstreams[Number(n) - 1]}`)
  conf = conf.replace(/listen 80;/, `listen 127.0.0.1:${listen};`)
  conf = conf.replace('worker_processes auto;', 'worker_processes 1;')
  // In a container /dev/stdout is the log; under a test runner it may be a socket nginx cannot open.
  conf = conf.replace('access_log /dev/stdout', `access_log ${join(dir, 'access.log')}`)
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${join(dir, k)};`).join('\n')
  conf = conf.replace(/^http \{$/m, `http {\n${temp}`)
  const path = join(dir, 'nginx.conf')
  writeFileSync(path, conf)
  return path
}

const nginxArgs = (dir: string, conf: string) => ['-p', dir, '-c', conf, '-e', 'stderr', '-g', `pid ${join(dir, 'nginx.pid')};`]

function tempDir (t: Test, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `rtg-${name}-`))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('nginx.conf: WebSocket upgrade, unbuffered SSE, long timeouts, no token in the access log', async (t) => {
  const http = find(parseNginx(read('deploy/nginx/nginx.conf')), 'http')[0].block ?? []
  const server = find(http, 'server')[0].block ?? []
  const location = (path: string) => find(server, 'location').find((l) => l.args.join(' ') === path)?.block ?? []
  // nginx inheritance: a level that sets a directive itself inherits none of the outer ones.
  const effective = (block: NginxDirective[], name: string) => find(block, name).length > 0 ? find(block, name) : find(server, name).length > 0 ? find(server, name) : find(http, name)
  const value = (block: NginxDirective[], name: string) => effective(block, name).at(-1)?.args.join(' ')
  const heartbeat = (name: 'HEARTBEAT_MS' | 'SSE_HEARTBEAT_MS') => EnvSchema.properties[name].default / 1000

  const ws = location('/ws')
  t.equal(value(ws, 'proxy_pass'), 'http://gateway')
  t.equal(value(ws, 'proxy_http_version'), '1.1', 'WebSocket needs HTTP/1.1 upstream')
  const headers = effective(ws, 'proxy_set_header').map((d) => d.args.join(' '))
  t.ok(headers.includes('Upgrade $http_upgrade'), 'Upgrade is passed on')
  t.ok(headers.includes('Connection $connection_upgrade'), 'Connection: upgrade is passed on')
  const map = find(http, 'map').find((m) => m.args.join(' ') === '$http_upgrade $connection_upgrade')
  t.same(map?.block?.find((d) => d.name === 'default')?.args, ['upgrade'])
  t.ok(nginxSeconds(value(ws, 'proxy_read_timeout') ?? '60s') >= 300, 'a long read timeout for idle sockets')
  t.ok(nginxSeconds(value(ws, 'proxy_read_timeout') ?? '60s') > 2 * heartbeat('HEARTBEAT_MS'))

  const sse = location('/sse')
  t.equal(value(sse, 'proxy_pass'), 'http://gateway')
  t.equal(value(sse, 'proxy_buffering'), 'off', 'SSE is not buffered')
  t.equal(value(sse, 'proxy_http_version'), '1.1')
  t.ok(nginxSeconds(value(sse, 'proxy_read_timeout') ?? '60s') >= 300, 'a long read timeout for idle streams')
  t.ok(nginxSeconds(value(sse, 'proxy_read_timeout') ?? '60s') > 2 * heartbeat('SSE_HEARTBEAT_MS'))
  t.equal(value(location('/'), 'proxy_pass'), 'http://gateway_api', 'the rest goes to the replicas too, round robin')

  for (const format of find(http, 'log_format')) {
    t.notMatch(format.args.join(' '), /\$(request|request_uri|args|query_string|arg_token)\b/, `log_format ${format.args[0]} leaves the query string out`)
  }
  const upstream = (name: string) => find(http, 'upstream').find((u) => u.args[0] === name)?.block ?? []
  t.ok(upstream('gateway').some((d) => d.name === 'least_conn'), 'long-lived connections are balanced by count')
  t.notOk(upstream('gateway_api').some((d) => d.name === 'least_conn'),
    'API requests are not: a replica just restarted holds no streams, and least_conn sent it every request')
  for (const name of ['gateway', 'gateway_api']) t.ok(upstream(name).some((d) => d.name === 'zone'), `${name}: one balance for every worker`)
})

t.test('nginx -t accepts deploy/nginx/nginx.conf', async (t) => {
  if (!requireService(t, 'nginx (apt-get install nginx)', NGINX !== undefined) || NGINX === undefined) return
  const dir = tempDir(t, 'nginx-t')
  const conf = localNginxConf(dir, 8080, [3001, 3002])
  const ok = await run(NGINX, ['-t', ...nginxArgs(dir, conf)])
  t.equal(ok.code, 0, ok.output)
  t.match(ok.output, 'test is successful')
  // The check bites: a bad value in the same file is refused.
  writeFileSync(conf, read('deploy/nginx/nginx.conf').replace('proxy_buffering off;', 'proxy_buffering maybe;'))
  t.not((await run(NGINX, ['-t', ...nginxArgs(dir, conf)])).code, 0, 'a broken config fails nginx -t')
})

t.test('promtool check config accepts the Prometheus config and its alert rules', async (t) => {
  if (!requireService(t, 'promtool (apt-get install prometheus)', PROMTOOL !== undefined) || PROMTOOL === undefined) return
  const ok = await run(PROMTOOL, ['check', 'config', join(ROOT, 'deploy/prometheus/prometheus.yml')])
  t.equal(ok.code, 0, ok.output)
  t.match(ok.output, /SUCCESS: \d+ rules found/, 'the alert rules were read and checked too')
  const dir = tempDir(t, 'promtool')
  cpSync(join(ROOT, 'deploy/prometheus'), dir, { recursive: true })
  writeFileSync(join(dir, 'alerts.yml'), read('deploy/prometheus/alerts.yml').replace('expr: up{job="realtime-gateway"} == 0', 'expr: up{job= == 0'))
  t.not((await run(PROMTOOL, ['check', 'config', join(dir, 'prometheus.yml')])).code, 0, 'a broken rule fails the check')
})

async function startNginx (t: Test, bin: string, upstreams: number[]): Promise<{ url: string, log: () => string }> {
  const dir = tempDir(t, 'nginx-run')
  const port = await freePort()
  const conf = localNginxConf(dir, port, upstreams)
  let log = ''
  const child: ChildProcess = spawn(bin, [...nginxArgs(dir, conf).slice(0, -1), `pid ${join(dir, 'nginx.pid')}; daemon off;`], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout?.on('data', (d: Buffer) => { log += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { log += d.toString() })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  t.teardown(async () => {
    child.kill('SIGTERM')
    await Promise.race([exited, sleep(5000)])
  })
  for (let i = 0; i < 50 && !(await portOpen('127.0.0.1', port)); i++) await sleep(100)
  if (!(await portOpen('127.0.0.1', port))) throw new Error(`nginx did not start: ${log}`)
  return { url: `http://127.0.0.1:${port}`, log: () => log + readFileSync(join(dir, 'access.log'), 'utf8') }
}

t.test('a real nginx with this config in front of two replicas: WebSocket, SSE, publish, rolling restart', async (t) => {
  if (!requireService(t, 'nginx (apt-get install nginx)', NGINX !== undefined) || NGINX === undefined) return
  if (!requireService(t, 'redis', await portOpen('127.0.0.1', 6379))) return
  const prefix = `test:proxy:${randomUUID().slice(0, 8)}:`
  t.teardown(() => deleteRedisPrefix(REDIS_URL, prefix))
  const overrides = { REDIS_URL, REDIS_KEY_PREFIX: prefix }
  const replicas = [await startServer(t, { ...overrides, NODE_ID: 'proxy-1' }), await startServer(t, { ...overrides, NODE_ID: 'proxy-2' })]
  const nginx = await startNginx(t, NGINX, replicas.map((r) => Number(new URL(r.url).port)))
  const userToken = token('proxy-user')

  const ws = await WsClient.connect(t, `${nginx.url.replace('http', 'ws')}/ws`, userToken)
  t.equal(ws.greeting.type, 'system:connected', 'the WebSocket upgrade goes through')
  const ack = await ws.subscribe(['product:px-1'])
  t.equal(ack.type, 'subscribed')
  const sse = await SseClient.open(t, `${nginx.url}/sse?channels=product:px-1&token=${encodeURIComponent(userToken)}`)
  t.equal(sse.status, 200)
  t.equal(sse.headers.get('content-type'), 'text/event-stream; charset=utf-8')
  // The stream's headers reach the client through nginx (which reads X-Accel-* itself and drops it unless told).
  t.equal(sse.headers.get('cache-control'), 'no-cache')
  t.equal(sse.headers.get('x-accel-buffering'), 'no')
  await sse.waitFor(1, (e) => e.event === 'system:connected')

  const published = await post(`${nginx.url}/realtime/publish`, serviceToken(), { channel: 'product:px-1', type: 'product:updated', payload: { n: 1 } })
  t.equal(published.status, 202, 'publishing goes through')
  const event = await ws.next((f) => f.channel === 'product:px-1')
  t.equal(event.offset, published.body.positions['product:px-1'].offset)
  const [sseEvent] = await sse.waitFor(1, (e) => e.event === 'product:updated')
  t.equal(sseEvent.data.offset, event.offset, 'the SSE event arrives while the stream stays open (no buffering)')

  t.equal((await fetch(`${nginx.url}/health`)).status, 200)
  t.equal((await fetch(`${nginx.url}/metrics`)).status, 404, '/metrics is not public')
  const asyncapi = await (await fetch(`${nginx.url}/api/asyncapi.json`)).text()
  t.match(asyncapi, `"${new URL(nginx.url).host}`, 'the AsyncAPI document names the host the client used, port included (audit)')

  // Rolling restart: the replica holding the socket shuts down; the client gets 1012,
  // reconnects through nginx to the other one and recovers what it missed.
  const holder = replicas.findIndex((r) => r.app.hub.stats().connectionsByTransport.ws > 0)
  t.ok(holder >= 0, 'one replica holds the WebSocket')
  const closing = replicas[holder].app.close()
  t.equal((await ws.closed).code, 1012, 'clients are told the server restarts')
  await closing
  const missed = await post(`${nginx.url}/realtime/publish`, serviceToken(), { channel: 'product:px-1', type: 'product:updated', payload: { n: 2 } })
  t.equal(missed.status, 202, 'publishing goes on through the other replica')
  const again = await WsClient.connect(t, `${nginx.url.replace('http', 'ws')}/ws`, userToken)
  const resumed = await again.subscribe(['product:px-1'], { 'product:px-1': { offset: event.offset, epoch: ack.payload.positions['product:px-1'].epoch } })
  t.equal(resumed.payload.recovered['product:px-1'], true, 'the reconnect recovers from the shared history')
  const replayed = await again.next((f) => f.channel === 'product:px-1')
  t.same(replayed.payload, { n: 2 }, 'the event published during the restart is replayed')

  // A request is logged when it ends: the first WebSocket ended with the restart.
  sse.close()
  again.close()
  await sleep(200)
  t.match(nginx.log(), /"GET \/ws HTTP\/1.1" 101/, 'WebSocket upgrades are logged')
  t.notMatch(nginx.log(), userToken, 'but never the token of the query string')
})

t.test('nginx\'s own refusals come in the gateway\'s error shape, not HTML', async (t) => {
  // Audit: a malformed URL, a body over the limit and a replica that is gone got nginx's
  // HTML pages, where the contract promises {"statusCode","error","message"}.
  if (!requireService(t, 'nginx (apt-get install nginx)', NGINX !== undefined) || NGINX === undefined) return
  const gone = await freePort()
  const nginx = await startNginx(t, NGINX, [gone, gone])
  const expectJson = async (res: Response, statusCode: number, error: string) => {
    t.equal(res.status, statusCode)
    t.match(res.headers.get('content-type'), /^application\/json/)
    t.match(await res.json(), { statusCode, error, message: String })
  }
  const noReplica = await fetch(`${nginx.url}/health`)
  t.equal(noReplica.headers.get('retry-after'), '1')
  await expectJson(noReplica, 502, 'Bad Gateway')
  await expectJson(await fetch(`${nginx.url}/realtime/history/%E0%A4%A`), 400, 'Bad Request')
  await expectJson(await fetch(`${nginx.url}/realtime/publish`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: `"${'x'.repeat(1_100_000)}"`
  }), 413, 'Payload Too Large')
  await expectJson(await fetch(`${nginx.url}/realtime/history/${'a'.repeat(70_000)}`), 414, 'URI Too Long')
  // The stream, with no replica answering, says to come back (EventSource gives up on a 502).
  const stream = await fetch(`${nginx.url}/sse?channels=product:1`)
  t.equal(stream.status, 200)
  t.match(stream.headers.get('content-type'), /^text\/event-stream/)
  t.match(await stream.text(), /^retry: \d+\nevent: system:unavailable\ndata: \{"status":502,/)
})

t.test('through nginx, a frame far over the limit gets the 1009 close frame, not a dropped connection (1006)', async (t) => {
  // Audit: the gateway ended its side of the TCP connection right after the close frame,
  // nginx closed the client's socket with the client's data unread, and the RST lost the
  // close frame: 5 of 20 clients sending 4 MB saw 1006.
  if (!requireService(t, 'nginx (apt-get install nginx)', NGINX !== undefined) || NGINX === undefined) return
  // The gateway in a process of its own, as deployed: the race is between its end of the
  // connection and a client still writing, which one event loop for both would serialize.
  const port = await freePort()
  const replica = spawnServer(t, await buildServer(), { JWT_SECRET: TEST_SECRET, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn' })
  await replica.waitForOutput('listening', 45_000).catch(async () => { for (let i = 0; i < 100 && !(await portOpen('127.0.0.1', port)); i++) await sleep(100) })
  const nginx = await startNginx(t, NGINX, [port, port])
  const big = 'x'.repeat(8 * 1024 * 1024)
  const codes: number[] = []
  for (let i = 0; i < 20; i++) {
    const client = await WsClient.connect(t, `${nginx.url.replace('http', 'ws')}/ws`, token(`big-${i}`))
    client.socket.on('error', () => {})
    client.socket.send(JSON.stringify({ type: 'system:ping', payload: big }))
    codes.push((await client.closed).code)
  }
  t.same(codes, codes.map(() => 1009), `every client got 1009 (${codes.join(' ')})`)
})
