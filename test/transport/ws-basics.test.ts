import t from 'tap'
import { post, serviceToken, startServer, token, WsClient } from '../support/helper.js'

t.test('a user connects, is greeted, pings and receives its own events only', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  const bob = await WsClient.connect(t, wsUrl, token('43'), { viaHeader: true })
  t.match(alice.greeting.payload, { userId: '42', roles: [], channels: ['user:42'], heartbeatMs: 25000 })
  t.type(alice.greeting.payload.connectionId, 'string')

  const pong = await alice.request({ type: 'system:ping' })
  t.equal(pong.type, 'system:pong')
  t.type(pong.payload.ts, 'number')

  const res = await post(`${url}/realtime/notify`, serviceToken(), { userId: '42', payload: { text: 'hi' } })
  t.equal(res.status, 202)
  const event = await alice.next((f) => f.type === 'notification')
  t.match(event, { channel: 'user:42', offset: 1, payload: { text: 'hi' } })
  t.ok(!Number.isNaN(Date.parse(event.ts)))
  await alice.request({ type: 'system:ping' })
  await bob.request({ type: 'system:ping' })
  t.same(bob.events(), [], 'bob got nothing of alice')
})

t.test('no token, a bad token or an expired one is refused with HTTP 401 before the upgrade', async (t) => {
  const { wsUrl } = await startServer(t)
  await t.rejects(WsClient.connect(t, wsUrl), { message: 'HTTP 401' })
  await t.rejects(WsClient.connect(t, wsUrl, 'not-a-jwt'), { message: 'HTTP 401' })
  await t.rejects(WsClient.connect(t, wsUrl, token('42', [], -10)), { message: 'HTTP 401' })
})
