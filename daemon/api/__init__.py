"""The HTTP surface: webhooks in, incidents and approvals for people, health and metrics.

``app.build_app`` assembles the routers each stage contributes; ``auth``
checks bearer tokens and scopes; signatures of Slack and PagerDuty are
verified in their own routers over the raw body.
"""
