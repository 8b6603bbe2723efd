import { randomUUID } from 'node:crypto'
import fp from 'fastify-plugin'
import { notCoveredBy, type Revocation, RevocationList, revokes } from '../lib/auth/revocations.js'
import { type ControlMessage, ControlUnavailableError } from '../lib/broker/control.js'
import { RevocationRelay } from '../lib/broker/revocation-relay.js'
import { CloseCode } from '../lib/core/errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Closes every connection of these users on every instance (WS 4003, SSE system:disconnect). */
    disconnectUsers(userIds: string[], reason: string): Promise<void>
    /** Keeps the revocation in the broker, and closes what it names on every instance. */
    revoke(revocation: Revocation, reason: string): Promise<void>
  }
}

/** How often revocations that have ended are dropped from the local copy. */
const PRUNE_MS = 60_000
/** Instances writing back lost revocations start within this of each other, at random. */
const WRITE_BACK_SPREAD_MS = 1000
/** Revocations written back at once (each a script call, ~90 µs of Redis). */
const WRITE_BACK_SLICE = 100
/** How long after a failed attempt revocations the broker did not take are offered to it again. */
const RELAY_RETRY_MS = 1000
/** At most one warning this often while they are still refused. */
const RELAY_WARN_MS = 30_000

/**
 * The control plane (docs/protocol.md, "Disconnect and revoke"): admins and services act
 * on live connections of every instance through the broker's control channel; this
 * instance's copy of the revocations (app.revocations, checked by every token
 * verification) is loaded at start and whenever the broker connection comes back.
 */
