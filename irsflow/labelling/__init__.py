"""Teacher labelling of a question set or a job's samples (seed 001): the rules, the teacher and
their fusion side by side, conflicts named; and the quality check of a set's reference answers.

    labelling.py   label items (cached, budgeted), teacher_labels.jsonl + conflicts + a report
    quality.py     flag references that break the rules or that the teacher rejects

May import: the base modules, teacher, rewards, codebook, feedback, settings, loop, training, stages, config.
Never evals, release, jobs or Prefect.
"""
