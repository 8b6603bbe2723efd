import t from 'tap'
import { ReconnectPolicy } from '../../client/reconnect-policy.js'

// Which transport the client tries next, and how long it waits (client/reconnect-policy.ts).
// Each `next` is called as the client does when a connection ends: (kind, wasOpen,
// transportFailed, answered).

t.test('behind a proxy that blocks WebSocket: each SSE drop costs one refused WebSocket, then SSE at once', async (t) => {
  const policy = new ReconnectPolicy(['ws', 'sse'], { initialMs: 100, maxMs: 1000 })
  policy.opened('ws')
  // The proxy starts refusing the upgrade: a WebSocket that worked before is retried once.
  t.match(policy.next('ws', true, true), { kind: 'ws' }, 'the gateway may just be restarting')
  t.match(policy.next('ws', false, true), { kind: 'ws' }, 'retried once more')
  t.match(policy.next('ws', false, true), { kind: 'sse' }, 'then SSE')
  policy.opened('sse')
  for (let drop = 1; drop <= 3; drop++) {
    t.match(policy.next('sse', true, true), { kind: 'ws' }, `SSE drop ${drop}: WebSocket is tried first`)
    const back = policy.next('ws', false, true)
    t.same({ kind: back.kind, delayMs: back.delayMs }, { kind: 'sse', delayMs: 0 }, 'refused once: straight back to SSE')
    policy.opened('sse')
  }
})

t.test('once WebSocket gets through again, it is preferred again', async (t) => {
  const policy = new ReconnectPolicy(['ws', 'sse'])
  policy.opened('ws')
  policy.next('ws', true, true)
  policy.next('ws', false, true)
  policy.next('ws', false, true)
  policy.opened('sse')
  t.match(policy.next('sse', true, true), { kind: 'ws' })
  policy.opened('ws')
  t.match(policy.next('ws', true, true), { kind: 'ws' }, 'a WebSocket drop retries WebSocket')
  t.match(policy.next('ws', false, true), { kind: 'ws' }, 'and once more before SSE, as before the proxy')
})

t.test('while the gateway is down, the fallback to SSE is immediate once per connection, then everything backs off', async (t) => {
  const policy = new ReconnectPolicy(['ws', 'sse'], { initialMs: 100, maxMs: 1000 })
  policy.opened('sse')
  t.match(policy.next('sse', true, true), { kind: 'ws' })
  t.match(policy.next('ws', false, true), { kind: 'sse', delayMs: 0 })
  const delays: number[] = []
  let kind: 'ws' | 'sse' = 'sse'
  for (let i = 0; i < 6; i++) {
    const next = policy.next(kind, false, true)
    delays.push(next.delayMs)
    kind = next.kind
  }
  t.ok(delays.every((d) => d >= 50), `every later retry waits: ${delays.join(', ')}`)
})

t.test('a stream the client reopened was working: the backoff starts over', async (t) => {
  const reopening = new ReconnectPolicy(['sse'], { initialMs: 100, maxMs: 100_000 })
  const steady = new ReconnectPolicy(['sse'], { initialMs: 100, maxMs: 100_000 })
  for (const policy of [reopening, steady]) {
    for (let i = 0; i < 5; i++) policy.next('sse', false, true)
    policy.opened('sse')
  }
  reopening.reopened()
  reopening.opened('sse')
  steady.opened('sse')
  // A real drop within STABLE_MS of the last open.
  t.equal(reopening.next('sse', true, true).attempt, 1, 'the first retry again')
  t.equal(steady.next('sse', true, true).attempt, 6, 'without the reopen, a short-lived stream keeps doubling')
})
