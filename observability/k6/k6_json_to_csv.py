#!/usr/bin/env python3
"""Turn a k6 JSON output (`k6 run --out json=FILE`) into the runbook's CSV of request
durations: one row per `http_req_duration` point, columns "time" and "value_ms".

    python3 observability/k6/k6_json_to_csv.py results/ramp-metrics.json results/ramp-http_req_duration.csv

The same as the runbook's PowerShell pipeline (Get-Content | ConvertFrom-Json | Where-Object
| Export-Csv), with only the Python standard library, on any OS.
"""
import csv
import json
import sys


def convert(src, dst, metric="http_req_duration"):
    rows = 0
    with open(src, encoding="utf-8") as fin, open(dst, "w", newline="", encoding="utf-8") as fout:
        out = csv.writer(fout, quoting=csv.QUOTE_ALL)
        out.writerow(["time", "value_ms"])
        for n, line in enumerate(fin, 1):
            line = line.strip()
            if not line:
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{src}:{n}: not a k6 JSON line: {e}")
            if item.get("type") == "Point" and item.get("metric") == metric:
                data = item.get("data", {})
                out.writerow([data.get("time"), data.get("value")])
                rows += 1
    return rows


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: k6_json_to_csv.py K6_JSON_OUTPUT CSV_FILE [METRIC]")
    n = convert(*sys.argv[1:])
    print(f"{n} rows written to {sys.argv[2]}")
