import t from 'tap'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'
import { brokerSuite } from '../support/broker-suite.js'

// The embedded broker passes the same suite as the Redis one (test/redis-broker.test.ts).
brokerSuite(t, (options) => new MemoryBroker(options))
