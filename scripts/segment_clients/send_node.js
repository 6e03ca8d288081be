// The shop's backend with @segment/analytics-node, unmodified, pointed at the
// CRM: identify with only an email, then Checkout Started, Order Completed
// and Order Refunded as the e-commerce spec v2 documents them.
//
//   node send_node.js '<json>'
//
// The argument gives { host, writeKey, userId, email, checkoutStarted,
// orderCompleted, orderRefunded }. Prints one JSON line: every HTTP answer the
// library got (status and body, read through the `httpClient` setting, a
// fetch that records what it returns), and every error it reported (its
// `error` event, the calls' callbacks). Exits 1 when it reported any.
'use strict'

const { Analytics } = require('@segment/analytics-node')

async function main() {
  const input = JSON.parse(process.argv[2])
  const report = { library: '@segment/analytics-node', responses: [], answers: [], errors: [] }
  const recordingFetch = async (url, init) => {
    const response = await fetch(url, init)
    let body = null
    try {
      body = await response.clone().json()
    } catch (_) {
      body = null
    }
    report.answers.push({ status: response.status, body })
    return response
  }
  const analytics = new Analytics({
    writeKey: input.writeKey,
    host: input.host,
    // One batch for the four calls (they are sent on closeAndFlush).
    flushAt: 20,
    flushInterval: 60000,
    // A failure shows here within seconds instead of hours of backoff.
    maxRetries: 2,
    maxTotalBackoffDuration: 10,
    httpRequestTimeout: 10000,
    httpClient: recordingFetch,
  })
  analytics.on('http_response', (r) => report.responses.push({ url: r.url, status: r.status }))
  analytics.on('error', (e) =>
    report.errors.push(`error event: ${e && e.code} ${e && e.reason ? String(e.reason) : ''}`.trim())
  )
  const callback = (call) => (error) => {
    if (error) report.errors.push(`${call}: ${String(error && (error.reason || error))}`)
  }

  analytics.identify({ userId: input.userId, traits: { email: input.email } }, callback('identify'))
  analytics.track(
    { userId: input.userId, event: 'Checkout Started', properties: input.checkoutStarted },
    callback('Checkout Started')
  )
  analytics.track(
    { userId: input.userId, event: 'Order Completed', properties: input.orderCompleted },
    callback('Order Completed')
  )
  analytics.track(
    { userId: input.userId, event: 'Order Refunded', properties: input.orderRefunded },
    callback('Order Refunded')
  )
  await analytics.closeAndFlush({ timeout: 30000 })
  for (const r of report.responses) {
    if (r.status < 200 || r.status >= 300) report.errors.push(`HTTP ${r.status} from ${r.url}`)
  }
  if (report.responses.length === 0) report.errors.push('the library sent no request')
  process.stdout.write(JSON.stringify(report) + '\n')
  process.exit(report.errors.length ? 1 : 0)
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ library: '@segment/analytics-node', responses: [], errors: [`crashed: ${e && e.stack || e}`] }) + '\n')
  process.exit(1)
})
