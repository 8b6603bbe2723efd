import { once } from 'node:events'
import { connect } from 'node:net'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import type { HistoryResult, SincePosition } from '../../lib/broker/broker.js'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'
import { post, rawConnection, serviceToken, SseClient, startServer, TEST_SECRET, token, WsClient } from '../support/helper.js'
import { freePort } from '../support/ports.js'
import { eventually } from '../support/redis-fixture.js'
import { buildServer, type ServerProcess, spawnServer, within } from '../support/server-process.js'

t.test('app.close(): WebSocket clients get 1012, SSE streams end, promptly', async (t) => {
  const { app, url, wsUrl } = await startServer(t)
  const ws = await WsClient.connect(t, wsUrl, token('42'))
  const sse = await SseClient.open(t, `${url}/sse?channels=product:1&token=${token('43')}`)
  await sse.waitFor(1)
  // An HTTP client's spare connection that never carries a request must not hold the close.
  const spare = connect(Number(new URL(url).port), '127.0.0.1')
  await once(spare, 'connect')
  t.teardown(() => spare.destroy())

  await within(5000, app.close(), 'app.close()')
  t.match(await within(5000, ws.closed, 'the WebSocket close'), { code: 1012 })
  await within(5000, (async () => { while (!sse.ended) await new Promise((resolve) => setTimeout(resolve, 10)) })(), 'the SSE end')
  t.ok(sse.ended, 'the event stream ended (EventSource will reconnect elsewhere)')
})

t.test('app.close() does not wait for an SSE client that stopped reading', async (t) => {
  // Review (session 32): a stream's socket is no longer the HTTP server's once it opens, so
  // the server's sweep of finished responses no longer cut it: with its last bytes unread,
  // server.close() waited until the grace timeout killed the process.
  const { app, url } = await startServer(t, { SHUTDOWN_TIMEOUT_MS: 60_000 })
  const { socket: client, received } = await rawConnection(t, url)
  client.write(`GET /sse?channels=room:stalled&token=${token('st')} HTTP/1.1\r\nHost: x\r\n\r\n`)
  await eventually('the stream', () => received().includes('system:connected'))
  client.pause()
  const stream = [...app.hub.connections()].find((c) => c.transport === 'sse') as unknown as { res: { socket: { writableLength: number } | null } }
  const blob = 'a'.repeat(60_000)
  for (let i = 0; i < 300 && (stream.res.socket?.writableLength ?? 0) < 100_000; i++) {
    t.equal((await post(`${url}/realtime/publish`, serviceToken(), { channel: 'room:stalled', type: 'blob', payload: { blob } })).status, 202)
  }
  t.ok((stream.res.socket?.writableLength ?? 0) >= 100_000, 'bytes wait unread on the stream\'s socket')
  await within(10_000, app.close(), 'app.close() with the client still connected, not reading')
})

/** The real server in a process of its own, listening, with an 8 s shutdown budget. */
async function listeningProcess (t: Test): Promise<{ server: ServerProcess, port: number }> {
  const port = await freePort()
  const server = spawnServer(t, await buildServer(), {
    PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'info', SHUTDOWN_TIMEOUT_MS: '8000'
  })
  await server.waitForOutput('Server listening')
  return { server, port }
}

t.test('SIGTERM on the real process: 1012 to clients, exit code 0', async (t) => {
  const { server, port } = await listeningProcess(t)
  const url = `http://127.0.0.1:${port}`
  const ws = await WsClient.connect(t, `ws://127.0.0.1:${port}/ws`, token('42'))
  const sse = await SseClient.open(t, `${url}/sse?token=${token('43')}`)
  await sse.waitFor(1)
  const spare = connect(port, '127.0.0.1')
  await once(spare, 'connect')
  t.teardown(() => spare.destroy())
  t.equal((await post(`${url}/realtime/notify`, serviceToken(), { userId: '42', payload: { before: 'shutdown' } })).status, 202)
  await ws.next((f) => f.type === 'notification')

  server.child.kill('SIGTERM')
  t.match(await within(10_000, ws.closed, 'the WebSocket close'), { code: 1012 }, 'told to reconnect elsewhere')
  t.equal(await within(10_000, server.exited, 'the process exit'), 0, 'a clean exit, not the grace timeout')
  t.ok(sse.ended || await within(2000, (async () => { while (!sse.ended) await new Promise((resolve) => setTimeout(resolve, 10)); return true })(), 'the SSE end'))
  t.notMatch(server.stdout(), /killed by timeout/)
})

t.test('a connection whose request came in as shutdown began is refused, not admitted after the rest were closed', async (t) => {
  const { app, url, wsUrl } = await startServer(t)
  // What preClose does: after it, an upgrade or stream already past its hooks must not join
  // (it would stay open and keep the server's close waiting for the whole grace period).
  app.hub.shutDown(1012, 'server restarting')
  const late = new WebSocket(`${wsUrl}?token=${token('44')}`)
  const [code] = await within(5000, once(late, 'close'), 'the late WebSocket close') as [number]
  t.equal(code, 1012, 'WebSocket: 1012, reconnect elsewhere')
  const sse = await fetch(`${url}/sse?token=${token('45')}`)
  t.equal(sse.status, 200, 'SSE: a stream that says to come back (EventSource gives up on a 503)')
  t.match(await sse.text(), /^retry: \d+\nevent: system:unavailable\ndata: \{"status":503,"reason":"server restarting","retryMs":\d+\}\n\n$/)
  t.equal(app.hub.connectionCount(), 0, 'nothing joined')
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /gateway_connections_refused_total\{transport="ws",reason="shutting_down"\} 1/)
  t.match(metrics, /gateway_connections_refused_total\{transport="sse",reason="shutting_down"\} 1/)
})

