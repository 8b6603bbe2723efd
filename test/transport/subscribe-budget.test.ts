import t from 'tap'
import { NewChannelBudget, UserBudget } from '../../lib/transport/user-budget.js'
import { SseClient, startServer, token, WsClient } from '../support/helper.js'

t.test('UserBudget: a burst, then the rate; a request larger than what is left takes nothing; full budgets are forgotten', async (t) => {
  const budget = new UserBudget(100, 200)
  t.ok(budget.take('u:1', 150, 0))
  t.notOk(budget.take('u:1', 51, 0), 'more than is left: refused')
  t.ok(budget.take('u:1', 50, 0), 'what is left: taken (the refusal took nothing)')
  t.notOk(budget.take('u:1', 1, 0))
  t.ok(budget.take('u:2', 200, 0), 'each user has its own')
  t.notOk(budget.take('u:1', 11, 100), '100 ms later: 10 back')
  t.ok(budget.take('u:1', 10, 100))
  // Full again after two seconds; the sweep (every 1024 takes) forgets them.
  t.equal(budget.size, 2)
  for (let i = 0; i < 1024; i++) budget.take(`other-${i % 2}`, 0, 5000)
  t.ok(budget.size <= 2, `full budgets forgotten: only the two used since the sweep may be left (${budget.size})`)
})

t.test('NewChannelBudget: a user\'s share is never below what one subscribe may name, nor above the whole burst', async (t) => {
  // MAX_CHANNELS_PER_CONNECTION raised to 2000 with the default burst (6400): a quarter of it
  // is 1600, and with a floor of 128 a subscribe of 2000 new channels never passed.
  const raised = new NewChannelBudget(2560, 6400, 2000)
  t.ok(raised.take('u:1', 2000, 0), 'a connection\'s every channel at once')
  t.notOk(raised.take('u:1', 1, 0), 'and then its share is spent')
  t.ok(raised.take('u:2', 2000, 0), 'another user has its own share')
  const small = new NewChannelBudget(8, 100, 128)
  t.ok(small.take('u:1', 100, 0), 'a share is at most the instance\'s whole burst')
  const quarter = new NewChannelBudget(8, 1024, 3)
  t.ok(quarter.take('u:1', 256, 0), 'a quarter of the burst when that is more')
  t.notOk(quarter.take('u:1', 1, 0))
})

t.test('one user subscribing faster than WS_SUBSCRIBES_PER_SECOND across connections gets rate_limited; other users do not', async (t) => {
  const { wsUrl } = await startServer(t, { WS_SUBSCRIBES_PER_SECOND: 100, WS_SUBSCRIBES_BURST: 300 })
  const a1 = await WsClient.connect(t, wsUrl, token('churner'))
  const a2 = await WsClient.connect(t, wsUrl, token('churner'))
  const names = (n: number, from: number) => Array.from({ length: n }, (_, i) => `room:b${from + i}`)
  t.equal((await a1.request({ type: 'subscribe', id: 1, payload: { channels: names(120, 0) } })).type, 'subscribed')
  t.equal((await a1.request({ type: 'unsubscribe', id: 2, payload: { channels: names(120, 0) } })).type, 'unsubscribed', 'unsubscribes are free')
  t.equal((await a2.request({ type: 'subscribe', id: 3, payload: { channels: names(120, 200) } })).type, 'subscribed', 'the other connection spends the same budget')
  const refused = await a1.request({ type: 'subscribe', id: 4, payload: { channels: names(120, 400) } })
  t.match(refused, { type: 'error', id: 4, payload: { code: 'rate_limited' } }, '240 of 300 spent: 120 more refused')
  const other = await WsClient.connect(t, wsUrl, token('someone-else'))
  t.equal((await other.request({ type: 'subscribe', id: 5, payload: { channels: names(120, 600) } })).type, 'subscribed', 'another user is not held back')
  t.equal((await a1.request({ type: 'subscribe', id: 6, payload: { channels: names(50, 800) } })).type, 'subscribed', 'what is left may still be spent')
  await new Promise((resolve) => setTimeout(resolve, 700))
  t.equal((await a1.request({ type: 'subscribe', id: 7, payload: { channels: names(60, 900) } })).type, 'subscribed', 'and it refills')
  t.equal((await a1.request({ type: 'system:ping', id: 8 })).type, 'system:pong', 'the connection stays open')
})

