"""User feedback -> training data: extract thumbs and their traces from Langfuse
(``irsflow.feedback.langfuse``), transform them into chat rows (``transform``), write the run's
files (``outputs``), and round-trip corrections through Label Studio (``label_studio``)."""
