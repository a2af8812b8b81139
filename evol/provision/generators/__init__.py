"""The programmatic generators; importing this package registers all of them."""

from evol.provision.generators import multi, single_basic, single_graph, single_spatial  # noqa: F401
