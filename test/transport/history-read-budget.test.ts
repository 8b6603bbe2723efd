import t from 'tap'
import { HistoryReadBudget, READS_AT_ONCE } from '../../lib/transport/history-read-budget.js'

// The per-user and per-instance budgets of history read from the store (lib/transport/history-read-budget.ts).
t.test('a read is admitted while budget is left, charged after it, past zero if it must; the next wait for the refill', async (t) => {
  const budget = new HistoryReadBudget(1000, 4000) // 1000 bytes/s, bursts of 4000
  t.equal(budget.admit('u:1', 0), undefined)
  budget.settle('u:1', 6500, 0) // more than was left: the account owes 2500
  t.equal(budget.admit('u:1', 0), 'user', 'nothing left')
  t.equal(budget.admit('u:1', 2500), 'user', 'owed until the refill has paid it back')
  t.equal(budget.admit('u:1', 2600), undefined, 'then admitted again')
  budget.settle('u:1', 0, 2600)
  t.equal(budget.admit('u:2', 0), undefined, 'another user has its own')
})

t.test(`at most ${READS_AT_ONCE} reads under way at once per user, whatever the bytes`, async (t) => {
  const budget = new HistoryReadBudget(1000, 1_000_000)
  for (let i = 0; i < READS_AT_ONCE; i++) t.equal(budget.admit('u:1', 0), undefined)
  t.equal(budget.admit('u:1', 0), 'user', 'one more waits for one to end')
  budget.settle('u:1', 10, 0)
  t.equal(budget.admit('u:1', 0), undefined, 'one ended: one more')
})

t.test('users with a full budget and nothing under way are forgotten', async (t) => {
  const budget = new HistoryReadBudget(1_000_000, 1000)
  t.equal(budget.admit('u:reading', 0), undefined)
  for (let i = 0; i < 1023; i++) {
    budget.admit(`u:${i}`, 0)
    budget.settle(`u:${i}`, 10, 0)
  }
  t.equal(budget.size, 1024, 'every user kept until a sweep')
  budget.admit('u:last', 1000)
  budget.settle('u:last', 10, 1000) // the 1024th settle sweeps: the others are full again by then
  t.equal(budget.size, 2, 'the one with a read under way, and the one just charged')
})

t.test('the instance\'s budget over every user: charged alike, refusing everyone once spent, each user\'s own still counted', async (t) => {
  // Users: 1000 bytes/s in bursts of 4000; the instance: 2000 bytes/s in bursts of 6000.
  const budget = new HistoryReadBudget(1000, 4000, 2000, 6000, 0)
  t.equal(budget.admit('u:1', 0), undefined)
  t.equal(budget.admit('u:2', 0), undefined)
  budget.settle('u:1', 3500, 0)
  budget.settle('u:2', 3500, 0) // the instance owes 1000: both users still have 500 of their own
  t.equal(budget.admit('u:3', 0), 'instance', 'a user with its whole budget is refused by the instance\'s')
  t.equal(budget.admit('u:1', 0), 'instance')
  t.equal(budget.admit('u:3', 499), 'instance', 'until the instance\'s refill has paid back what it owes')
  t.equal(budget.admit('u:3', 600), undefined, 'then admitted again')
  budget.settle('u:3', 100, 600)
  t.equal(budget.admit('u:1', 600), undefined, 'u:1 too, within its own 500 + 600')
  budget.settle('u:1', 2000, 600) // u:1 owes 900 of its own
  t.equal(budget.admit('u:1', 5000), undefined, 'its own refilled too')
})

t.test('a user past its own budget is refused as such, whatever the instance has left', async (t) => {
  const budget = new HistoryReadBudget(1000, 4000, 1_000_000, 1_000_000, 0)
  t.equal(budget.admit('u:1', 0), undefined)
  budget.settle('u:1', 5000, 0)
  t.equal(budget.admit('u:1', 0), 'user')
  t.equal(budget.admit('u:2', 0), undefined)
})

t.test('the instance\'s debt stops at one burst: whatever was under way, it is back within one burst\'s refill', async (t) => {
  const budget = new HistoryReadBudget(1_000_000, 1_000_000, 1000, 4000, 0)
  for (let i = 0; i < 10; i++) t.equal(budget.admit(`u:${i}`, 0), undefined)
  for (let i = 0; i < 10; i++) budget.settle(`u:${i}`, 100_000, 0) // a million bytes read while it had 4000
  t.equal(budget.admit('u:other', 3999), 'instance', 'owed a burst (4000), no more')
  t.equal(budget.admit('u:other', 4001), undefined, 'not the million: back after 4 s at 1000 bytes/s')
})

t.test('a user refused by the instance is not remembered', async (t) => {
  const budget = new HistoryReadBudget(1000, 4000, 1000, 4000, 0)
  t.equal(budget.admit('u:1', 0), undefined)
  budget.settle('u:1', 10_000, 0)
  const before = budget.size
  for (let i = 0; i < 100; i++) t.equal(budget.admit(`a:10.0.0.${i}`, 0), 'instance')
  t.equal(budget.size, before, 'no account for any of them')
})