t.test('at the default WS_SUBSCRIBES_PER_SECOND, one connection within the frame limit never meets its user\'s budget, even every other frame a subscribe of all the channels it may hold', async (t) => {
  // The instance's new-channel budget lifted: 6350 new channels at once is past a user's share of it (below).
  const { wsUrl } = await startServer(t, { NEW_CHANNELS_PER_SECOND: 1e6, NEW_CHANNELS_BURST: 1e6 })
  const client = await WsClient.connect(t, wsUrl, token('busy-page'))
  // The whole frame burst (100), half of it subscribes of 127 channels new each time: 6350 channels at once.
  for (let i = 0; i < 100; i++) {
    const channels = Array.from({ length: 127 }, (_, c) => `room:p${i >> 1}-${c}`) // 127: its own channel is the 128th
    client.send({ type: i % 2 === 0 ? 'subscribe' : 'unsubscribe', id: `p${i}`, payload: { channels } })
  }
  const answers = await Promise.all(Array.from({ length: 100 }, async (_, i) => await client.next((f) => f.id === `p${i}`, 20_000)))
  t.same([...new Set(answers.map((f) => f.type))].sort(), ['subscribed', 'unsubscribed'], 'every one answered as asked, none rate_limited')
})

t.test('NEW_CHANNELS_PER_SECOND: channels the instance holds for no one yet are counted over every user; held ones, and a connection\'s own, are free; SSE too', async (t) => {
  // A burst of 5 (a connection's channels, its own one of them), one back a second: after
  // four are taken, four more are refused unless three seconds passed between the two.
  const { url, wsUrl } = await startServer(t, { NEW_CHANNELS_PER_SECOND: 1, NEW_CHANNELS_BURST: 5, MAX_CHANNELS_PER_CONNECTION: 5 })
  const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `room:${prefix}${i}`)
  const first = await WsClient.connect(t, wsUrl, token('first')) // its own user:first is free
  t.equal((await first.request({ type: 'subscribe', id: 1, payload: { channels: names('n', 4) } })).type, 'subscribed', 'four new channels: most of the burst')
  const second = await WsClient.connect(t, wsUrl, token('second'))
  t.equal((await second.request({ type: 'subscribe', id: 2, payload: { channels: names('n', 4) } })).type, 'subscribed',
    'another user joins the same four: held already, free')
  const another = await WsClient.connect(t, wsUrl, token('second'))
  const refused = await another.request({ type: 'subscribe', id: 3, payload: { channels: names('m', 4) } })
  t.match(refused, { type: 'error', id: 3, payload: { code: 'rate_limited', message: /too many new channels/ } },
    'four new ones: past the instance\'s budget, though within the user\'s')
  t.equal((await another.request({ type: 'system:ping', id: 4 })).type, 'system:pong', 'the connection stays open')

  const auth = (sub: string) => ({ authorization: `Bearer ${token(sub)}` })
  const turnedAway = await SseClient.open(t, `${url}/sse?channels=${names('m', 4).join(',')}`, auth('third'))
  t.equal(turnedAway.status, 200, 'an SSE stream of four new channels is told to come back, not refused for good')
  const [unavailable] = await turnedAway.waitFor(1, (e) => e.event === 'system:unavailable')
  t.match(unavailable.data, { status: 503, reason: /too many new channels/, retryMs: Number })
  const held = await SseClient.open(t, `${url}/sse?channels=${names('n', 4).join(',')}`, auth('third'))
  await held.waitFor(1, (e) => e.event === 'system:connected')
  t.notOk(held.events.some((e) => e.event === 'system:unavailable'), 'one of channels held already opens')
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /gateway_connections_refused_total\{transport="sse",reason="new_channels"\} 1/)
})