export default fp(async (app) => {
  const { hub, revocations, gatewayMetrics: metrics } = app
  const control = hub.broker.control
  const log = app.log.child({ component: 'control' })

  // This instance acts on its own messages before the route answers, so a request that
  // follows a 202 on this instance already sees the revocation ("from now on"); the others
  // act when the broker brings the message (within a second).
  const self = randomUUID()
  const act = (message: ControlMessage): void => {
    if (message.kind === 'disconnect') {
      const users = new Set(message.userIds)
      const closed = hub.closeWhere((identity) => identity.userId !== null && users.has(identity.userId), CloseCode.DISCONNECTED, message.reason)
      metrics.disconnects.inc({ cause: 'disconnect' }, closed)
    } else {
      revocations.apply(message.revocation)
      const closed = hub.closeWhere((identity) => revokes(message.revocation, identity), CloseCode.DISCONNECTED, message.reason)
      metrics.disconnects.inc({ cause: 'revoke' }, closed)
    }
  }
  control.onMessage((message: ControlMessage) => { if (message.from !== self) act(message) })

  /**
   * Reads the broker's revocations into this instance's copy. A merge, never a replacement:
   * revocations are only ever added (a later, weaker one lifts nothing), so what this copy
   * holds stays in force; and what the broker lacks of it is written back. A Redis restarted
   * empty had made every instance forget what it had revoked (audit: revoked tokens worked
   * again everywhere), and instances started later would never have known it.
   */
  async function reload (): Promise<void> {
    let stored: Revocation[]
    try {
      stored = await control.load()
    } catch (err) {
      log.warn({ err }, 'could not read the revocations; retried when the broker is back')
      return
    }
    // Taken after the read: revocations whose message came meanwhile were acted on already.
    const held = revocations.inForce()
    for (const revocation of stored) revocations.apply(revocation)
    closeRevokedMeanwhile(notCoveredBy(held, stored))
    if (notCoveredBy(stored, held).length === 0) return
    try {
      await writeBack(held)
    } catch (err) {
      log.warn({ err }, 'could not write back the revocations the broker lost; tried again when the broker is back')
    }
  }

  /**
   * Revocations this instance learns from the broker rather than from their message (sent
   * while its connection was down) close the connections they name, as the message would
   * have: in one pass over the connections, however many were learned.
   */
  function closeRevokedMeanwhile (learned: Revocation[]): void {
    if (learned.length === 0) return
    const missed = new RevocationList()
    for (const revocation of learned) missed.apply(revocation)
    const closed = hub.closeWhere((identity) => missed.isRevoked(identity), CloseCode.DISCONNECTED, 'token revoked')
    metrics.disconnects.inc({ cause: 'revoke' }, closed)
  }

  /**
   * Every instance finds the same loss at once: each waits a moment at random and reads
   * again, so the first one's writes spare the others theirs; then what is still missing
   * goes in slices, a bounded number of writes in flight.
   */
  async function writeBack (held: Revocation[]): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, Math.random() * WRITE_BACK_SPREAD_MS))
    const missing = notCoveredBy(await control.load(), held)
    for (let i = 0; i < missing.length; i += WRITE_BACK_SLICE) {
      await Promise.all(missing.slice(i, i + WRITE_BACK_SLICE).map(async (revocation) => { await control.store(revocation) }))
    }
    if (missing.length > 0) log.warn({ count: missing.length }, 'the broker had lost revocations this instance holds: written back')
  }
  control.onResync(() => { void reload() })
  app.addHook('onReady', reload)
  const pruner = setInterval(() => revocations.prune(), PRUNE_MS)
  pruner.unref()
  app.addHook('onClose', async () => { clearInterval(pruner) })

  // This instance acts first, then the broker carries the change to the others: when it
  // cannot (a 503), what this instance holds is still closed, and the answer says so.
  app.decorate('disconnectUsers', async (userIds: string[], reason: string) => {
    const message: ControlMessage = { kind: 'disconnect', userIds, reason, from: self }
    act(message)
    try {
      await control.send(message)
    } catch (err) {
      throw new ControlUnavailableError('the users\' connections on this instance are closed; those on other instances may not be: try again', err)
    }
  })

  /** Keeps a revocation in the broker, then tells every instance (the others act on the message). */
  const passOn = async (revocation: Revocation, reason: string): Promise<void> => {
    await control.store(revocation)
    await control.send({ kind: 'revoke', revocation, reason, from: self })
  }
  const relay = new RevocationRelay(passOn)
  let relayTimer: ReturnType<typeof setTimeout> | undefined
  let closing = false
  let relayWarnedAt = -Infinity
  const relayLater = (): void => {
    if (relayTimer !== undefined || closing) return
    relayTimer = setTimeout(() => {
      relayTimer = undefined
      relay.flush().then(
        () => log.info('revocations held while the broker was away are passed on'),
        (err: unknown) => {
          // Still refused (the broker away, or a write it will never take): said now and then, not every second.
          if (Date.now() - relayWarnedAt < RELAY_WARN_MS) return
          relayWarnedAt = Date.now()
          log.warn({ err, held: relay.size }, 'revocations enforced here are not yet passed on to the broker; still trying')
        }
      ).finally(() => { if (relay.size > 0) relayLater() })
    }, RELAY_RETRY_MS)
    relayTimer.unref()
  }
  app.addHook('onClose', async () => {
    closing = true
    clearTimeout(relayTimer)
    if (relay.size > 0) log.error({ held: relay.size }, 'shutting down with revocations the broker never took: revoke them again')
  })

  app.decorate('revoke', async (revocation: Revocation, reason: string) => {
    act({ kind: 'revoke', revocation, reason, from: self })
    metrics.revocations.inc({ kind: revocation.kind })
    try {
      await passOn(revocation, reason)
    } catch (err) {
      // A store that timed out may still land in Redis, its message never sent: the relay
      // passes it on once the broker answers (lib/broker/revocation-relay.ts).
      if (!relay.hold(revocation, reason)) {
        log.warn({ held: relay.size }, 'a revocation the broker did not take is not held to be passed on: too many already')
        throw new ControlUnavailableError('the revocation holds on this instance only: try again', err)
      }
      relayLater()
      throw new ControlUnavailableError('the revocation holds on this instance and is passed on to the others once the broker answers; retry to be sure (revoking again is harmless)', err)
    }
  })
}, { name: 'control', dependencies: ['hub', 'auth', 'metrics'] })
