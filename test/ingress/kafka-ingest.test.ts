import t from 'tap'
import { BrokerUnavailableError } from '../../lib/broker/broker.js'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'
import type { EventDraft } from '../../lib/core/event.js'
import { type BatchContext, type BatchMessage, ingestBatch, type SettledOutcome } from '../../lib/ingress/kafka-ingest.js'

/**
 * ingestBatch alone, no Kafka and no broker: which calls it makes, in what order, and
 * which messages it reports settled (what the plugin resolves and commits) when.
 */
const order = (n: number) => ({ orderId: `o${n}`, buyerId: 'u1', status: `s${n}` })
const good = (n: number): BatchMessage => ({ offset: String(n), key: null, value: Buffer.from(JSON.stringify(order(n))) })
const poison = (n: number): BatchMessage => ({ offset: String(n), key: null, value: Buffer.from('{nope') })

function context (overrides: Partial<BatchContext> = {}) {
  const calls: EventDraft[][] = []
  const settled: Array<[string, SettledOutcome['outcome']]> = []
  const ends: string[] = []
  const dead: string[] = []
  const retries: number[] = []
  const ctx: BatchContext = {
    mapping: { lowStockThreshold: 5 },
    publish: async (drafts) => { calls.push(drafts) },
    deadLetter: async (message) => { dead.push(message.offset) },
    sleep: async () => true,
    onRetry: (_err, attempt) => { retries.push(attempt) },
    running: () => true,
    settled: (message, outcome, last) => {
      settled.push([message.offset, outcome.outcome])
      if (last) ends.push(message.offset)
    },
    maxEventsPerPublish: 6, // two order messages (3 events each) a call
    ...overrides
  }
  return { ctx, calls, settled, dead, retries, ends }
}

const statuses = (calls: EventDraft[][]) => calls.map((drafts) => [...new Set(drafts.map((d) => d.payload.status))])

t.test('consecutive good messages go in calls of at most maxEventsPerPublish events, in order; poison splits them', async (t) => {
  const { ctx, calls, settled, dead, ends } = context()
  const batch = { topic: 'p.order.updated', partition: 1, messages: [good(0), good(1), good(2), poison(3), good(4)] }
  t.equal(await ingestBatch('order.updated', batch, ctx), 'done')
  t.same(statuses(calls), [['s0', 's1'], ['s2'], ['s4']], 'a message\'s events never straddle two calls')
  t.same(dead, ['3'])
  t.same(settled, [['0', 'delivered'], ['1', 'delivered'], ['2', 'delivered'], ['3', 'dlq'], ['4', 'delivered']], 'settled in offset order')
  t.same(ends, ['1', '2', '3', '4'], 'the last message of each call (and each dead letter) is marked last: what the plugin resolves')
})

t.test('a refused call is retried in place: nothing after it is published before it, nothing before it again', async (t) => {
  let refusals = 2
  const { ctx, calls, settled, retries } = context({
    publish: async (drafts) => {
      if (drafts[0].payload.status === 's2' && refusals-- > 0) throw new BrokerUnavailableError('down')
      calls.push(drafts)
    }
  })
  const batch = { topic: 'p.order.updated', partition: 0, messages: [0, 1, 2, 3, 4, 5].map(good) }
  t.equal(await ingestBatch('order.updated', batch, ctx), 'done')
  t.same(statuses(calls), [['s0', 's1'], ['s2', 's3'], ['s4', 's5']], 'each call taken once, in order')
  t.same(retries, [1, 2])
  t.same(settled.map(([offset]) => offset), ['0', '1', '2', '3', '4', '5'])
})

t.test('stopped during a retry: only what was handed over is settled', async (t) => {
  const { ctx, calls, settled } = context({
    publish: async (drafts) => {
      if (drafts[0].payload.status === 's2') throw new BrokerUnavailableError('down')
      calls.push(drafts)
    },
    sleep: async () => false
  })
  const batch = { topic: 'p.order.updated', partition: 0, messages: [0, 1, 2, 3, 4].map(good) }
  t.equal(await ingestBatch('order.updated', batch, ctx), 'stopped')
  t.same(statuses(calls), [['s0', 's1']])
  t.same(settled.map(([offset]) => offset), ['0', '1'], 'the refused message and those after it stay unsettled')
})

