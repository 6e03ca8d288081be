// A shop's product page using @segment/analytics-next, unmodified, with the
// CRM as its CDN: `AnalyticsBrowser.load({ writeKey, cdnURL })` fetches
// `<cdnURL>/v1/projects/<writeKey>/settings` and sends where the settings'
// `Segment.io` integration (apiHost, protocol) says.
//
// The query string gives the CRM's URL (`crm`), the client write key
// (`writeKey`), the shopper (`userId`, `email`) and the visit's UTM tags.
// The outcome is left in `window.segmentResult` for scripts/segment_clients.py:
// `done`, every call with its delivery failure (if any), and every error the
// library reported (its `error` event, a failed load, a thrown call).
(function () {
  'use strict'
  var query = new URLSearchParams(window.location.search)
  var result = { done: false, calls: [], errors: [] }
  window.segmentResult = result

  function describe(error) {
    if (!error) return String(error)
    if (error instanceof Error) return error.name + ': ' + error.message
    try {
      return JSON.stringify(error)
    } catch (_) {
      return String(error)
    }
  }

  // A call's Context once the Segment.io destination has tried to deliver it.
  function record(name, ctx) {
    var failed = ctx && ctx.failedDelivery ? ctx.failedDelivery() : undefined
    var logs = ctx && ctx.logs ? ctx.logs() : []
    var errorLogs = logs
      .filter(function (l) { return l.level === 'error' })
      .map(function (l) { return l.message + ' ' + describe(l.extras && (l.extras.error || l.extras)) })
    result.calls.push({
      call: name,
      messageId: ctx && ctx.event ? ctx.event.messageId : null,
      anonymousId: ctx && ctx.event ? ctx.event.anonymousId : null,
      failedDelivery: failed ? describe(failed.reason) : null,
      errorLogs: errorLogs,
    })
    if (failed) result.errors.push(name + ': delivery failed: ' + describe(failed.reason))
    errorLogs.forEach(function (l) { result.errors.push(name + ': ' + l) })
  }

  async function run() {
    if (!window.AnalyticsNext || !window.AnalyticsNext.AnalyticsBrowser) {
      throw new Error('the analytics-next bundle did not define window.AnalyticsNext.AnalyticsBrowser')
    }
    var loaded = await window.AnalyticsNext.AnalyticsBrowser.load(
      { writeKey: query.get('writeKey'), cdnURL: query.get('crm') },
      // No local retry queue across page loads: a failure must show in this run.
      { retryQueue: false }
    )
    var analytics = loaded[0]
    analytics.on('error', function (e) {
      result.errors.push('error event: ' + (e && e.code) + ' ' + describe(e && e.reason))
    })
    result.settingsApiHost = (analytics.settings && analytics.settings.cdnSettings &&
      analytics.settings.cdnSettings.integrations && analytics.settings.cdnSettings.integrations['Segment.io'] || {}).apiHost || null

    record('page', await analytics.page('Product', 'Espresso beans', { path: '/products/espresso-beans' }))
    record('Product Viewed espresso', await analytics.track('Product Viewed', {
      product_id: 'sku-espresso',
      sku: 'sku-espresso',
      category: 'Coffee',
      name: 'Espresso beans',
      brand: 'Roastery',
      variant: '1 kg',
      price: 12.5,
      quantity: 1,
      currency: 'EUR',
      position: 1,
      url: window.location.origin + '/products/espresso-beans',
    }))
    record('Product Viewed mug', await analytics.track('Product Viewed', {
      product_id: 'sku-mug',
      sku: 'sku-mug',
      category: 'Kitchen',
      name: 'Ceramic mug',
      price: 5,
      quantity: 1,
      currency: 'EUR',
      position: 2,
      url: window.location.origin + '/products/ceramic-mug',
    }))
    record('Product Added', await analytics.track('Product Added', {
      cart_id: 'cart-browser-1',
      product_id: 'sku-espresso',
      sku: 'sku-espresso',
      category: 'Coffee',
      name: 'Espresso beans',
      brand: 'Roastery',
      variant: '1 kg',
      price: 12.5,
      quantity: 2,
      currency: 'EUR',
      position: 1,
    }))
    record('identify', await analytics.identify(query.get('userId'), { email: query.get('email') }))
    result.anonymousId = analytics.user().anonymousId()
    result.userId = analytics.user().id()
  }

  run()
    .catch(function (e) { result.errors.push('load or call failed: ' + describe(e)) })
    .then(function () {
      result.done = true
      document.getElementById('status').textContent = result.errors.length ? 'failed' : 'sent'
    })
})()
