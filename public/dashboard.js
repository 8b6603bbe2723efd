// The admin dashboard: the gateway's own browser client (/client.js) on the admin,
// orders and products channels, plus GET /realtime/stats polled for the counters.
import { connect } from '/client.js'
import { createAlerts } from '/js/alerts.js'
import { createRateChart } from '/js/chart.js'
import { createEventLog } from '/js/event-log.js'
import { count } from '/js/format.js'
import { createOrderBook } from '/js/orders.js'
import { createToasts } from '/js/toasts.js'

const TOKEN_KEY = 'realtime-gateway.admin-token'
const CHANNELS = ['admin', 'orders', 'products']
const STATS_EVERY_MS = 2000

const $ = (id) => document.getElementById(id)
const toast = createToasts($('toasts'))

/** `?token=` wins over the stored one; it is then dropped from the address bar. */
function takeToken () {
  const url = new URL(location.href)
  const fromUrl = url.searchParams.get('token')
  if (fromUrl !== null && fromUrl !== '') {
    localStorage.setItem(TOKEN_KEY, fromUrl)
    url.searchParams.delete('token')
    history.replaceState(null, '', url.pathname + url.search + url.hash)
  }
  return localStorage.getItem(TOKEN_KEY)
}

function showGate (message) {
  // A refused token is forgotten, so a reload asks for a new one instead of failing again.
  if (message !== undefined) localStorage.removeItem(TOKEN_KEY)
  $('dashboard').hidden = true
  $('change-token').hidden = true
  $('token-gate').hidden = false
  $('token-error').hidden = message === undefined
  $('token-error').textContent = message ?? ''
  setStatus('idle', 'Not connected')
  $('token-input').focus()
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const token = $('token-input').value.trim()
  if (token === '') return
  localStorage.setItem(TOKEN_KEY, token)
  location.reload()
})
$('change-token').addEventListener('click', () => {
  localStorage.removeItem(TOKEN_KEY)
  location.reload()
})
$('banner-close').addEventListener('click', () => { $('banner').hidden = true })

function setStatus (state, text) {
  $('status').dataset.state = state
  $('status-text').textContent = text
}

const TRANSPORT_NAMES = { ws: 'WebSocket', sse: 'SSE' }

