"""Prometheus text exposition (format 0.0.4) for the server, with no client library: request counters by
endpoint and status, a latency histogram, audio seconds in and compute seconds spent (their ratio is the
real-time factor), batch sizes and the queue depth."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.audio_seconds = 0.0
        self.compute_seconds = 0.0
        self.batches = 0
        self.batched_requests = 0
        self.rejected = 0

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(endpoint, status)] += 1
            counts = self.latency[endpoint]
            counts[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1
            self.latency_sum[endpoint] += seconds

    def batch(self, size: int, seconds: float) -> None:
        with self.lock:
            self.batches += 1
            self.batched_requests += size
            self.compute_seconds += seconds

    def reject(self) -> None:
        with self.lock:
            self.rejected += 1

    def audio(self, seconds: float) -> None:
        with self.lock:
            self.audio_seconds += seconds

    def render(self, *, queue_depth: int) -> str:
        with self.lock:
            out = [
                "# HELP gen_requests_total HTTP requests by endpoint and status code.",
                "# TYPE gen_requests_total counter",
            ]
            out += [
                f'gen_requests_total{{endpoint="{e}",status="{s}"}} {n}' for (e, s), n in sorted(self.requests.items())
            ]
            out += [
                "# HELP gen_errors_total Requests answered with a 4xx or 5xx status.",
                "# TYPE gen_errors_total counter",
                f"gen_errors_total {sum(n for (_, s), n in self.requests.items() if s >= 400)}",
                "# HELP gen_request_duration_seconds Time from request to response.",
                "# TYPE gen_request_duration_seconds histogram",
            ]
            for e, counts in sorted(self.latency.items()):
                total = 0
                for b, c in zip(BUCKETS, counts):
                    total += c
                    out.append(f'gen_request_duration_seconds_bucket{{endpoint="{e}",le="{b}"}} {total}')
                total += counts[-1]
                out += [
                    f'gen_request_duration_seconds_bucket{{endpoint="{e}",le="+Inf"}} {total}',
                    f'gen_request_duration_seconds_sum{{endpoint="{e}"}} {self.latency_sum[e]:.6f}',
                    f'gen_request_duration_seconds_count{{endpoint="{e}"}} {total}',
                ]
            rtf = self.compute_seconds / self.audio_seconds if self.audio_seconds else 0.0
            out += [
                "# HELP gen_audio_seconds_total Seconds of audio received for transcription.",
                "# TYPE gen_audio_seconds_total counter",
                f"gen_audio_seconds_total {self.audio_seconds:.3f}",
                "# HELP gen_compute_seconds_total Seconds the model spent on transcription batches.",
                "# TYPE gen_compute_seconds_total counter",
                f"gen_compute_seconds_total {self.compute_seconds:.3f}",
                "# HELP gen_real_time_factor Compute seconds per audio second so far (lower is faster).",
                "# TYPE gen_real_time_factor gauge",
                f"gen_real_time_factor {rtf:.4f}",
                "# HELP gen_batches_total Model batches run.",
                "# TYPE gen_batches_total counter",
                f"gen_batches_total {self.batches}",
                "# HELP gen_batched_requests_total Requests served through batches.",
                "# TYPE gen_batched_requests_total counter",
                f"gen_batched_requests_total {self.batched_requests}",
                "# HELP gen_rejected_total Requests refused with 503 because the queue was full.",
                "# TYPE gen_rejected_total counter",
                f"gen_rejected_total {self.rejected}",
                "# HELP gen_queue_depth Requests waiting for the model.",
                "# TYPE gen_queue_depth gauge",
                f"gen_queue_depth {queue_depth}",
            ]
        return "\n".join(out) + "\n"
