import { createRequire } from 'node:module'
import kafkajs, { type KafkaJSProtocolError } from 'kafkajs'
import t from 'tap'
import { token, WsClient } from '../support/helper.js'
import { gateway, KAFKA_BROKERS, kafkaFixture, useKafka, waitForReadiness } from '../support/kafka-fixture.js'

/**
 * A kafkajs 2.2.4 member left in no group (lib/ingress/group-liveness.ts `fetched`, plugins/kafka.ts
 * `restartOrphan`), by fault injection against the real broker rather than a frozen one:
 * the coordinator forgets the gateway's member (a LeaveGroup sent for it on its own
 * coordinator connection), its next heartbeat is answered UNKNOWN_MEMBER_ID, kafkajs clears
 * the member id and rejoins, and that JoinGroup is refused once with the retriable "the
 * coordinator is loading" (code 14, kafkajs's GROUP_LOAD_IN_PROGRESS), as after a broker
 * thawed. kafkajs gives the join up and fetches on with no member id, skipping every
 * heartbeat: without the restart readiness stays 503 for good.
 *
 * A second member joining does not get there: a rebalance keeps the member id, so the next
 * heartbeat is answered "rebalancing" and kafkajs rejoins by itself. The fault lives in this
 * process only and the broker is never stopped or frozen: the Kafka lock is shared.
 */
const require = createRequire(import.meta.url)

interface JoinGroupRequest { groupId: string, memberId?: string }
interface Coordinator {
  fetch: (...args: unknown[]) => Promise<unknown>
  joinGroup: (request: JoinGroupRequest) => Promise<{ memberId: string }>
  leaveGroup: (request: { groupId: string, memberId: string }) => Promise<unknown>
}
// kafkajs's own modules (CommonJS, no export map), the instances the gateway's kafkajs uses.
const Broker = require('kafkajs/src/broker/index.js') as { prototype: Coordinator }
const { createErrorFromCode } = require('kafkajs/src/protocol/error.js') as { createErrorFromCode: (code: number) => KafkaJSProtocolError }
const COORDINATOR_LOAD_IN_PROGRESS = 14

t.test('a member whose rejoin is refused while the coordinator loads is in no group: readiness 503, then it is started again and consumes', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t)
  const { groupId } = kafka
  const admin = new kafkajs.Kafka({ clientId: `${groupId}-admin`, brokers: KAFKA_BROKERS.split(','), logLevel: kafkajs.logLevel.NOTHING }).admin()
  await admin.connect()
  t.teardown(async () => { await admin.disconnect() })
  /** The members the coordinator has in the group. */
  const members = async (): Promise<number> => (await admin.describeGroups([groupId])).groups[0]?.members.length ?? 0

  // Fetches of every client in this process: only the gateway's consumer fetches here.
  let fetches = 0
  let fetchesAtRefusal = 0
  const brokerFetch = Broker.prototype.fetch
  Broker.prototype.fetch = async function (this: Coordinator, ...args: unknown[]) {
    fetches++
    return await brokerFetch.apply(this, args)
  }
  // Every JoinGroup of this group (the gateway's consumer is its only member) is watched; one is refused when armed.
  let coordinator: Coordinator | undefined
  let memberId: string | undefined
  let refuseNextJoin = false
  let refused: KafkaJSProtocolError | undefined
  let joinsAfter = 0
  const joinGroup = Broker.prototype.joinGroup
  Broker.prototype.joinGroup = async function (this: Coordinator, request: JoinGroupRequest) {
    if (request.groupId !== groupId) return await joinGroup.call(this, request)
    if (refuseNextJoin) {
      refuseNextJoin = false
      refused = createErrorFromCode(COORDINATOR_LOAD_IN_PROGRESS)
      fetchesAtRefusal = fetches
      throw refused
    }
    if (refused !== undefined) joinsAfter++
    const answer = await joinGroup.call(this, request)
    coordinator = this
    memberId = answer.memberId
    return answer
  }
  t.teardown(() => {
    Broker.prototype.joinGroup = joinGroup
    Broker.prototype.fetch = brokerFetch
  })

  const { url, wsUrl } = await gateway(t, kafka, { LOG_LEVEL: process.env.KAFKA_TEST_LOG ?? 'silent' })
  const buyer = await WsClient.connect(t, wsUrl, token('u21'))
  await kafka.produce('order.updated', { orderId: 'o21', buyerId: 'u21', status: 'before' }, { key: 'o21' })
  t.equal((await buyer.next((f) => f.type === 'order:updated', 15_000)).payload.status, 'before')
  if (coordinator === undefined || memberId === undefined) {
    t.fail('the gateway joined without the patched JoinGroup: not the kafkajs instance the gateway uses')
    return
  }

  // The coordinator forgets the member; the rejoin that follows is refused once.
  refuseNextJoin = true
  await coordinator.leaveGroup({ groupId, memberId })
  let since = Date.now()
  const down = await waitForReadiness(url, 503, 30_000)
  t.match(down, { status: 'not_ready', checks: { kafka: 'unavailable' }, unavailable: ['kafka'] })
  t.comment(`readiness 503 ${Date.now() - since} ms after the member was forgotten`)
  t.equal(refused?.type, 'GROUP_LOAD_IN_PROGRESS', 'the rejoin was refused: the coordinator is loading')
  t.equal(refused?.retriable, true, 'a retriable refusal')
  t.equal(joinsAfter, 0, 'and kafkajs did not try to join again')
  t.ok(fetches > fetchesAtRefusal, 'but fetches on')
  t.equal(await members(), 0, 'the group has no member while the gateway runs')

  since = Date.now()
  const up = await waitForReadiness(url, 200, 45_000)
  t.comment(`readiness 200 ${Date.now() - since} ms after 503`)
  t.match(up, { status: 'ready', checks: { kafka: 'ok' } })
  t.ok(joinsAfter >= 1, 'the consumer joined again')
  t.equal(await members(), 1, 'one member again')

  await kafka.produce('order.updated', { orderId: 'o21', buyerId: 'u21', status: 'after' }, { key: 'o21' })
  t.equal((await buyer.next((f) => f.type === 'order:updated', 30_000)).payload.status, 'after', 'consumption goes on')
  t.same(buyer.events(), [], 'nothing twice')
})
