import t from 'tap'
import { Subscriptions } from '../../client/subscriptions.js'
import type { RealtimeEvent } from '../../client/options.js'

// The client's bookkeeping of a channel's stream (client/subscriptions.ts): resets that lose
// nothing (the seam of a resume) against resets that do.
const ev = (offset: number): RealtimeEvent => ({ type: 't', channel: 'user:1', offset, payload: {}, ts: '' })
const shown = (subs: Subscriptions, offsets: number[]) => offsets.flatMap((o) => subs.accept(ev(o))).map((e) => e.offset)

t.test('a reset to where the client stands, in its epoch, loses nothing: held events come again, shown ones are not shown twice', async (t) => {
  const subs = new Subscriptions([])
  subs.positions.set('user:1', { offset: 1, epoch: 'e' })
  subs.hold(['user:1'])
  t.same(shown(subs, [4]), [], 'a live event during the resume is held')
  t.same(subs.acknowledged({ positions: { 'user:1': { offset: 4, epoch: 'e' } }, recovered: { 'user:1': true } }, { 'user:1': { offset: 1, epoch: 'e' } }).ready, [])
  t.equal(subs.resetTo('user:1', { offset: 1, epoch: 'e' }), true, 'the seam of the resume: nothing lost')
  t.same(shown(subs, [2, 3, 4, 5]), [2, 3, 4, 5], 'the replay then live, each once, in order')

  t.equal(subs.resetTo('user:1', { offset: 3, epoch: 'e' }), true, 'a reset to before what was shown')
  t.same(shown(subs, [4, 5, 6]), [6], 'what was shown already is not shown again')
  t.same(subs.positions.get('user:1'), { offset: 6, epoch: 'e' })
})

t.test('a reset past where the client stands, or into another epoch, is a loss: the position follows it', async (t) => {
  for (const position of [{ offset: 9, epoch: 'e' }, { offset: 0, epoch: 'other' }]) {
    const subs = new Subscriptions([])
    subs.positions.set('user:1', { offset: 5, epoch: 'e' })
    t.equal(subs.resetTo('user:1', position), false, JSON.stringify(position))
    t.same(subs.positions.get('user:1'), position)
    t.same(shown(subs, [position.offset + 1]), [position.offset + 1], 'and counts on from it')
  }
  const fresh = new Subscriptions([])
  t.equal(fresh.resetTo('user:1', { offset: 0, epoch: 'e' }), false, 'no position known: a loss as far as the client can tell')
})
