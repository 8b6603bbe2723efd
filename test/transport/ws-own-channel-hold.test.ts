import t from 'tap'
import { OWN_CHANNELS_HOLD_MS } from '../../lib/transport/ws-session.js'
import { sleep, startServer, token, WsClient } from '../support/helper.js'

/**
 * A WebSocket connection holds its own `user:<id>` from the connect, at the live edge, and a
 * client resuming it sends `since` right after `system:connected`. An event published in
 * between used to go out live first, so the resume could only be a `system:reset` and that
 * event again (a black-box audit of rolling deploys, session 27). Its live events now wait
 * for the connection's first frame (OWN_CHANNELS_HOLD_MS at most).
 */

const notify = async (app: Awaited<ReturnType<typeof startServer>>['app'], user: string, n: number) =>
  await app.hub.broker.publish({ channel: `user:${user}`, type: 'order:updated', payload: { n } })

t.test('an event published between the greeting and the resume of user:<id>: the missed events, then it, in order, with no reset', async (t) => {
  const { app, wsUrl } = await startServer(t)
  const first = await WsClient.connect(t, wsUrl, token('hold-1'))
  await notify(app, 'hold-1', 1)
  const seen = await first.next((f) => f.channel === 'user:hold-1')
  first.socket.terminate()
  await first.closed
  await notify(app, 'hold-1', 2) // missed while away

  const again = await WsClient.connect(t, wsUrl, token('hold-1'))
  await notify(app, 'hold-1', 3) // after the greeting, before the resume arrives
  await sleep(50)
  const answer = await again.subscribe(['user:hold-1'], { 'user:hold-1': { offset: seen.offset, epoch: seen.epoch } })
  t.match(answer, { type: 'subscribed', payload: { recovered: { 'user:hold-1': true } } })
  const frames = [await again.next((f) => f.channel === 'user:hold-1'), await again.next((f) => f.channel === 'user:hold-1')]
  t.same(frames.map((f) => [f.type, f.offset]), [['order:updated', 2], ['order:updated', 3]], 'the missed event, then the one held, in offset order')
  await notify(app, 'hold-1', 4)
  t.match(await again.next((f) => f.channel === 'user:hold-1'), { offset: 4 }, 'then live')
  t.same(again.events('user:hold-1'), [], 'no reset and no event twice')
})

t.test('a connection that sends nothing gets its own events all the same, within OWN_CHANNELS_HOLD_MS, in order', async (t) => {
  const { app, wsUrl } = await startServer(t)
  const client = await WsClient.connect(t, wsUrl, token('hold-2'))
  const start = Date.now()
  await notify(app, 'hold-2', 1)
  await notify(app, 'hold-2', 2)
  const frames = [await client.next((f) => f.channel === 'user:hold-2', 5000), await client.next((f) => f.channel === 'user:hold-2')]
  t.same(frames.map((f) => f.offset), [1, 2])
  t.ok(Date.now() - start < OWN_CHANNELS_HOLD_MS + 1000, `within the hold (${Date.now() - start} ms)`)
  await notify(app, 'hold-2', 3)
  const live = Date.now()
  t.match(await client.next((f) => f.channel === 'user:hold-2'), { offset: 3 }, 'and live from then on')
  t.ok(Date.now() - live < OWN_CHANNELS_HOLD_MS / 2, 'without waiting')
})

t.test('a first frame that is no resume lets the held events go at once', async (t) => {
  const { app, wsUrl } = await startServer(t)
  const client = await WsClient.connect(t, wsUrl, token('hold-3'))
  await notify(app, 'hold-3', 1)
  await sleep(50)
  const start = Date.now()
  t.match(await client.request({ type: 'system:ping' }), { type: 'system:pong' })
  t.match(await client.next((f) => f.channel === 'user:hold-3'), { offset: 1 })
  t.ok(Date.now() - start < OWN_CHANNELS_HOLD_MS / 2, `released by the frame, not the timer (${Date.now() - start} ms)`)
})
