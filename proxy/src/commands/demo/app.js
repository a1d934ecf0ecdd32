// Fetches the demo user's summary through Portier and shows the headers that prove the cache.
(async function () {
  const res = await fetch('/api/stats/summary?username=demo');
  const names = ['x-cache', 'age', 'etag', 'cache-control', 'cache-status', 'server-timing'];
  const table = document.getElementById('headers');
  for (const n of names) {
    const row = table.insertRow();
    row.insertCell().textContent = n;
    row.insertCell().textContent = res.headers.get(n) ?? '(absent)';
    row.dataset.header = n;
  }
  const body = await res.json();
  document.getElementById('summary').textContent = JSON.stringify(body, null, 2).slice(0, 600);
  document.body.dataset.status = String(res.status);
})();
