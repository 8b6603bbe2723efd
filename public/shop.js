// The storefront demo: one product page as a shopper sees it, on the gateway's browser
// client. Stock and price come from the product channel with `rewind: 1` (the demo shop's
// events carry the product's whole state), filled in from its recent history when the latest
// event carries only part of it (a stock-only inventory update, say); the viewer count from
// presence, the shopper's own order updates from user:<id>, and the header shows the connection.
import { connect } from '/client.js'
import { money } from '/js/format.js'
import { createToasts } from '/js/toasts.js'

const TOKEN_KEY = 'realtime-gateway.shopper-token'
const DEFAULT_PRODUCT = 'p-104'
const LOW_STOCK = 5
/** Events of the product channel read back when the latest does not carry all of its state (the demo keeps 20). */
const HISTORY_READ = 20
const STATUS_WORDS = {
  created: 'Order placed', paid: 'Payment received', shipped: 'On its way', delivered: 'Delivered', cancelled: 'Cancelled'
}
const TRANSPORT_NAMES = { ws: 'WebSocket', sse: 'SSE' }

const $ = (id) => document.getElementById(id)
const toast = createToasts($('toasts'))

/** `?token=` wins over the stored one and leaves the address bar; `?product=` stays. */
function takeToken () {
  const url = new URL(location.href)
  const fromUrl = url.searchParams.get('token')
  if (fromUrl !== null && fromUrl !== '') {
    localStorage.setItem(TOKEN_KEY, fromUrl)
    url.searchParams.delete('token')
    history.replaceState(null, '', url.pathname + url.search + url.hash)
  }
  return localStorage.getItem(TOKEN_KEY) ?? undefined
}

const productId = new URL(location.href).searchParams.get('product') || DEFAULT_PRODUCT
const channel = `product:${productId}`
const product = { productId }

function renderProduct () {
  $('product').dataset.productId = productId
  const name = product.name ?? product.productName
  if (name !== undefined) {
    $('product-name').textContent = name
    document.title = `${name} · Northwind Goods`
    $('product-initials').textContent = name.split(/\s+/).slice(0, 2).map((w) => w[0]).join('').toUpperCase()
  }
  if (product.sku !== undefined) $('product-sku').textContent = `SKU ${product.sku}`
  if (typeof product.price === 'number') {
    $('price').textContent = money(product.price, product.currency ?? 'USD')
    $('price').dataset.price = String(product.price)
  }
  if (typeof product.stock === 'number') {
    const stock = product.stock
    const el = $('stock')
    el.dataset.stock = String(stock)
    el.dataset.level = stock === 0 ? 'out' : stock <= LOW_STOCK ? 'low' : 'in'
    el.textContent = stock === 0 ? 'Out of stock' : stock <= LOW_STOCK ? `Only ${stock} left: order soon` : `In stock · ${stock} left`
    $('add-to-cart').disabled = stock === 0
  }
}

/** Any event of the product channel carries (part of) its state: merge it. */
let shownPrice
const PRODUCT_KEYS = ['name', 'productName', 'sku', 'price', 'currency', 'stock']
/** The latest value of each product field over `events` (oldest first, as history answers). */
function latestState (events) {
  const state = {}
  for (const event of events) {
    const p = event.payload ?? {}
    for (const key of PRODUCT_KEYS) if (p[key] !== undefined) state[key] = p[key]
  }
  return state
}
/** Fields the page does not know yet, from the channel's recent history (never over what it knows). */
async function fillFromHistory () {
  if (product.price !== undefined && product.stock !== undefined) return
  try {
    const { events } = await client.history(channel, { limit: HISTORY_READ })
    const state = latestState(events)
    for (const key of PRODUCT_KEYS) if (product[key] === undefined && state[key] !== undefined) product[key] = state[key]
    if (typeof product.price === 'number') shownPrice ??= product.price
    renderProduct()
  } catch { /* a live event brings it */ }
}

function applyProduct (event) {
  const p = event.payload ?? {}
  for (const key of PRODUCT_KEYS) {
    if (p[key] !== undefined) product[key] = p[key]
  }
  if (typeof p.price === 'number') {
    if (shownPrice !== undefined && p.price !== shownPrice) {
      toast({ title: p.price < shownPrice ? 'Price drop' : 'Price changed', body: `Now ${money(p.price, p.currency ?? 'USD')}`, kind: 'info' })
    }
    shownPrice = p.price
  }
  renderProduct()
}

function renderViewers ({ connections }) {
  const el = $('viewers')
  el.dataset.count = String(connections)
  const others = Math.max(0, connections - 1)
  $('viewers-text').textContent = others === 0
    ? 'You are the only one looking at this right now'
    : `${connections} people are looking at this right now`
}

