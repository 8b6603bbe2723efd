import t from 'tap'
import { TurnMemo } from '../../lib/core/turn-memo.js'

const nextTurn = async () => await new Promise((resolve) => setImmediate(resolve))

t.test('what is set in a turn is found in that turn, and gone after it', async (t) => {
  const memo = new TurnMemo<string, number>()
  memo.set('a', 1)
  await Promise.resolve() // microtasks are the same turn
  t.equal(memo.get('a'), 1)
  memo.set('b', 2)
  t.equal(memo.size, 2)
  await nextTurn()
  t.equal(memo.get('a'), undefined, 'emptied at the end of the turn')
  t.equal(memo.size, 0)
  memo.set('c', 3)
  t.equal(memo.get('c'), 3, 'filled again in a later turn')
  await nextTurn()
  t.equal(memo.size, 0, 'and emptied again at its end')
})
