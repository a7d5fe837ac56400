"""What the benchmark sends: Label Studio 1.23.2's own request bodies, and text tasks.

The bodies come from the shared captures of a real Label Studio (shared/protocol/); a copy is
kept in bench/fixtures/ so the benchmark runs where shared/ is absent.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CAPTURES = ROOT.parent / "shared" / "protocol" / "label-studio-1.23.2-captures.json"
FIXTURE = BENCH / "fixtures" / "ls-1.23.2-requests.json"
SENTIMENT = ROOT / "examples" / "sentiment"


def ls_requests(captures: Path) -> dict[str, Any]:
    """The bodies Label Studio 1.23.2 sent, from the shared captures (or the committed copy)."""
    if captures.exists():
        steps = {s["step"]: s for s in json.loads(captures.read_text())["steps"]}

        def body(step: str, path: str) -> Any:
            sent = steps[step]["requests_to_ml_backend"]
            return next(r["body"] for r in sent if r["path"] == path)

        found = {
            "predict": body("interactive_annotating", "/predict"),
            "predict_batch": body("retrieve_predictions", "/predict"),
            "setup": body("retrieve_predictions", "/setup"),
            "start_training": body("train", "/webhook"),
            "annotation_created": body("annotation_created", "/webhook"),
        }
        FIXTURE.parent.mkdir(exist_ok=True)
        if not FIXTURE.exists() or json.loads(FIXTURE.read_text()) != found:
            FIXTURE.write_text(json.dumps(found, indent=1) + "\n")
        return found
    return dict(json.loads(FIXTURE.read_text()))


def dumps(body: Any) -> bytes:
    """JSON as Label Studio sends it (requests' json=: the stdlib's default separators)."""
    return json.dumps(body).encode()


def text_tasks(template: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """`count` tasks shaped like Label Studio's, with the sentiment example's sentences."""
    rows = []
    for name in ("train", "holdout", "seed"):
        path = SENTIMENT / "data" / f"{name}.jsonl"
        rows += [json.loads(line)["text"] for line in path.read_text().splitlines() if line]
    tasks = []
    for index in range(count):
        task = copy.deepcopy(template)
        task["id"] = task["inner_id"] = index + 1
        task["data"] = {"text": rows[index % len(rows)]}
        tasks.append(task)
    return tasks


def train_body(requests: dict[str, Any]) -> dict[str, Any]:
    """Legacy /train as Label Studio sends it: tasks with annotations, project, config."""
    setup = requests["setup"]
    task = copy.deepcopy(requests["predict_batch"]["tasks"][0])
    annotation = requests["annotation_created"]["annotation"]
    task["annotations"] = [annotation]
    return {
        "annotations": [task],
        "project": setup["project"],
        "label_config": setup["schema"],
        "params": {"login": None, "password": None},
    }