// Your orders: one row per order, its latest status (by the user channel's offset, as the
// history read at open and the live events may interleave).
const orders = new Map()
function applyOrder (event, { quiet = false } = {}) {
  const p = event.payload ?? {}
  if (p.orderId === undefined) return
  const status = event.type === 'order:cancelled' ? 'cancelled' : event.type === 'order:created' ? 'created' : p.status
  const id = String(p.orderId)
  let row = orders.get(id)
  if (row !== undefined && Number(row.dataset.offset) >= event.offset) return

  if (row === undefined) {
    row = document.createElement('li')
    row.className = 'order'
    row.dataset.orderId = id
    row.append(Object.assign(document.createElement('span'), { className: 'order-id', textContent: `Order ${id}` }))
    row.append(Object.assign(document.createElement('span'), { className: 'order-status' }))
    row.append(Object.assign(document.createElement('span'), { className: 'order-total' }))
    $('orders').prepend(row)
    orders.set(id, row)
  }
  row.dataset.status = status
  row.dataset.offset = String(event.offset)
  row.querySelector('.order-status').textContent = STATUS_WORDS[status] ?? status
  if (typeof p.total === 'number') row.querySelector('.order-total').textContent = money(p.total, p.currency ?? 'USD')
  $('orders-empty').hidden = true
  if (quiet) return
  const reason = p.reason !== undefined ? ` (${p.reason})` : ''
  toast({
    title: `Order ${id}: ${STATUS_WORDS[status] ?? status}`,
    body: status === 'cancelled' ? `Your order was cancelled${reason}.` : status === 'shipped' ? 'Your parcel left the warehouse.' : '',
    kind: status === 'cancelled' ? 'error' : status === 'delivered' ? 'success' : 'info'
  })
}

// More products: whatever the `products` channel has told about (its recent events).
const catalog = new Map()
function applyCatalog (event) {
  const p = event.payload ?? {}
  if (p.productId === undefined || String(p.productId) === productId) return
  const id = String(p.productId)
  catalog.set(id, { ...catalog.get(id), ...p })
  const list = $('more')
  list.replaceChildren(...[...catalog.values()].slice(0, 8).map((item) => {
    const li = document.createElement('li')
    const a = document.createElement('a')
    a.href = `/shop.html?product=${encodeURIComponent(item.productId)}`
    a.textContent = item.name ?? item.productName ?? item.productId
    li.append(a)
    if (typeof item.price === 'number') li.append(Object.assign(document.createElement('span'), { className: 'more-price', textContent: money(item.price, item.currency ?? 'USD') }))
    return li
  }))
}

function setStatus (state, text) {
  $('status').dataset.state = state
  $('status-text').textContent = text
}

const token = takeToken()
$('signin').hidden = token !== undefined
const client = connect({ token, channels: [channel], rewind: 1 })
window.realtimeClient = client
client.subscribe('products', { rewind: 30 })

client.on('*', (event) => {
  if (event.channel === channel) applyProduct(event)
  else if (event.channel === 'products') applyCatalog(event)
  else if (event.channel.startsWith('user:') && event.type.startsWith('order:')) applyOrder(event)
  else if (event.type === 'notification') toast({ title: event.payload?.title ?? 'Notice', body: event.payload?.message ?? '' })
})
// The shopper's recent orders (the user channel's history), once, without notices.
let ordersLoaded = false
client.on('open', () => { void fillFromHistory() })
client.on('open', async ({ userId }) => {
  if (ordersLoaded || userId === null) return
  ordersLoaded = true
  try {
    const { events } = await client.history(`user:${userId}`)
    for (const event of events) if (event.type.startsWith('order:')) applyOrder(event, { quiet: true })
  } catch { /* the live ones still come */ }
})
client.on('presence', (counts) => { if (counts.channel === channel) renderViewers(counts) })
client.on('state', ({ state, transport }) => {
  if (state === 'open') setStatus('open', `Live · ${TRANSPORT_NAMES[transport] ?? transport}`)
  else if (state === 'connecting') setStatus('connecting', 'Connecting…')
  else if (state === 'reconnecting') setStatus('reconnecting', 'Reconnecting…')
  else setStatus('closed', 'Offline')
})
// History gone or the stream reset: read the product's latest state again.
client.on('recovery', async ({ channels }) => {
  if (!channels.includes(channel)) return
  try {
    const { events } = await client.history(channel, { limit: HISTORY_READ })
    if (events.length > 0) applyProduct({ payload: latestState(events) })
  } catch { /* the next live event brings it */ }
})
client.on('disconnected', () => toast({ title: 'Signed out', body: 'This session was ended. Reload to continue.', kind: 'error', ttlMs: 10000 }))
client.on('error', (error) => {
  if (error.code === 'unauthorized') {
    localStorage.removeItem(TOKEN_KEY)
    setStatus('closed', 'Signed out')
    $('signin').hidden = false
    client.close()
  } else if ((error.code === 'bad_request' || error.code === 'forbidden') && error.channels?.includes(channel)) {
    // A ?product= that is no channel name, or a channel refused: say so rather than wait for ever.
    toast({ title: 'This product cannot be followed', body: error.message, kind: 'error', ttlMs: 10000 })
  }
})

$('add-to-cart').addEventListener('click', () => {
  toast({ title: 'Demo shop', body: 'Orders here are simulated: yours arrive on their own, watch for their notices.', kind: 'info' })
})
renderProduct()
