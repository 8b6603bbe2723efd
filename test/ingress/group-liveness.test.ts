import t from 'tap'
import { GroupLiveness } from '../../lib/ingress/group-liveness.js'

t.test('ready while joined and heard from within the silence allowed; not after it, nor once left', async (t) => {
  let now = 1000
  const liveness = new GroupLiveness(10_000, () => now)
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
