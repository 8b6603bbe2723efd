import fp from 'fastify-plugin'
import fastifyMetricsModule from 'fastify-metrics'
import client from 'prom-client'
import { createGatewayMetrics, type GatewayMetrics } from '../lib/ops/metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    gatewayMetrics: GatewayMetrics
    metricsRegistry: client.Registry
  }
}

// fastify-metrics is CommonJS with its plugin on `exports.default`.
const fastifyMetrics = fastifyMetricsModule.default

/** Prometheus at GET /metrics: process, HTTP routes and the gateway's own metrics. */
export default fp(async (app) => {
  const registry = new client.Registry()
  await app.register(fastifyMetrics, {
    endpoint: '/metrics',
    defaultMetrics: { enabled: true, register: registry },
    routeMetrics: {
      enabled: true,
      registeredRoutesOnly: true,
      routeBlacklist: ['/metrics', '/health/live'],
      overrides: { histogram: { registers: [registry] }, summary: { registers: [registry] } }
    }
  })
  app.decorate('metricsRegistry', registry)
  app.decorate('gatewayMetrics', createGatewayMetrics(registry))
}, { name: 'metrics', dependencies: ['config'] })
