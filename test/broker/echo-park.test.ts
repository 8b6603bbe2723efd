import t from 'tap'
import { EchoPark } from '../../lib/broker/echo-park.js'

// Pub/sub copies wait while an own publish to their channel is in flight, and come back in
// arrival order at its settle: never reordered, never held past a settle, never lost.
t.test('entries of a channel with a publish in flight wait for its settle, in arrival order', async (t) => {
  const released: Array<[string, string]> = []
  const park = new EchoPark((channel, entry) => released.push([channel, entry]))
  t.notOk(park.park('a', 'e1'), 'nothing in flight: taken at once')
  park.expect(['a'])
  t.ok(park.park('a', 'e2'))
  t.ok(park.park('a', 'e3'))
  t.notOk(park.park('b', 'x1'), 'another channel is not held back')
  t.equal(park.size, 2)
  park.settle(['a'])
  t.same(released, [['a', 'e2'], ['a', 'e3']], 'handed back in arrival order')
  t.equal(park.size, 0)
  t.notOk(park.park('a', 'e4'), 'settled: taken at once again')
})

t.test('with two publishes in flight, each settle hands back what waited (no entry waits past one reply)', async (t) => {
  const released: string[] = []
  const park = new EchoPark((_channel, entry) => released.push(entry))
  park.expect(['hot'])
  park.expect(new Set(['hot', 'other']))
  park.park('hot', 'e1')
  park.park('other', 'o1')
  park.settle(['hot'])
  t.same(released, ['e1'], 'the first reply releases the hot channel\'s entries')
  t.ok(park.park('hot', 'e2'), 'still one publish in flight: held')
  park.settle(new Set(['hot', 'other']))
  t.same(released, ['e1', 'e2', 'o1'], 'each channel\'s entries in their own order')
  t.notOk(park.park('hot', 'e3'))
  t.notOk(park.park('other', 'o2'))
})

t.test('a failed publish settles too (the broker settles in finally): nothing stays parked', async (t) => {
  const released: string[] = []
  const park = new EchoPark((_channel, entry) => released.push(entry))
  park.expect(['c'])
  park.park('c', 'e1')
  park.settle(['c'])
  park.settle(['c']) // an extra settle does not go negative
  t.same(released, ['e1'])
  t.notOk(park.park('c', 'e2'))
})
