"""The codebook: reviewed human corrections kept as short rules that are put into matching prompts.

    store.py      the rule model and the versioned SQLite store (``Codebook``, ``Rule``, ``Snapshot``)
    exchange.py   export to / import from jsonl or json files
    drafts.py     draft rules from human corrections (``rule_from_correction``), stored disabled
    retrieval.py  which rules apply to a question, and how they enter the prompt
    settings.py   ``CodebookConfig``, the request's codebook block

Layer 3: imports only itself and the layers below it, base (``irsflow.errors``, ``.store``,
``.dataset``, ``.retry``, ``.models``), ``irsflow.teacher`` and ``irsflow.rewards``; never the
feedback ETL, the training loop or anything above (tests/unit/test_import_rule.py checks this).
"""