t.test('a poison message waits for its DLQ send (retried alone); later good messages are not held back by it', async (t) => {
  let dlqFailures = 1
  const happened: string[] = []
  const { ctx, settled, retries } = context({
    publish: async (drafts) => { happened.push(`publish ${drafts[0].payload.status}`) },
    deadLetter: async (message) => {
      happened.push(`dlq ${message.offset}`)
      if (dlqFailures-- > 0) throw new Error('kafka down')
    }
  })
  const batch = { topic: 'p.order.updated', partition: 0, messages: [good(0), poison(1), good(2)] }
  t.equal(await ingestBatch('order.updated', batch, ctx), 'done')
  t.same(happened, ['dlq 1', 'publish s0', 'dlq 1', 'publish s2'], 'sent at once, retried in its turn')
  t.same(retries, [1])
  t.same(settled, [['0', 'delivered'], ['1', 'dlq'], ['2', 'delivered']])
})

t.test('nothing is started once the consumer stops', async (t) => {
  let running = true
  const { ctx, calls, settled } = context({
    publish: async (drafts) => { calls.push(drafts); running = false },
    running: () => running
  })
  const batch = { topic: 'p.order.updated', partition: 0, messages: [0, 1, 2, 3].map(good) }
  t.equal(await ingestBatch('order.updated', batch, ctx), 'stopped')
  t.equal(calls.length, 1)
  t.same(settled.map(([offset]) => offset), ['0', '1'], 'the call that was taken is settled')
})

t.test('a call the broker finds past the batch\'s log end is published again, setting the mark aside, only once the group confirms the partition is ours', async (t) => {
  // A real broker holding the partition's mark at 300: another member published that far.
  const primed = async () => {
    const broker = new MemoryBroker({ deliver: () => {}, historySize: 100, historyTtlSeconds: 60 })
    t.teardown(async () => { await broker.close() })
    await broker.publish({ channel: 'order:o300', type: 'order:updated', payload: {}, origin: { source: 'p.order.updated:0', offset: 300, index: 0, logEnd: 301 } })
    return broker
  }
  // A batch fetched when the partition ended at 53 (a member paused since, or a topic created again).
  const batch = { topic: 'p.order.updated', partition: 0, messages: [51, 52].map(good), highWatermark: '53' }

  for (const answer of [false, undefined]) {
    const broker = await primed()
    let asked = 0
    const published: string[] = []
    const { ctx, settled } = context({
      publish: async (drafts) => { published.push(...(await broker.publishBatch(drafts)).filter((e) => e.replayed !== true).map((e) => e.channel)) },
      ...(answer === undefined ? {} : { confirmOwnership: async () => { asked++; return answer } })
    })
    t.equal(await ingestBatch('order.updated', batch, ctx), 'stopped', `not confirmed (${answer === undefined ? 'no way to ask' : 'the group says no'}): the batch is given up`)
    t.same(published, [], 'nothing published')
    t.same(settled, [], 'nothing settled: the partition\'s owner reads it again')
    if (answer !== undefined) t.equal(asked, 1)
  }

  const broker = await primed()
  const published: string[] = []
  let asked = 0
  const { ctx, settled } = context({
    publish: async (drafts) => { published.push(...(await broker.publishBatch(drafts)).filter((e) => e.replayed !== true).map((e) => `${e.channel}@${e.offset}`)) },
    confirmOwnership: async () => { asked++; return true }
  })
  t.equal(await ingestBatch('order.updated', batch, ctx), 'done')
  t.equal(asked, 1, 'asked once')
  const once = ['user:u1@1', 'admin@1', 'orders@1', 'user:u1@2', 'admin@2', 'orders@2']
  t.same(published, once, 'the batch published once confirmed')
  t.same(settled.map(([offset]) => offset), ['51', '52'])
  // The mark now follows the new log: the batch again publishes nothing, without asking.
  t.equal(await ingestBatch('order.updated', batch, ctx), 'done')
  t.equal(asked, 1, 'not asked again')
  t.same(published, once, 'nothing published twice')
})

t.test('each draft carries its message\'s origin, with the partition\'s high watermark when the batch has a usable one', async (t) => {
  for (const [highWatermark, logEnd] of [['12', 12], [undefined, undefined], ['-1', undefined], ['0', undefined], ['', undefined], ['x', undefined]] as const) {
    const { ctx, calls } = context()
    await ingestBatch('order.updated', { topic: 'p.order.updated', partition: 2, messages: [good(7)], highWatermark }, ctx)
    t.same(calls.flat().map((d) => d.origin), [0, 1, 2].map((index) => ({ source: 'p.order.updated:2', offset: 7, index, ...(logEnd === undefined ? {} : { logEnd }) })),
      `high watermark ${JSON.stringify(highWatermark)}`)
  }
})
