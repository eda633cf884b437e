"""edgeav: fused audio+image classifiers from a GPU workstation to a field unit.

The core package (config schema, manifest, input contract, time arithmetic, errors, registries) imports no
stage and no torch. Stages are `edgeav.train`, `edgeav.export`, `edgeav.runtime`, `edgeav.devices`.
"""

__version__ = "0.1.0"
