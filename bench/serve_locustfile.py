"""Locust users of bench/serve_load.py: each posts one image to /v1/predict after another (no think time), with a
forget set drawn per request from WFK_SETS distinct single-class sets (0 = forget nothing: the plain server).

Environment: WFK_SETS (distinct forget sets), WFK_IMAGES (a JSON file of base64 PNGs), WFK_SEED.
"""

from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, constant, task

SETS = int(os.environ.get("WFK_SETS", "0"))
with open(os.environ["WFK_IMAGES"]) as f:
    IMAGES = json.load(f)


class Client(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random(int(os.environ.get("WFK_SEED", "0")) * 1000 + id(self) % 1000)

    @task
    def predict(self) -> None:
        body = {"images": [self.rng.choice(IMAGES)], "top_k": 1}
        if SETS:
            body["forget"] = [self.rng.randrange(SETS)]
        with self.client.post("/v1/predict", json=body, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
