import t from 'tap'
import { GroupLiveness } from '../../lib/ingress/group-liveness.js'

t.test('ready while joined and heard from within the silence allowed; not after it, nor once left', async (t) => {
  let now = 1000
  const liveness = new GroupLiveness(10_000, 60_000, () => now)
  t.notOk(liveness.ready, 'not before joining')
  liveness.joined()
  t.ok(liveness.ready)
  now += 9_999
  t.ok(liveness.ready, 'just within')
  liveness.heard()
  now += 9_999
  t.ok(liveness.ready, 'a heartbeat moves the window')
  now += 1
  t.notOk(liveness.ready, 'ten seconds of silence: a Kafka that hangs')
  liveness.heard()
  t.ok(liveness.ready, 'and back once heard')
  liveness.left()
  t.notOk(liveness.ready, 'a crash or disconnect')
  liveness.heard()
  t.notOk(liveness.ready, 'a heartbeat is no join')
})

t.test('a rebalance is not silence: ready while rejoining, up to the rebalance timeout', async (t) => {
  let now = 0
  const liveness = new GroupLiveness(10_000, 60_000, () => now)
  liveness.joined()
  now += 3_000
  liveness.rejoining() // the coordinator answered: the group rebalances
  now += 30_000
  t.ok(liveness.ready, 'waiting for a member mid-batch, heartbeating nothing (review: 10.3 s measured)')
  liveness.joined()
  now += 9_999
  t.ok(liveness.ready, 'joined again: the silence rule again')
  now += 1
  t.notOk(liveness.ready)
  liveness.rejoining()
  now += 60_000
  t.notOk(liveness.ready, 'a rejoin past the rebalance timeout')
  liveness.rejoining()
  liveness.left()
  t.notOk(liveness.ready, 'a crash while rejoining')
})

t.test('fetches answered while heartbeats are not, for a session after the silence: in no group (kafkajs lost its member id)', async (t) => {
  let now = 0
  const liveness = new GroupLiveness(10_000, 60_000, () => now)
  t.notOk(liveness.fetched(), 'not a member yet')
  liveness.joined()
  now += 3_000
  t.notOk(liveness.fetched(), 'heard lately')
  now += 7_000
  t.notOk(liveness.fetched(), 'silent: a thaw is given a session to rejoin')
  now += 9_999
  t.notOk(liveness.fetched())
  now += 1
  t.ok(liveness.fetched(), 'fetching for a session more without a heartbeat answered')
  now += 1
  t.notOk(liveness.fetched(), 'once per such stretch')
  now += 10_000
  t.ok(liveness.fetched(), 'and again if the restart did not join')
  liveness.heard()
  now += 10_000
  t.notOk(liveness.fetched(), 'a heartbeat answered starts it over')
  now += 10_000
  t.ok(liveness.fetched())
  liveness.left()
  t.notOk(liveness.fetched(), 'not once left')
})

t.test('a fetch after a rebalance with no join since: the rejoin was given up, and the silence counts from it', async (t) => {
  let now = 0
  const liveness = new GroupLiveness(10_000, 60_000, () => now)
  liveness.joined()
  now += 2_000
  liveness.rejoining()
  now += 30_000
  t.ok(liveness.ready, 'ready while rejoining, within the rebalance timeout')
  t.notOk(liveness.fetched(), 'a fetch: the rejoin is over, with no join')
  t.notOk(liveness.ready, 'and 30 s without a heartbeat is silence')
  now += 9_999
  t.notOk(liveness.fetched())
  now += 1
  t.ok(liveness.fetched(), 'fetching for a session more: in no group')
  liveness.rejoining()
  liveness.joined()
  now += 30_000
  t.notOk(liveness.fetched(), 'a rejoin that ended in a join: silence first, as after any join')
})
