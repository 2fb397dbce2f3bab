"""Admission control: what stands between an item and the model API.

``limiter`` holds the fleet-wide request and token budgets in Redis, ``breaker`` the circuit
breaker per endpoint, and ``throttle`` puts both in front of every call (and every group of
calls) and settles them after. ``scripts`` owns the Redis client and the Lua scripts in
``lua/`` that make each step atomic; ``backoff`` says how long a failed item waits.
"""