t.test('SIGTERM while clients keep connecting: every one is told 1012 or refused, and the process exits cleanly', async (t) => {
  const { server, port } = await listeningProcess(t)
  const state = { stop: false }
  const opened: WebSocket[] = []
  const loops = Array.from({ length: 4 }, async (_, l) => {
    for (let i = 0; !state.stop; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${token(`u${l}-${i}`)}`)
      ws.on('error', () => {})
      opened.push(ws)
      await Promise.race([once(ws, 'open'), once(ws, 'close'), once(ws, 'unexpected-response')]).catch(() => {})
    }
  })
  await new Promise((resolve) => setTimeout(resolve, 300))
  const exitedAt = Date.now()
  server.child.kill('SIGTERM')
  const code = await within(12_000, server.exited, 'the process exit')
  state.stop = true
  await Promise.all(loops)
  for (const ws of opened) ws.terminate()
  t.equal(code, 0, 'a clean exit, not the grace timeout')
  t.ok(Date.now() - exitedAt < 8000, `exited within the grace period (${Date.now() - exitedAt} ms)`)
  t.notMatch(server.stdout(), /killed by timeout/)
})

/** One raw HTTP/1.1 request on a connection of its own; everything the server sent until it closed the connection. */
async function rawExchange (t: Test, url: string, request: string): Promise<string> {
  const { socket, received, closed } = await rawConnection(t, url)
  socket.write(request)
  await within(10_000, closed, 'the connection close')
  return received()
}

t.test('requests as the instance shuts down: /sse gets the stream that says come back, readiness and the API a 503 that closes the connection', async (t) => {
  // Review: Fastify's own 503 (return503OnClosing) answered such requests before any route,
  // so an EventSource reconnecting through a proxy's kept-alive connection gave up for good.
  const { app, url } = await startServer(t)
  // The drain as the hub's preClose begins it, with the listener still open.
  app.hub.shutDown(1012, 'server restarting')
  t.match(await rawExchange(t, url, `GET /sse?token=${token('46')} HTTP/1.1\r\nHost: x\r\n\r\n`),
    /^HTTP\/1\.1 200 [\s\S]*content-type: text\/event-stream[\s\S]*event: system:unavailable\ndata: \{"status":503,"reason":"server restarting"/i,
    'the stream says to come back')
  t.match(await rawExchange(t, url, 'GET /health/ready HTTP/1.1\r\nHost: x\r\n\r\n'),
    /^HTTP\/1\.1 503 [\s\S]*connection: close[\s\S]*"status":"not_ready","checks":\{"instance":"shutting_down"\}/i,
    'readiness answers 503, in its own shape, and closes the connection (it was a 500: audit)')
  t.match(await rawExchange(t, url, `GET /realtime/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${serviceToken()}\r\n\r\n`),
    /^HTTP\/1\.1 503 [\s\S]*connection: close[\s\S]*server restarting/i, 'the API answers 503 and closes the connection')
})

t.test('a kept-alive connection whose request was in flight as the instance shut down does not hold the shutdown', async (t) => {
  // Audit (rolling deploys behind nginx): its upstream keep-alive connections, idle again
  // after the drain began, held server.close() until the 10 s kill, so the Kafka consumer
  // never left its group.
  const { app, url } = await startServer(t)
  const { socket, received, closed } = await rawConnection(t, url)
  const body = JSON.stringify({ channel: 'product:drain-3', type: 't', payload: {} })
  socket.write(`POST /realtime/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${serviceToken()}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`)
  await new Promise((resolve) => setTimeout(resolve, 100))
  const started = Date.now()
  const closing = app.close()
  while (!app.hub.isShuttingDown) await new Promise((resolve) => setTimeout(resolve, 5))
  socket.write(body)
  await within(5000, closing, 'the shutdown')
  t.ok(Date.now() - started < 3000, `the instance closed in ${Date.now() - started} ms`)
  await within(1000, closed, 'the connection close')
  t.match(received(), /^HTTP\/1\.1 202 [\s\S]*connection: close/i, 'the publish in flight was answered, and its connection closed')
})

/** A memory broker whose history reads (an SSE stream's subscribe) wait until `letReadsGo()`. */
class SlowReads extends MemoryBroker {
  private opened!: () => void
  private readonly gate = new Promise<void>((resolve) => { this.opened = resolve })
  letReadsGo (): void { this.opened() }
  override async history (channel: string, since?: SincePosition): Promise<HistoryResult> {
    await this.gate
    return await super.history(channel, since)
  }
}

t.test('an SSE stream still being set up as the instance shuts down is told to come back, its connection closed', async (t) => {
  // Review: it opened and ended at once, with its kept-alive connection holding the shutdown.
  let broker: SlowReads | undefined
  const { app, url } = await startServer(t, {}, { createBroker: (deliver, reset) => (broker = new SlowReads({ deliver, reset, historySize: 10, historyTtlSeconds: 300 })) })
  const { socket, received, closed } = await rawConnection(t, url)
  socket.write(`GET /sse?token=${token('47')} HTTP/1.1\r\nHost: x\r\n\r\n`)
  await new Promise((resolve) => setTimeout(resolve, 100))
  const closing = app.close()
  while (!app.hub.isShuttingDown) await new Promise((resolve) => setTimeout(resolve, 5))
  broker?.letReadsGo()
  await within(5000, closing, 'the shutdown')
  await within(1000, closed, 'the connection close')
  t.match(received(), /^HTTP\/1\.1 200 [\s\S]*connection: close[\s\S]*event: system:unavailable\ndata: \{"status":503,"reason":"server restarting"/i,
    'told to come back, on a connection that then closes')
  t.notMatch(received(), /system:connected/, 'not opened')
})