t.test('SSE streams: their channels count toward the user\'s subscribe budget, each once however often named', async (t) => {
  // Re-check of NEW_CHANNELS (session 30): SSE had no per-user budget, so one user's streams
  // took the whole instance's; and a name repeated in a stream's list was charged each time.
  // The user's burst of 4 (a connection's channels), one back a second; the instance's new
  // channels far from spent, so the user's budget is what refuses.
  const { url } = await startServer(t, { WS_SUBSCRIBES_PER_SECOND: 1, WS_SUBSCRIBES_BURST: 4, NEW_CHANNELS_PER_SECOND: 1, NEW_CHANNELS_BURST: 100, MAX_CHANNELS_PER_CONNECTION: 4 })
  const auth = (sub: string) => ({ authorization: `Bearer ${token(sub)}` })
  const repeated = await SseClient.open(t, `${url}/sse?channels=${Array(12).fill('room:dup').join(',')}`, auth('repeater'))
  await repeated.waitFor(1, (e) => e.event === 'system:connected')
  t.notOk(repeated.events.some((e) => e.event === 'system:unavailable'), 'one channel named twelve times costs one')
  const three = (prefix: string) => Array.from({ length: 3 }, (_, i) => `room:${prefix}-${i}`)
  const taken = await SseClient.open(t, `${url}/sse?channels=${three('a').join(',')}`, auth('streamer'))
  await taken.waitFor(1, (e) => e.event === 'system:connected')
  t.notOk(taken.events.some((e) => e.event === 'system:unavailable'), 'three channels: within the user\'s burst of 4')
  const refused = await SseClient.open(t, `${url}/sse?channels=${three('b').join(',')}`, auth('streamer'))
  const [unavailable] = await refused.waitFor(1, (e) => e.event === 'system:unavailable')
  t.match(unavailable.data, { status: 503, reason: /too many channel subscriptions/, retryMs: Number }, 'three more: past what is left of it')
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /gateway_connections_refused_total\{transport="sse",reason="subscribe_budget"\} 1/)
  const own = await SseClient.open(t, `${url}/sse`, auth('streamer'))
  await own.waitFor(1, (e) => e.event === 'system:connected')
  t.notOk(own.events.some((e) => e.event === 'system:unavailable'), 'its own channel alone is free')
})

t.test('NEW_CHANNELS: each user takes at most its share (an eighth a second, a quarter of the burst)', async (t) => {
  // Share: 1 a second, a burst of 256 (a quarter of 1024). The review (session 30): with the
  // instance's budget alone, two users churning within their own took every other user's.
  const { wsUrl } = await startServer(t, { NEW_CHANNELS_PER_SECOND: 8, NEW_CHANNELS_BURST: 1024 })
  const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `room:${prefix}${i}`)
  const [a1, a2, a3] = [await WsClient.connect(t, wsUrl, token('greedy')), await WsClient.connect(t, wsUrl, token('greedy')), await WsClient.connect(t, wsUrl, token('greedy'))]
  t.equal((await a1.request({ type: 'subscribe', id: 1, payload: { channels: names('a', 127) } })).type, 'subscribed')
  t.equal((await a2.request({ type: 'subscribe', id: 2, payload: { channels: names('b', 127) } })).type, 'subscribed', '254 of its 256')
  t.match(await a3.request({ type: 'subscribe', id: 3, payload: { channels: names('c', 10) } }),
    { type: 'error', payload: { code: 'rate_limited', message: /too many new channels/ } }, 'ten more: past its share, with the instance\'s far from spent')
  const other = await WsClient.connect(t, wsUrl, token('patient'))
  t.equal((await other.request({ type: 'subscribe', id: 4, payload: { channels: names('d', 100) } })).type, 'subscribed', 'another user has its own share')
  t.equal((await a3.request({ type: 'subscribe', id: 5, payload: { channels: names('a', 100) } })).type, 'subscribed', 'channels held already cost no share')
})

t.test('a subscribe refused for the connection\'s channel limit gives back what the budgets took', async (t) => {
  // A burst of 4 new channels; a connection may hold 3 (its own and two more).
  const { wsUrl } = await startServer(t, { NEW_CHANNELS_PER_SECOND: 1, NEW_CHANNELS_BURST: 4, MAX_CHANNELS_PER_CONNECTION: 3 })
  const client = await WsClient.connect(t, wsUrl, token('capped'))
  for (let i = 0; i < 3; i++) {
    t.match(await client.request({ type: 'subscribe', id: `over${i}`, payload: { channels: ['room:r1', 'room:r2', 'room:r3'] } }),
      { type: 'error', payload: { code: 'too_many_channels' } }, `three more at once, over the limit (${i + 1})`)
  }
  // Charged each time, the three refusals would have spent the burst of 4 twice over.
  t.equal((await client.request({ type: 'subscribe', id: 'fits', payload: { channels: ['room:r1', 'room:r2'] } })).type, 'subscribed',
    'two new channels still fit: nothing was kept for the refusals')
})
