"""zoo: model families behind one interface and one registry.

Importing this package registers the built-in families. Use :func:`create_model` to build one
and ``FAMILIES.names()`` to list them.
"""

# Importing the family modules registers them (each module's @family decorators run on import).
from polyculture.zoo import (  # noqa: F401
    classical,
    cnn,
    linear,
    mlp,
    pretrained,
    rnn,
    seed_cnn,
    transformer,
)
from polyculture.zoo.base import (
    FAMILIES,
    ClassicalModel,
    Family,
    Knobs,
    ModelSpec,
    ZooModel,
    count_parameters,
    create_model,
    family,
    final_layer,
    resolve_knobs,
    stable_hash,
)

__all__ = [
    "FAMILIES",
    "ClassicalModel",
    "Family",
    "Knobs",
    "ModelSpec",
    "ZooModel",
    "count_parameters",
    "create_model",
    "family",
    "final_layer",
    "resolve_knobs",
    "stable_hash",
]
