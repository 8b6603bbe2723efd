import t from 'tap'
import { UserBudget } from '../../lib/transport/user-budget.js'
import { startServer, token, WsClient } from '../support/helper.js'

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

t.test('at the defaults, one connection within the frame limit never meets the budget, even every other frame a subscribe of all the channels it may hold', async (t) => {
  const { wsUrl } = await startServer(t)
  const client = await WsClient.connect(t, wsUrl, token('busy-page'))
  // The whole frame burst (100), half of it subscribes of 127 channels new each time: 6350 channels at once.
  for (let i = 0; i < 100; i++) {
    const channels = Array.from({ length: 127 }, (_, c) => `room:p${i >> 1}-${c}`) // 127: its own channel is the 128th
    client.send({ type: i % 2 === 0 ? 'subscribe' : 'unsubscribe', id: `p${i}`, payload: { channels } })
  }
  const answers = await Promise.all(Array.from({ length: 100 }, async (_, i) => await client.next((f) => f.id === `p${i}`, 20_000)))
  t.same([...new Set(answers.map((f) => f.type))].sort(), ['subscribed', 'unsubscribed'], 'every one answered as asked, none rate_limited')
})
