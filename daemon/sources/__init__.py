"""Sources: parse what arrives at the edge into ``daemon.model`` values.

Alertmanager webhooks, Prometheus' own alert push, the PromQL poller and Kafka
deployment events. Bad input is rejected here with an ``InputError`` naming
the field; nothing past this package sees a raw payload.
"""
