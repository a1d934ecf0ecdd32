// Ramp (the 10k-user simulation): VUs rise to K6_RAMP_MAX_VUS and back, on the endpoints the
// runbook names. K6_BASE_URL (default http://proxy:8080), K6_USERNAME, K6_RAMP_MAX_VUS (80),
// K6_RAMP_STEP (stage length, default 1m).
import http from 'k6/http';
import { check, sleep } from 'k6';

const BASE = __ENV.K6_BASE_URL || 'http://proxy:8080';
const USER = __ENV.K6_USERNAME || 'demo';
const MAX = Number(__ENV.K6_RAMP_MAX_VUS || 80);
const STEP = __ENV.K6_RAMP_STEP || '1m';

export const options = {
  stages: [
    { duration: STEP, target: Math.max(1, Math.round(MAX / 4)) },
    { duration: STEP, target: Math.max(1, Math.round(MAX / 2)) },
    { duration: STEP, target: MAX },
    { duration: STEP, target: 0 },
  ],
  thresholds: {
    http_req_failed: ['rate<0.02'],
    http_req_duration: ['p(95)<800', 'p(99)<2000'],
  },
};

export function setup() {
  // The stats endpoints answer 404 until the user is synced (runbook, pitfall 4).
  http.post(`${BASE}/api/sync?username=${USER}`);
}

export default function () {
  const r1 = http.get(`${BASE}/api/stats/summary?username=${USER}`, { tags: { name: 'summary' } });
  const r2 = http.get(`${BASE}/api/games?username=${USER}`, { tags: { name: 'games' } });
  check(r1, { 'summary 200': (r) => r.status === 200 });
  check(r2, { 'games 200': (r) => r.status === 200 });
  sleep(0.5);
}
