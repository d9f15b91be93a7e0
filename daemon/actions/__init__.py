"""actions: the stage that changes the cluster.

Given a ``RollbackRequest`` from ``incidents``, roll Deployments back exactly as
``kubectl rollout undo`` does (``undo``), wait like ``kubectl rollout status``
(``status``), check the result (``verify``), with the safety rails of
``safety`` and the crash-safe intents of ``intents``, driven by ``executor``.
``leader`` decides which replica may act. ``kubernetes_asyncio`` is imported
only inside this package.
"""
