"""The scraper's reading of a target's /metrics: prometheus_client's parser, keys as the readers expect."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cachestorm.reports.metrics import CounterSeries

from cachestorm.scrape import Scraper, parse_prometheus

EXPOSITION = '''\
# HELP y_total a sample with a timestamp (ms)
# TYPE y_total untyped
y_total 7 1700000000000
# HELP cachestorm_requests_total requests
# TYPE cachestorm_requests_total counter
cachestorm_requests_total{route="/products/[id]",note="two words",quote="say \\"hi\\" \\\\o/"} 3.0
cachestorm_requests_created{route="/products/[id]",note="two words",quote="say \\"hi\\" \\\\o/"} 1.7e+09
# HELP cachestorm_db_query_seconds DB latency
# TYPE cachestorm_db_query_seconds histogram
cachestorm_db_query_seconds_bucket{le="0.005"} 1.0
cachestorm_db_query_seconds_bucket{le="+Inf"} 2.0
cachestorm_db_query_seconds_count 2.0
cachestorm_db_query_seconds_sum 0.5
# HELP cachestorm_cache_seconds cache latency
# TYPE cachestorm_cache_seconds histogram
cachestorm_cache_seconds_bucket{le="+Inf"} 4.0
cachestorm_cache_seconds_count 4.0
cachestorm_cache_seconds_sum 0.25
# HELP python_gc_objects_collected_total collected
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 5.0
'''


def test_timestamps_escaped_labels_and_histograms_parse_as_the_readers_expect():
    samples = parse_prometheus(EXPOSITION)
    assert samples == {
        "y_total": 7.0,  # its timestamp is not part of the key
        'cachestorm_requests_total{route="/products/[id]",note="two words",quote="say \\"hi\\" \\\\o/"}': 3.0,
        'cachestorm_db_query_seconds_bucket{le="0.005"}': 1.0,  # the one histogram whose buckets are kept
        'cachestorm_db_query_seconds_bucket{le="+Inf"}': 2.0,
        "cachestorm_db_query_seconds_count": 2.0,
        "cachestorm_db_query_seconds_sum": 0.5,
        "cachestorm_cache_seconds_count": 4.0,
        "cachestorm_cache_seconds_sum": 0.25,
    }
    series = CounterSeries.from_metrics([{"t": 0.0, "instance": "a", "metrics": {}},
                                         {"t": 1.0, "instance": "a", "metrics": samples}])
    assert series.increase("y_total") == 7.0
    assert series.increase("cachestorm_requests_total", note="two words") == 3.0
    assert series.increase("cachestorm_db_query_seconds_bucket", le="+Inf") == 2.0


class _NotMetrics(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server hook's name
        body = b"<html>a login page</html>\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


def test_a_target_answering_something_else_is_a_scrape_error_not_a_dead_scraper(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotMetrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        scraper = Scraper(tmp_path, time.time(), {"a": f"http://127.0.0.1:{server.server_port}"}, None,
                          interval_s=0.2).start()
        deadline = time.monotonic() + 15
        while scraper.samples < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        scraper.stop()
    finally:
        server.shutdown()
        server.server_close()
    assert scraper.samples >= 2 and scraper.errors >= 2  # it kept sampling
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records and all("not the Prometheus text format" in record["error"] for record in records)
