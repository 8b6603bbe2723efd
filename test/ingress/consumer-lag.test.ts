import t from 'tap'
import { ConsumerLag, type LagSource, LagPoller, type PartitionEnds, type PartitionLag } from '../../lib/ingress/consumer-lag.js'

// The lag of the partitions the group gave this member (lib/ingress/consumer-lag.ts), from
// figures as Kafka's admin API would give them. The real consumer's is in test/ingress/kafka-lag.test.ts.
function source (ends: Record<string, Record<number, PartitionEnds>>, committed: Record<string, Record<number, number>> = {}): LagSource {
  return {
    ends: async (topic) => new Map(Object.entries(ends[topic] ?? {}).map(([p, e]) => [Number(p), e])),
    committed: async (topics) => new Map(topics.map((topic) => [topic, new Map(Object.entries(committed[topic] ?? {}).map(([p, o]) => [Number(p), o]))]))
  }
}

t.test('a partition\'s lag is its end less where this member stands: what it settled, else the commit, else the first retained message', async (t) => {
  const lag = new ConsumerLag()
  lag.assigned({ orders: [0, 1, 2], stock: [0] })
  lag.settled('orders', 0, '41') // next to read: 42
  const figures = source(
    { orders: { 0: { low: 0, high: 50 }, 1: { low: 0, high: 30 }, 2: { low: 10, high: 25 }, 3: { low: 0, high: 99 } }, stock: { 0: { low: 0, high: 7 } } },
    { orders: { 0: 40, 1: 30 } }
  )
  t.same(await lag.measure(figures), [
    { topic: 'orders', partition: 0, lag: 8 },
    { topic: 'orders', partition: 1, lag: 0 },
    { topic: 'orders', partition: 2, lag: 15 },
    { topic: 'stock', partition: 0, lag: 7 }
  ], 'settled beats an older commit; never committed: from the first retained; partition 3 is another member\'s')
})

t.test('a member stuck on a batch: its lag grows with what is produced behind it', async (t) => {
  const lag = new ConsumerLag()
  lag.assigned({ orders: [0] })
  lag.settled('orders', 0, 9)
  t.same(await lag.measure(source({ orders: { 0: { low: 0, high: 10 } } })), [{ topic: 'orders', partition: 0, lag: 0 }])
  t.same(await lag.measure(source({ orders: { 0: { low: 0, high: 5000 } } })), [{ topic: 'orders', partition: 0, lag: 4990 }])
  lag.settled('orders', 0, 4)
  t.same(await lag.measure(source({ orders: { 0: { low: 0, high: 10 } } })), [{ topic: 'orders', partition: 0, lag: 0 }], 'an older offset settled late does not move it back')
})

t.test('a new assignment forgets the partitions given away', async (t) => {
  const lag = new ConsumerLag()
  t.same(await lag.measure(source({})), [], 'nothing assigned: nothing read')
  lag.assigned({ orders: [0, 1] })
  lag.settled('orders', 1, 99)
  lag.assigned({ orders: [1] })
  t.same(await lag.measure(source({ orders: { 0: { low: 0, high: 100 }, 1: { low: 0, high: 100 } } }, { orders: { 1: 60 } })),
    [{ topic: 'orders', partition: 1, lag: 40 }], 'partition 1 again, from its commit: what was settled before the rebalance may be another member\'s since')
})

t.test('the poller reads only while partitions are assigned, one reading at a time, and stop waits for the one in flight', async (t) => {
  const lag = new ConsumerLag()
  let reads = 0
  let release = (): void => {}
  const slow: LagSource = {
    ends: async () => { reads++; await new Promise<void>((resolve) => { release = resolve }); return new Map([[0, { low: 0, high: 3 }]]) },
    committed: async () => new Map()
  }
  const reported: PartitionLag[][] = []
  const poller = new LagPoller(lag, slow, (lags) => reported.push(lags), (err) => { throw err }, 10)
  poller.start()
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(reads, 0, 'no partition: no reading')
  lag.assigned({ orders: [0] })
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(reads, 1, 'one reading in flight, however many ticks passed')
  const stopped = poller.stop()
  let done = false
  void stopped.then(() => { done = true })
  await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(done, false, 'stop waits for the reading in flight')
  release()
  await stopped
  t.same(reported, [], 'a reading that ends after stop is not reported')
})
