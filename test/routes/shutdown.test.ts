import { once } from 'node:events'
import { connect } from 'node:net'
import t from 'tap'
import { post, serviceToken, SseClient, startServer, TEST_SECRET, token, WsClient } from '../support/helper.js'
import { freePort } from '../support/ports.js'
import { buildServer, spawnServer, within } from '../support/server-process.js'

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

t.test('SIGTERM on the real process: 1012 to clients, exit code 0', async (t) => {
  const dir = await buildServer()
  const port = await freePort()
  const server = spawnServer(t, dir, {
    PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'info', SHUTDOWN_TIMEOUT_MS: '8000'
  })
  await server.waitForOutput('Server listening')
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
