import t from 'tap'
import { Subscriptions } from '../../client/subscriptions.js'
import type { RealtimeEvent } from '../../client/options.js'

// The client's bookkeeping of a channel's stream (client/subscriptions.ts): resets that lose
// nothing (the seam of a resume) against resets that do.
const ev = (offset: number): RealtimeEvent => ({ type: 't', channel: 'user:1', offset, payload: {}, ts: '' })
/** Subscriptions holding the user's own channel, as the greeting gives it. */
function own (): Subscriptions {
  const subs = new Subscriptions([])
  subs.defaults = ['user:1']
  return subs
}
const shown = (subs: Subscriptions, offsets: number[]) => offsets.flatMap((o) => subs.accept(ev(o))).map((e) => e.offset)

t.test('a reset to where the client stands, in its epoch, loses nothing: held events come again, shown ones are not shown twice', async (t) => {
  const subs = own()
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
    const subs = own()
    subs.positions.set('user:1', { offset: 5, epoch: 'e' })
    t.equal(subs.resetTo('user:1', position), false, JSON.stringify(position))
    t.same(subs.positions.get('user:1'), position)
    t.same(shown(subs, [position.offset + 1]), [position.offset + 1], 'and counts on from it')
  }
  const fresh = own()
  t.equal(fresh.resetTo('user:1', { offset: 0, epoch: 'e' }), false, 'no position known: a loss as far as the client can tell')
})

// The client's own check that offsets follow each other (Subscriptions.takeGaps): the
// gateway never skips one unannounced, so a skip from anywhere must reach the app.
t.test('an event that skips offsets is a gap, noted once with where it is; a contiguous stream is none', async (t) => {
  const subs = own()
  subs.positions.set('user:1', { offset: 2, epoch: 'e' })
  t.same(shown(subs, [3, 4]), [3, 4])
  t.same(subs.takeGaps(), [], 'each offset follows the last')
  t.same(shown(subs, [7, 8]), [7, 8], 'the events after a gap are still shown, in order')
  t.same(subs.takeGaps(), [['user:1', { after: 4, next: 7 }]])
  t.same(subs.takeGaps(), [], 'taken once')
  shown(subs, [6])
  t.same(subs.takeGaps(), [], 'an offset at or before the last is no gap (a rewind\'s replay comes after its position)')

  const fresh = own()
  t.same(shown(fresh, [40]), [40], 'no position yet: nothing to weigh the first event against')
  t.same(fresh.takeGaps(), [])
})

t.test('an event of a channel left, still on its way: not shown, no position, so a later subscribe starts afresh', async (t) => {
  const subs = new Subscriptions(['product:1'])
  subs.positions.set('product:1', { offset: 12, epoch: 'e' })
  t.same(subs.accept({ ...ev(13), channel: 'product:1' }).map((e) => e.offset), [13])
  subs.remove(['product:1'])
  t.same(subs.accept({ ...ev(14), channel: 'product:1' }), [], 'sent before the unsubscribe was taken')
  t.equal(subs.positions.get('product:1'), undefined)
  subs.add(['product:1'])
  t.equal(subs.positions.get('product:1'), undefined, 'subscribed again: from the live edge, as a new channel')
  subs.positions.set('product:1', { offset: 15, epoch: 'e' }) // its acknowledgement
  t.same(subs.accept({ ...ev(16), channel: 'product:1' }).map((e) => e.offset), [16])
  t.same(subs.takeGaps(), [], 'no gap between the two subscriptions')
})

t.test('a resume that failed releases its held events: a skip before them is a gap; one announced as lost is not', async (t) => {
  const failed = own()
  failed.positions.set('user:1', { offset: 1, epoch: 'e' })
  failed.hold(['user:1'])
  t.same(shown(failed, [5, 6]), [], 'held while the resume is under way')
  t.same(failed.releaseUnacknowledged(['user:1']).map((e) => e.offset), [5, 6], 'released as they are')
  t.same(failed.takeGaps(), [['user:1', { after: 1, next: 5 }]], '2 to 4 were never shown')

  const whole = own()
  whole.positions.set('user:1', { offset: 4, epoch: 'e' })
  whole.hold(['user:1'])
  shown(whole, [5, 6])
  t.same(whole.releaseUnacknowledged(['user:1']).map((e) => e.offset), [5, 6])
  t.same(whole.takeGaps(), [], 'what was held follows the position: no gap')

  const lost = own()
  lost.positions.set('user:1', { offset: 1, epoch: 'e' })
  lost.hold(['user:1'])
  shown(lost, [9])
  const answer = lost.acknowledged({ positions: { 'user:1': { offset: 9, epoch: 'e' } }, recovered: { 'user:1': false } }, { 'user:1': { offset: 1, epoch: 'e' } })
  t.same(answer.lost, ['user:1'], 'the acknowledgement says what was lost')
  t.same(lost.takeGaps(), [], 'so it is not a gap on top')
})
