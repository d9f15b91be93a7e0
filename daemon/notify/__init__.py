"""The last stage: tell responders, durably.

``outbox`` delivers the rows incidents wrote (retries, order, rate limits);
``pagerduty`` and ``slack`` are the notifiers it drives; ``record`` and
``slack_render`` turn an outbox payload into what people read. Notifiers never
import each other.
"""
