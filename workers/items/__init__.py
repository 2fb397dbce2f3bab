"""The item lifecycle: what happens to an item after each thing learnt about it.

:mod:`workers.items.decide` is the one decision core, shared by the live workers, the Batch
API collector and the release after an infrastructure error.
"""
