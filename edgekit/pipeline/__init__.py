"""What ``edgekit.api`` runs, one concept per module: :mod:`~edgekit.pipeline.options` (the typed
option groups), :mod:`~edgekit.pipeline.steps` (techniques applied in order, each graph step on the
previous one's artifact), :mod:`~edgekit.pipeline.compress` and :mod:`~edgekit.pipeline.bench`."""
