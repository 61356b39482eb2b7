"""Multi-task architectures, the vectorised training engine, the paper's experiments,
statistics and figures.

Public API::

    from benchmark import models, engine, experiments, stats
    models.names()                                   # registered architectures
    engine.train_many(keys, p, lr, model=models.ModelConfig.of("mmoe"), task=..., cfg=...)
"""
