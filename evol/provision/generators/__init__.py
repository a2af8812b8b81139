"""The programmatic generators of ProVision (arXiv 2412.07012), written anew for this project:
24 single-image and 14 multi-image generators that write factual QAs from scene graphs with
no language model, all on one template (`evol.provision.base.DrawnGenerator`). Importing
this package registers all of them."""

from evol.provision.generators import multi, single_basic, single_graph, single_spatial  # noqa: F401
