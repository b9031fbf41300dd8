"""npcnn's own description of a model inside an ONNX file (its metadata properties).

`npcnn.onnx.load` rebuilds a model from it when exporting that model gives
back the file's graph, so an npcnn file round trips with its names and nesting.
"""

from __future__ import annotations

import json

from npcnn import nn

ARCHITECTURE_KEY = "npcnn.architecture"
COUNTERS_KEY = "npcnn.num_batches_tracked"


def npcnn_metadata(model: nn.Layer) -> dict[str, str]:
    """The architecture JSON of `npcnn.save` and the batch norms' step counters."""
    from npcnn.serialization import ARCHITECTURE_KEY as NPZ_KEY
    from npcnn.serialization import model_to_arrays

    arrays = model_to_arrays(model)
    counters = {k: int(v) for k, v in arrays.items() if k.endswith("num_batches_tracked")}
    return {ARCHITECTURE_KEY: str(arrays[NPZ_KEY]), COUNTERS_KEY: json.dumps(counters)}
