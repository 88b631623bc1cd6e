"""tests/test_study.py's `data.image_size` axis: the study's data and frozen feature sets (read back from the
object store), then the study itself; writes {"data_sizes": {data key: image side}, "feature_shapes":
[...], "path": the experiment}. Args: OUT.json CONFIG."""

import json
import sys
from pathlib import Path

import ray

from study.config import load_study
from study.run import init_ray, load_study_data, run_study, shared_features

out, config = sys.argv[1:]
study = load_study(config, ["search.data.image_size=[32, 64]"])
data = load_study_data(study, progress=False)  # before Ray, as run_study does
init_ray()  # joins RAY_ADDRESS's cluster
features = shared_features(study, data)
facts = {"data_sizes": {key: d.images.shape[-1] for key, d in data.items()},
         "feature_shapes": [list(ray.get(ref).shape[1:]) for ref in features.values()]}
facts["path"] = run_study(study, progress=False)  # raises TrialsErrored had a trial failed
Path(out).write_text(json.dumps(facts))
