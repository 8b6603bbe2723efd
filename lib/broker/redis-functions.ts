import { createHash } from 'node:crypto'
import type { Cluster, Redis } from 'ioredis'
import { EPOCH_OF_EMPTY_CHANNEL, PUBLISH_BATCH_SCRIPT, READ_SCRIPT, sharded } from './redis-layout.js'
import type { RedisClient } from './redis-connection.js'

/**
 * The broker's Lua (lib/broker/redis-layout.ts) as one Redis Function library, called with
 * FCALL. A library's top-level locals live as long as the library in that server process,
 * which lets `currentBase` ask for the server's run_id (INFO server, ~7 µs) once per
 * process instead of once per script run: on a cluster a batch over many channels is a run
 * per slot, so that fixed cost was paid per event there (bench/README.md, "Where the cluster
 * path spends more").
 *
 * The library is named after a hash of its code (`rtg_<hash>`), so gateways of two versions
 * sharing a Redis (a rolling deploy) each call their own code, and loading it again is
 * harmless. FUNCTION LOAD replicates to replicas, so a promoted replica already has it; a
 * server that lost it (restarted without persistence, FUNCTION FLUSH) answers "Function not
 * found", and the call is retried once after loading it again (callFunction).
 */
export interface FunctionLibrary {
  readonly name: string
  /** What FUNCTION LOAD takes. */
  readonly code: string
  /** PUBLISH_BATCH_SCRIPT's function: KEYS and ARGV as the script documents them. */
  readonly publish: string
  /** READ_SCRIPT's function. */
  readonly read: string
}

/** The library of one Redis (PUBLISH) or of a Redis Cluster (SPUBLISH into the channel's shard). */
export function functionLibrary (clustered: boolean): FunctionLibrary {
  const publishBody = clustered ? sharded(PUBLISH_BATCH_SCRIPT) : PUBLISH_BATCH_SCRIPT
  // KEYS and ARGV become the functions' parameters, so the bodies read as the scripts did.
  const body = EPOCH_OF_EMPTY_CHANNEL +
    `local function publish (KEYS, ARGV)\n${publishBody}\nend\n` +
    `local function read (KEYS, ARGV)\n${READ_SCRIPT}\nend\n`
  const name = `rtg_${createHash('sha1').update(body).digest('hex').slice(0, 16)}`
  const code = `#!lua name=${name}\n${body}` +
    `redis.register_function('${name}_publish', publish)\n` +
    `redis.register_function('${name}_read', read)\n`
  return { name, code, publish: `${name}_publish`, read: `${name}_read` }
}

/** True for the error of an FCALL whose library the server does not hold. */
export const isFunctionMissing = (err: unknown): boolean => err instanceof Error && err.message.includes('Function not found')

/** Loads the library into one server (a master: replicas get it through replication). */
export async function loadLibrary (node: Redis, library: FunctionLibrary): Promise<void> {
  await node.function('LOAD', 'REPLACE', library.code)
}

/** Loads the library into every master of a cluster, or into the one Redis. */
export async function loadEverywhere (client: RedisClient, library: FunctionLibrary): Promise<void> {
  const nodes = 'nodes' in client ? (client as Cluster).nodes('master') : [client as Redis]
  await Promise.all(nodes.map(async (node) => { await loadLibrary(node, library) }))
}

/**
 * FCALL `fn` with `keys` and `args`; if the server lost the library, load it and call once
 * more. (The retry may run after a call made later by this process: only a server that just
 * lost its functions, and so most likely its data, which starts new epochs anyway, sees it.)
 */
export async function callFunction<T> (client: RedisClient, library: FunctionLibrary, fn: string,
  keys: readonly string[], args: ReadonlyArray<string | number>): Promise<T> {
  try {
    return await client.fcall(fn, keys.length, ...keys, ...args) as T
  } catch (err) {
    if (!isFunctionMissing(err)) throw err
    await loadEverywhere(client, library)
    return await client.fcall(fn, keys.length, ...keys, ...args) as T
  }
}
