"""Tenant programs used by the runtime and loader suites, as named source constants.

`basic.py` holds well-behaved workers; each `attack_*.py` holds one class of hostile program.
Nothing here is imported by the host as code: every constant is tenant source text.
"""
