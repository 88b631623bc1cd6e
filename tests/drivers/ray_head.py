"""A local Ray for a test module's drivers to join: `ray.init(**json.loads(argv[1]))`, then its address on
stdout (RAY_ADDRESS=...), then held until stdin closes (tests/study_helpers.ray_head)."""

import json
import sys

import ray

ray.init(**json.loads(sys.argv[1]), include_dashboard=False, logging_level="ERROR")
print(f"RAY_ADDRESS={ray.get_runtime_context().gcs_address}", flush=True)
sys.stdin.read()
ray.shutdown()