function start (token) {
  $('token-gate').hidden = true
  $('dashboard').hidden = false
  $('change-token').hidden = false

  const orders = createOrderBook({
    list: $('orders-by-status'),
    empty: $('orders-empty'),
    total: $('kpi-orders'),
    totalSub: $('kpi-orders-sub'),
    revenue: $('kpi-revenue'),
    averageOrder: $('orders-aov'),
    cancelRate: $('orders-cancel-rate')
  })
  const alerts = createAlerts({ list: $('alerts'), empty: $('alerts-empty'), badge: $('alerts-count') })
  const log = createEventLog({ list: $('log'), empty: $('log-empty'), filter: $('log-filter'), search: $('log-search'), pause: $('log-pause') })
  const chart = createRateChart($('eps-chart'))

  // Events per second: a count per second; the counter shows the last five seconds' mean.
  let thisSecond = 0
  const lastSeconds = []
  setInterval(() => {
    chart.push(thisSecond)
    lastSeconds.push(thisSecond)
    if (lastSeconds.length > 5) lastSeconds.shift()
    thisSecond = 0
    const mean = lastSeconds.reduce((a, b) => a + b, 0) / lastSeconds.length
    $('kpi-eps').textContent = mean < 10 ? mean.toFixed(1) : count(Math.round(mean))
  }, 1000)

  const client = connect({ token, channels: CHANNELS })
  window.realtimeClient = client // for poking at from the console
  void seedLowStock(client, alerts)

  client.on('*', (event) => {
    // Order events reach both `admin` and `orders`; the `orders` copy is the one kept.
    if (event.channel === 'admin' && event.type.startsWith('admin:order:')) return
    thisSecond++
    log.add(event)
    if (event.type.startsWith('admin:order:')) orders.apply(event)
    else if (event.type === 'admin:inventory:updated') alerts.stockChanged(event)
    else if (event.type === 'admin:alert') onAlert(event)
    else if (event.type === 'notification') {
      toast({ title: event.payload?.title ?? 'Notification', body: event.payload?.message ?? '', kind: 'info' })
    }
  })

  function onAlert (event) {
    const p = event.payload ?? {}
    if (p.kind === 'low_stock') {
      alerts.raise(event)
      toast({ title: 'Low stock', body: `${p.productName ?? p.sku ?? p.productId}: ${p.stock} left (threshold ${p.threshold})`, kind: 'warning' })
    } else {
      toast({ title: 'Alert', body: JSON.stringify(p).slice(0, 160), kind: 'warning' })
    }
  }

  let lostConnection = false
  /** Why an admin or service ended this session, for the status once the client has closed. */
  let endedBecause
  // "Connection lost" only for a connection that was up: a token refused from the start says so itself.
  let wasOpen = false
  client.on('state', ({ state, transport, delayMs, attempt }) => {
    if (state === 'connecting') setStatus('connecting', 'Connecting…')
    else if (state === 'open') setStatus('open', `Live · ${TRANSPORT_NAMES[transport] ?? transport}`)
    else if (state === 'closed') setStatus('closed', endedBecause === undefined ? 'Disconnected' : `Disconnected: ${endedBecause}`)
    else if (state === 'reconnecting') {
      const wait = delayMs > 0 ? ` in ${Math.ceil(delayMs / 1000)} s` : ''
      setStatus('reconnecting', `Reconnecting${wait}${attempt > 1 ? ` (attempt ${attempt})` : ''}…`)
      if (!lostConnection && wasOpen) {
        lostConnection = true
        toast({ title: 'Connection lost', body: 'Reconnecting; missed events will be replayed.', kind: 'warning' })
      }
    }
  })
  client.on('disconnected', ({ reason, willReconnect }) => {
    // An admin or service ended this session (or revoked its token): say who and why.
    toast({ title: 'Disconnected by the gateway', body: willReconnect ? `${reason}; reconnecting with a fresh token.` : `${reason}. Reload the page with a fresh token to continue.`, kind: 'error', ttlMs: 15000 })
    if (!willReconnect) endedBecause = reason
  })
  client.on('open', ({ resumed, transport }) => {
    wasOpen = true
    if (resumed && lostConnection) toast({ title: 'Reconnected', body: `Back online over ${TRANSPORT_NAMES[transport]}; events resumed.`, kind: 'success' })
    lostConnection = false
  })
  client.on('recovery', ({ channels }) => {
    $('banner-text').textContent = `Some events on ${channels.join(', ')} could not be replayed after the reconnect (no longer in the history, or the channel's stream restarted): the figures below may be incomplete. Reload the page to start afresh.`
    $('banner').hidden = false
    toast({ title: 'Events missed', body: 'History no longer covered the gap.', kind: 'error', ttlMs: 8000 })
  })
  client.on('error', (error) => {
    if (error.code === 'unauthorized') {
      client.close()
      showGate('The gateway refused this token (invalid or expired). Paste a fresh admin token.')
    } else if (error.code === 'forbidden') {
      toast({ title: 'Not allowed', body: error.message ?? 'forbidden', kind: 'error', ttlMs: 8000 })
    }
  })

  pollStats(token, client)
}

/**
 * The low-stock panel starts from what is true now: the gateway's threshold, then the
 * stock levels in the inventory channel's history (live updates then keep it current).
 */
async function seedLowStock (client, alerts) {
  try {
    const res = await fetch('/dashboard/settings')
    if (res.ok) alerts.setThreshold((await res.json()).lowStockThreshold)
  } catch { /* the default threshold stands until an alert names it */ }
  try {
    const { events } = await client.history('inventory')
    for (const event of events) alerts.stockChanged(event)
  } catch { /* the live updates fill it in */ }
}

async function pollStats (token, client) {
  for (;;) {
    try {
      const res = await fetch('/realtime/stats', { headers: { authorization: `Bearer ${token}` } })
      if (res.status === 401 || res.status === 403) {
        client.close()
        return showGate(res.status === 401
          ? 'The gateway refused this token (invalid or expired). Paste a fresh admin token.'
          : 'This token lacks the admin role.')
      }
      if (res.ok) renderStats(await res.json())
    } catch { /* the gateway is unreachable: the status indicator already says so */ }
    await new Promise((resolve) => setTimeout(resolve, STATS_EVERY_MS))
  }
}

function renderStats (stats) {
  const byTransport = { ws: 0, sse: 0 }
  for (const node of stats.nodes ?? []) {
    byTransport.ws += node.connectionsByTransport?.ws ?? 0
    byTransport.sse += node.connectionsByTransport?.sse ?? 0
  }
  $('kpi-connections').textContent = count(stats.totalConnections)
  $('kpi-connections-sub').textContent = `${count(byTransport.ws)} WebSocket · ${count(byTransport.sse)} SSE`
  $('kpi-users').textContent = count(stats.uniqueUsers)
  const nodes = stats.nodes?.length ?? 1
  $('kpi-channels').textContent = `${count(stats.channels)} channels · ${nodes} node${nodes === 1 ? '' : 's'}`
}

const token = takeToken()
if (token === null || token === '') showGate()
else start(token)
