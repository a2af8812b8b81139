"""Read scene graphs: ProVision's stage files, Visual Genome, or evol's compact graph JSON.

Every loader yields one item per image: a validated `SceneGraph`, or a `GraphError` that
names the image and says what is wrong with it. A broken image never stops the others;
only problems with the input as a whole (a stage file or folder that does not exist, a
folder with no stage files) raise, and they do so when the loader is called, before
anything is iterated.

- `provision`: ProVision's per-stage JSON files, with ``seg_masks/`` and ``depth_masks/``
  beside them (`load_provision`, `read_provision`, `ProvisionImages`);
- `visual_genome`: a Visual Genome folder (`load_visual_genome`);
- `graph_json`: one graph as a JSON dict (`graph_to_json`, `graph_from_json`);
- `common`: what they share, among it the restricted mask unpickler (`load_mask_file`):
  mask pickles run code when loaded, so they are read only from a folder the user named.
"""

from evol.provision.loaders.common import DROPPED_PREDICATES, load_mask_file
from evol.provision.loaders.graph_json import graph_from_json, graph_to_json
from evol.provision.loaders.provision import (
    BESIDE_STAGE_FILES,
    DEPTH_MASKS,
    SEG_MASKS,
    STAGES,
    ProvisionImages,
    load_provision,
    read_provision,
)
from evol.provision.loaders.visual_genome import load_visual_genome

__all__ = [
    "STAGES",
    "SEG_MASKS",
    "DEPTH_MASKS",
    "BESIDE_STAGE_FILES",
    "DROPPED_PREDICATES",
    "load_provision",
    "read_provision",
    "ProvisionImages",
    "load_visual_genome",
    "graph_to_json",
    "graph_from_json",
    "load_mask_file",
]
