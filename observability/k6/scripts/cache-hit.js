// Cache proof under k6: sync the user (which invalidates their cached stats), then the first
// response must be a MISS, later ones HITs with a growing Age and an ETag, and a conditional
// request with that ETag must get 304. Thresholds on hit ratio, errors and p95.
// K6_BASE_URL (default http://proxy:8080), K6_CACHE_PATH (/api/stats/summary), K6_USERNAME.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Rate } from 'k6/metrics';

const BASE = __ENV.K6_BASE_URL || 'http://proxy:8080';
const PATH = __ENV.K6_CACHE_PATH || '/api/stats/summary';
const USER = __ENV.K6_USERNAME || 'demo';
const URL = `${BASE}${PATH}?username=${USER}`;

const cacheHit = new Rate('cache_hit');

export const options = {
  scenarios: {
    proof: { executor: 'per-vu-iterations', vus: 1, iterations: 1, exec: 'proof' },
    load: { executor: 'constant-vus', vus: Number(__ENV.K6_CACHE_VUS || 5), duration: __ENV.K6_CACHE_DURATION || '20s', exec: 'load', startTime: '3s' },
  },
  thresholds: {
    'checks{scenario:proof}': ['rate==1'],
    cache_hit: ['rate>0.9'],
    http_req_failed: ['rate<0.01'],
    'http_req_duration{scenario:load}': ['p(95)<200'],
  },
};

export function proof() {
  const sync = http.post(`${BASE}/api/sync?username=${USER}`);
  check(sync, { 'sync 2xx': (r) => r.status >= 200 && r.status < 300 });

  const first = http.get(URL);
  check(first, {
    'first is 200': (r) => r.status === 200,
    'first is MISS': (r) => r.headers['X-Cache'] === 'MISS',
    'first has ETag': (r) => !!r.headers['Etag'],
  });
  sleep(1.2);
  const second = http.get(URL);
  const age2 = Number(second.headers['Age'] || -1);
  check(second, {
    'second is HIT': (r) => r.headers['X-Cache'] === 'HIT',
    'second has Age >= 1': () => age2 >= 1,
    'same ETag': (r) => r.headers['Etag'] === first.headers['Etag'],
  });
  sleep(1.1);
  const third = http.get(URL);
  check(third, { 'Age grows': (r) => Number(r.headers['Age'] || -1) > age2 });

  const conditional = http.get(URL, { headers: { 'If-None-Match': first.headers['Etag'] } });
  check(conditional, {
    'conditional is 304': (r) => r.status === 304,
    '304 keeps the ETag': (r) => r.headers['Etag'] === first.headers['Etag'],
  });
}

export function load() {
  const r = http.get(URL);
  cacheHit.add(r.headers['X-Cache'] === 'HIT' || r.headers['X-Cache'] === 'STALE');
  check(r, { 'load 200': (res) => res.status === 200 });
  sleep(0.05);
}
