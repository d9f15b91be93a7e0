"""The rules stage: rule files → validated, indexed ``RuleSet`` → decisions.

``RuleRegistry`` owns the active set and its hot reload; ``RuleSet.evaluate``
is the pure function (alert, deployment history) → decisions. See
``docs/rules.md`` for the file format.
"""

from daemon.rules.loader import RuleError, RuleLoadError
from daemon.rules.registry import ReloadResult, RuleRegistry, load_ruleset
from daemon.rules.ruleset import RuleSet

__all__ = ["ReloadResult", "RuleError", "RuleLoadError", "RuleRegistry", "RuleSet", "load_ruleset"]
