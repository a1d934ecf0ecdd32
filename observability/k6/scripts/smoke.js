// Smoke (MVP, 1-5 VUs): the proxy answers, the API answers through it, errors stay at zero.
// K6_BASE_URL (default http://proxy:8080, the proxy inside the Compose network), K6_USERNAME.
import http from 'k6/http';
import { check, sleep } from 'k6';

const BASE = __ENV.K6_BASE_URL || 'http://proxy:8080';
const USER = __ENV.K6_USERNAME || 'demo';

export const options = {
  vus: Number(__ENV.K6_SMOKE_VUS || 3),
  duration: __ENV.K6_SMOKE_DURATION || '30s',
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: ['p(95)<500'],
    checks: ['rate>0.99'],
  },
};

export default function () {
  const health = http.get(`${BASE}/health`, { tags: { name: 'health' } });
  check(health, { 'health 200': (r) => r.status === 200 });
  const summary = http.get(`${BASE}/api/stats/summary?username=${USER}`, { tags: { name: 'summary' } });
  check(summary, {
    'summary 200': (r) => r.status === 200,
    'summary has X-Cache': (r) => !!r.headers['X-Cache'],
  });
  sleep(0.2);
}
