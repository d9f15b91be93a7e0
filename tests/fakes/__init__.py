"""Local servers that implement the documented behaviour of Slack and PagerDuty on loopback.

The real client libraries (slack_sdk, pagerduty) are pointed at them, so the
tests exercise status codes, bodies, rate limits and signatures end to end.
"""
