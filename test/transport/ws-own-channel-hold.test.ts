import t from 'tap'
import { OWN_CHANNELS_HOLD_MS, type WsSession } from '../../lib/transport/ws-session.js'
import { sleep, startServer, token, WsClient } from '../support/helper.js'

/**
 * A WebSocket connection holds its own `user:<id>` from the connect, at the live edge, and a
 * client resuming it sends `since` right after `system:connected`. An event published in
 * between used to go out live first, so the resume could only be a `system:reset` and that
 * event again (a black-box audit of rolling deploys, session 27). Its live events now wait
 * for the connection's first frame (OWN_CHANNELS_HOLD_MS at most, lib/transport/ws-session.ts).
 */

const notify = async (app: Awaited<ReturnType<typeof startServer>>['app'], user: string, n: number) =>
  await app.hub.broker.publish({ channel: `user:${user}`, type: 'order:updated', payload: { n } })

// 400 ms: a client on a slow mobile link (audit, session 29: with a 250 ms hold its resume came
// after live events past its gap, and a drop before the reset that followed lost the gap for good).
for (const resumeAfterMs of [0, 400]) {
  t.test(`an event published between the greeting and a resume sent ${resumeAfterMs} ms after it: the missed events, then it, in order, with no reset`, async (t) => {
    const { app, wsUrl } = await startServer(t)
    const user = `hold-1-${resumeAfterMs}`
    const first = await WsClient.connect(t, wsUrl, token(user))
    await notify(app, user, 1)
    const seen = await first.next((f) => f.channel === `user:${user}`)
    first.socket.terminate()
    await first.closed
    await notify(app, user, 2) // missed while away

    const again = await WsClient.connect(t, wsUrl, token(user))
    const greeted = Date.now()
    await notify(app, user, 3) // after the greeting, before the resume arrives
    await sleep(resumeAfterMs)
    // Held unless this machine took longer than the hold (OWN_CHANNELS_HOLD_MS) to get here.
    const held = [...app.hub.connections()].some((c) => c.pendingEvents?.get(`user:${user}`)?.length === 1)
    // A slow link's round trip must find it held; asked only when this machine got here well
    // within the hold (the server's timer started before the greeting reached this client).
    if (Date.now() - greeted < OWN_CHANNELS_HOLD_MS - 300) t.ok(held, `still held ${resumeAfterMs} ms after the greeting`)
    const answer = await again.subscribe([`user:${user}`], { [`user:${user}`]: { offset: seen.offset, epoch: seen.epoch } })
    t.match(answer, { type: 'subscribed', payload: { recovered: { [`user:${user}`]: true } } })
    if (held) {
      const frames = [await again.next((f) => f.channel === `user:${user}`), await again.next((f) => f.channel === `user:${user}`)]
      t.same(frames.map((f) => [f.type, f.offset]), [['order:updated', 2], ['order:updated', 3]], 'the missed event, then the one held, in offset order')
    } else {
      // Past the hold, 3 went out live: a reset to the resume's position, then 2 and 3 (docs/protocol.md).
      const frames = await Promise.all([0, 1, 2, 3].map(async () => await again.next((f) => f.channel === `user:${user}`)))
      t.same(frames.map((f) => f.type === 'system:reset' ? 'reset' : f.offset), [3, 'reset', 2, 3], 'late: the documented reset')
    }
    await notify(app, user, 4)
    t.match(await again.next((f) => f.channel === `user:${user}`), { offset: 4 }, 'then live')
    t.same(again.events(`user:${user}`), [], 'nothing else: no other reset, no event twice')
  })
}

/** The server side of the app's only connection. */
function onlySession (app: Awaited<ReturnType<typeof startServer>>['app']): WsSession {
  const sessions = [...app.hub.connections()]
  if (sessions.length !== 1) throw new Error(`expected one connection, found ${sessions.length}`)
  return sessions[0] as WsSession
}

t.test('a connection that sends nothing gets its own events all the same, in order, once the hold ends', async (t) => {
  const { app, wsUrl } = await startServer(t)
  const client = await WsClient.connect(t, wsUrl, token('hold-2'))
  await notify(app, 'hold-2', 1)
  await notify(app, 'hold-2', 2)
  const held = onlySession(app).pendingEvents?.get('user:hold-2')
  // Right after the greeting the events wait (unless the machine was slower than OWN_CHANNELS_HOLD_MS).
  t.ok(held === undefined || held.length === 2, 'held, both, or already let go')
  const frames = [await client.next((f) => f.channel === 'user:hold-2', 5000), await client.next((f) => f.channel === 'user:hold-2')]
  t.same(frames.map((f) => f.offset), [1, 2], 'they arrive, in order')
  t.equal(onlySession(app).pendingEvents, null, 'nothing is held any more')
  await notify(app, 'hold-2', 3)
  t.match(await client.next((f) => f.channel === 'user:hold-2'), { offset: 3 }, 'and live from then on')
})

t.test('a first frame that is no resume lets the held events go as soon as it is handled', async (t) => {
  const { app, wsUrl } = await startServer(t)
  const client = await WsClient.connect(t, wsUrl, token('hold-3'))
  await notify(app, 'hold-3', 1)
  t.match(await client.request({ type: 'system:ping' }), { type: 'system:pong' })
  // Released in the same turn as the pong was sent: nothing is left held once it arrived.
  t.equal(onlySession(app).pendingEvents, null, 'nothing is held once the frame was answered')
  t.match(await client.next((f) => f.channel === 'user:hold-3'), { offset: 1 })
})

t.test('its own channel named again without since while events are held for it: they come before the answer, whose position counts them', async (t) => {
  // Audit (session 29): the answer reported the held event's offset and the event came after
  // it; a client that kept the position and dropped first resumed past the event.
  const { app, wsUrl } = await startServer(t)
  const client = await WsClient.connect(t, wsUrl, token('hold-4'))
  const order: string[] = []
  client.socket.on('message', (data) => {
    const frame = JSON.parse(String(data))
    order.push(frame.type === 'subscribed' ? `answer ${frame.payload.positions['user:hold-4'].offset as number}` : `event ${frame.offset as number}`)
  })
  await notify(app, 'hold-4', 1)
  await client.subscribe(['user:hold-4'])
  await client.next((f) => f.channel === 'user:hold-4')
  t.same(order, ['event 1', 'answer 1'], 'the held event, then the answer whose position counts it')
})
