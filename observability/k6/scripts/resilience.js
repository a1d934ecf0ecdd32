// Resilience (the runbook's "restart the API during a k6 run"): while the origin is down,
// cached URLs keep answering 200 (stale where RFC 9111 allows it) and uncached ones get a
// fast 502/503/504 naming the request id; once it is back, traffic recovers.
// The user is synced first, as cache-hit.js does (the stats endpoints answer 404 until then:
// runbook, pitfall 4), and the cached URL is fetched once so it is stored before the run.
// K6_BASE_URL (default http://proxy:8080), K6_USERNAME (demo), K6_CACHED_PATH (cacheable,
// default /api/stats/summary?username=K6_USERNAME), K6_LIVE_PATH (not cacheable, /health),
// K6_RESILIENCE_DURATION (default 30s), K6_RESILIENCE_VUS (default 10).
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Rate, Trend } from 'k6/metrics';

const BASE = __ENV.K6_BASE_URL || 'http://proxy:8080';
const USER = __ENV.K6_USERNAME || 'demo';
const CACHED = __ENV.K6_CACHED_PATH || `/api/stats/summary?username=${encodeURIComponent(USER)}`;
const LIVE = __ENV.K6_LIVE_PATH || '/health';

const cachedOk = new Rate('cached_ok');
const failureAnswered = new Rate('failure_answered');
const failureDuration = new Trend('failure_duration', true);

export const options = {
  vus: Number(__ENV.K6_RESILIENCE_VUS || 10),
  duration: __ENV.K6_RESILIENCE_DURATION || '30s',
  thresholds: {
    // The sync and the first fetch of the cached URL, before any VU starts.
    'checks{step:setup}': ['rate==1'],
    cached_ok: ['rate==1'],
    failure_answered: ['rate==1'],
    failure_duration: ['p(99)<1000'],
  },
};

export function setup() {
  const sync = http.post(`${BASE}/api/sync?username=${encodeURIComponent(USER)}`, null, { tags: { name: 'sync' } });
  check(sync, { 'sync 2xx': (r) => r.status >= 200 && r.status < 300 }, { step: 'setup' });
  // The sync invalidated the user's cached stats: store the cached URL again before the run.
  const warm = http.get(`${BASE}${CACHED}`, { tags: { name: 'warm' } });
  check(warm, { 'cached URL 200 before the run': (r) => r.status === 200 }, { step: 'setup' });
}

export default function () {
  const cached = http.get(`${BASE}${CACHED}`, { tags: { name: 'cached' } });
  cachedOk.add(cached.status === 200);
  check(cached, { 'cached 200': (r) => r.status === 200 });

  const live = http.get(`${BASE}${LIVE}`, { tags: { name: 'live' } });
  if (live.status !== 200) {
    // An outage answer: a gateway status, quick, with the id to find it in the logs.
    failureAnswered.add([502, 503, 504].includes(live.status) && !!live.headers['X-Request-Id']);
    failureDuration.add(live.timings.duration);
  }
  sleep(0.05);
}
