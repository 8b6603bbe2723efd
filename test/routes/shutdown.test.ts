import { once } from 'node:events'
import { connect } from 'node:net'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { post, serviceToken, SseClient, startServer, TEST_SECRET, token, WsClient } from '../support/helper.js'
import { freePort } from '../support/ports.js'
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

/**
 * Sends a publish whose body is still to come on one kept-alive connection, shuts the
 * instance down, then sends the body and `requests` on the same connection; the answers.
 */
async function askedAsShutdownBegins (t: Parameters<typeof startServer>[0], requests: string): Promise<string[]> {
  const { app, url } = await startServer(t)
  const { port } = new URL(url)
  const socket = connect(Number(port), '127.0.0.1')
  t.teardown(() => socket.destroy())
  await once(socket, 'connect')
  let text = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => { text += chunk })
  const closed = once(socket, 'close')
  // A publish in flight (its body still to come) keeps the connection busy through the start of the shutdown.
  const body = JSON.stringify({ channel: 'product:drain-1', type: 't', payload: {} })
  socket.write(`POST /realtime/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${serviceToken()}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`)
  await new Promise((resolve) => setTimeout(resolve, 100))
  const closing = app.close()
  while (!app.hub.isShuttingDown) await new Promise((resolve) => setTimeout(resolve, 5))
  socket.write(body + requests)
  await within(10_000, closed, 'the connection close')
  await closing
  return text.split(/(?=HTTP\/1\.1 )/)
}

t.test('requests on a kept-alive connection as the instance shuts down: /sse gets the stream that says come back, readiness a 503 that closes', async (t) => {
  // Review: Fastify's own 503 (return503OnClosing) answered such requests before any route,
  // so an EventSource reconnecting through a proxy's kept-alive connection gave up for good.
  const answers = await askedAsShutdownBegins(t, `GET /sse?token=${token('46')} HTTP/1.1\r\nHost: x\r\n\r\nGET /health/ready HTTP/1.1\r\nHost: x\r\n\r\n`)
  t.match(answers[0], /^HTTP\/1\.1 202 /, 'the publish in flight is answered')
  t.match(answers[1], /^HTTP\/1\.1 200 [\s\S]*content-type: text\/event-stream[\s\S]*event: system:unavailable\ndata: \{"status":503,"reason":"server restarting"/i,
    'the stream says to come back')
  t.match(answers[2], /^HTTP\/1\.1 503 [\s\S]*connection: close[\s\S]*"status":"not_ready","checks":\{"instance":"shutting_down"\}/i,
    'readiness answers 503, in its own shape, and closes the connection (it was a 500: audit)')
})

t.test('the API on a kept-alive connection as the instance shuts down: a 503 that closes', async (t) => {
  const answers = await askedAsShutdownBegins(t, `GET /realtime/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${serviceToken()}\r\n\r\n`)
  t.match(answers[0], /^HTTP\/1\.1 202 /, 'the publish in flight is answered')
  t.match(answers[1], /^HTTP\/1\.1 503 [\s\S]*connection: close[\s\S]*server restarting/i, 'the API answers 503 and closes the connection')
})
