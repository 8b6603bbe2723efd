import t from 'tap'
import { HistoryReadBudget, READS_AT_ONCE } from '../../lib/transport/history-read-budget.js'

// The per-user budget of history read from the store (lib/transport/history-read-budget.ts).
t.test('a read is admitted while budget is left, charged after it, past zero if it must; the next wait for the refill', async (t) => {
  const budget = new HistoryReadBudget(1000, 4000) // 1000 bytes/s, bursts of 4000
  t.ok(budget.admit('u:1', 0))
  budget.settle('u:1', 6500, 0) // more than was left: the account owes 2500
  t.notOk(budget.admit('u:1', 0), 'nothing left')
  t.notOk(budget.admit('u:1', 2500), 'owed until the refill has paid it back')
  t.ok(budget.admit('u:1', 2600), 'then admitted again')
  budget.settle('u:1', 0, 2600)
  t.ok(budget.admit('u:2', 0), 'another user has its own')
})

t.test(`at most ${READS_AT_ONCE} reads under way at once per user, whatever the bytes`, async (t) => {
  const budget = new HistoryReadBudget(1000, 1_000_000)
  for (let i = 0; i < READS_AT_ONCE; i++) t.ok(budget.admit('u:1', 0))
  t.notOk(budget.admit('u:1', 0), 'one more waits for one to end')
  budget.settle('u:1', 10, 0)
  t.ok(budget.admit('u:1', 0), 'one ended: one more')
})

t.test('users with a full budget and nothing under way are forgotten', async (t) => {
  const budget = new HistoryReadBudget(1_000_000, 1000)
  t.ok(budget.admit('u:reading', 0))
  for (let i = 0; i < 1023; i++) {
    budget.admit(`u:${i}`, 0)
    budget.settle(`u:${i}`, 10, 0)
  }
  t.equal(budget.size, 1024, 'every user kept until a sweep')
  budget.admit('u:last', 1000)
  budget.settle('u:last', 10, 1000) // the 1024th settle sweeps: the others are full again by then
  t.equal(budget.size, 2, 'the one with a read under way, and the one just charged')
})
