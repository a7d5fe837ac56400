"""The sentiment model's own predict(), called in one process: the physical limit the
connector's throughput is compared with. run.py runs it pinned to the server's core and reads
the JSON it prints: tasks/s (wall) and tasks per CPU-second, in batches and in one call.

With --serve it stays up and answers `START COUNT` lines on stdin with one JSON line each (the
rate on tasks[START:START+COUNT] in batches): run.py alternates such chunks with the
connector's, so that both sides of a ratio see the same moment of a drifting machine."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from _inputs import CAPTURES, SENTIMENT, ls_requests, text_tasks


def rates(predict: Any, batches: list[list[dict[str, Any]]]) -> tuple[float, float]:
    count = sum(len(batch) for batch in batches)
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        predict(batch)
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--serve", action="store_true")
    args = parser.parse_args()

    from labelbridge.label_config import LabelConfig
    from labelbridge.loader import load_model_class
    from labelbridge.model import PredictContext
    from labelbridge.settings import Settings

    requests = ls_requests(CAPTURES)
    tasks = text_tasks(requests["predict_batch"]["tasks"][0], args.tasks)
    model = load_model_class(str(SENTIMENT))(Settings())
    model.setup()
    config = LabelConfig.parse(requests["setup"]["schema"])
    context = PredictContext(project="1", label_config=config, model_version="sentiment-v0")

    def predict(batch: list[dict[str, Any]]) -> None:
        model.predict(batch, context)

    size = args.batch_size
    batches = [tasks[i : i + size] for i in range(0, len(tasks), size)]
    predict(batches[0])  # warm
    if args.serve:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            start, count = (int(x) for x in line.split())
            chunk = tasks[start : start + count]
            wall, cpu = rates(predict, [chunk[i : i + size] for i in range(0, count, size)])
            print(json.dumps({"batch_tps": wall, "batch_cpu_tps": cpu}), flush=True)
        return
    batch_wall, batch_cpu = rates(predict, batches)
    one_wall, one_cpu = rates(predict, [tasks])
    print(
        json.dumps(
            {
                "batch_tps": batch_wall,
                "batch_cpu_tps": batch_cpu,
                "one_call_tps": one_wall,
                "one_call_cpu_tps": one_cpu,
            }
        )
    )


if __name__ == "__main__":
    main()
