"""User feedback -> training data: extract thumbs and their traces from Langfuse
(``irsflow.feedback.langfuse``), transform them into chat rows (``transform``), write the run's
files (``outputs``), and round-trip corrections through Label Studio (``label_studio``,
``label_studio_api``, ``corrections``); ``etl`` runs it all, incremental and idempotent.

May import: the base modules, teacher, rewards, codebook (corrections become draft rules). Never
the training loop, stages, config, release, jobs or Prefect."""
